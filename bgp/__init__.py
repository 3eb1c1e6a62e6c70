"""bgp: route distribution through ExaBGP (issue 5 builds it)."""

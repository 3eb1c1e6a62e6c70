"""Test-only harness beside the lab: TLS material, a cuttable TCP proxy, an IPAM worker."""

"""Test-only harness beside the lab: TLS material, a cuttable TCP proxy, BIRD 2 as a peer, an IPAM worker."""

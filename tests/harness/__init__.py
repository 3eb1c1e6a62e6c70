"""Test harness: real etcd servers, TLS material, a cuttable TCP proxy."""

"""ipam: Calico's block-affinity address management (issue 3 builds it)."""

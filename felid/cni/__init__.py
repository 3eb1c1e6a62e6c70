"""CNI plugins: felid-ipam (IPAM only); the felid plugin joins it in a later issue."""

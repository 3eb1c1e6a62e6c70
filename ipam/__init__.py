"""ipam: Calico's block-affinity address management, on the datastore.

``BlockAllocator`` hands out addresses for handles (this host's blocks first,
then a newly claimed block, then borrowing), every write one guarded etcd
transaction; ``view`` holds what a decision rests on; ``inventory`` reads all
IPAM state once and draws the pure reports (leaks, stray affinities, usage);
``gc`` releases leaks after a grace period; ``metrics`` exposes them.  The
records themselves (blocks, handles, affinities) live in ``datastore.models``.
"""

"""typha: one datastore watch fanned out to every felix and felid-bgp, for large clusters.

``felid-typha`` (``__main__``) follows etcd with one Syncer and serves its view over a framed
protocol (``protocol``, docs/typha-protocol.md): ``cache`` keeps the view, the encoded update
log and the shared snapshots; ``server`` the connections; ``client`` gives felix and felid-bgp
the Syncer's interface over it; ``registry`` spreads the load between typhas.
"""

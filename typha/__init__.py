"""typha: the datastore fan-out cache for large clusters.

Empty so far: felix and the bgp agent read etcd directly through
``datastore.syncer``.  The layer is reserved beside ``ipam`` (on
``datastore``, below ``felix``) so the contracts already hold for it.
"""

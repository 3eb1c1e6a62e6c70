"""felix: the per-host dataplane agent.

Syncer -> ``calc`` (the datastore as typed state, this host's desired
dataplane, pure) -> ``dataplane`` (reads the kernel back and makes the
smallest change: routes, tunnel devices, sysctls, the NAT chain, the MTU
file); ``agent`` runs the loop, ``health`` and ``metrics`` serve it.
``dataplane.netlink`` is felid's only pyroute2 user; bgp programs its
learned routes through ``dataplane.routetable``.
"""

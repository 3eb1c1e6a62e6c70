"""felid-node: one per host, as calico-node: register the node, then run felix and bgp."""

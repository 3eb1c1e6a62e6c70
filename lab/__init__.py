"""The lab: felid clusters on one machine, for the demo, the tests and the benchmarks.

Hosts are network namespaces on a bridge (``network``), etcd runs as a real
process (``etcd``), felid's agents run as real processes inside the hosts
(``agents``, ``cluster``), workloads are made by the real CNI plugins
(``workloads``), and the IPIP demo runs inside User-Mode-Linux (``uml``).
It uses every felid package; none of them uses it.
"""

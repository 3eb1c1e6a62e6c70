"""The bottom layer of felid: projectcalico.org/v3 resources stored in etcd v3.

Everything else in felid reads and writes cluster state through this package;
it imports no other felid package.
"""

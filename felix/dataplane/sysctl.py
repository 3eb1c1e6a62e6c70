"""Kernel settings through /proc/sys, for the namespace this process runs in."""

from __future__ import annotations

from pathlib import Path

PROC_SYS = Path("/proc/sys")

# Per workload interface (DESIGN.md §4): answer ARP for the pod's gateway, at once.
WORKLOAD_SETTINGS = (
    ("net/ipv4/conf/{}/proxy_arp", "1"),
    ("net/ipv4/neigh/{}/proxy_delay", "0"),
    ("net/ipv4/conf/{}/forwarding", "1"),
    ("net/ipv4/conf/{}/route_localnet", "1"),
)
HOST_SETTINGS = (("net/ipv4/ip_forward", "1"),)


def write(setting: str, value: str, root: Path = PROC_SYS) -> bool:
    """Set ``setting`` if it differs; whether it was changed."""
    path = root / setting
    if path.read_text().strip() == value:
        return False
    path.write_text(value)
    return True


def configure_workload_interface(ifname: str, root: Path = PROC_SYS) -> None:
    for template, value in WORKLOAD_SETTINGS:
        write(template.format(ifname), value, root)


def configure_host(root: Path = PROC_SYS) -> None:
    for setting, value in HOST_SETTINGS:
        write(setting, value, root)

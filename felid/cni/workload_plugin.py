"""The felid CNI plugin: a veth into the pod, an address from IPAM, a WorkloadEndpoint.

Called as ``felid`` with CNI_COMMAND set (``"type": "felid"`` in a network
config).  ADD either completes or rolls back everything it did; DEL is
idempotent and works after the pod's namespace is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from datastore.errors import AlreadyExists, InvalidName, NotFound
from datastore.etcd import EtcdKV
from datastore.keys import KeyLayout
from datastore.models import IPPool, Profile, WorkloadEndpoint, encapsulation_overhead
from datastore.models.base import label_problem, valid_name, valid_namespace
from datastore.models.ipam import pod_handle
from datastore.store import ResourceStore
from felid.cni.ipam_plugin import KVSource, requested_pools
from felid.cni.protocol import (
    DATAPLANE_FAILURE,
    INVALID_CONFIG,
    INVALID_ENVIRONMENT,
    UNKNOWN_CONTAINER,
    CNIError,
    Invocation,
    Plugin,
    datastore_config,
    node_name,
    run,
)
from felix.calc.model import DEFAULT_MTU, FELIX_PROTO, WORKLOAD_GATEWAY, Route
from felix.config import FelixSettings
from felix.dataplane import sysctl
from felix.dataplane.hostfile import read_int
from felix.dataplane.netlink import KernelError, Netlink, plumb_workload, replace_route
from ipam.allocator import BlockAllocator
from ipam.errors import NoUsablePool

HOST_MAC = "ee:ee:ee:ee:ee:ee"
MIN_MTU, MAX_MTU = 68, 65535
MTU_FILE: Path = FelixSettings.default_of("mtu_file")
# felix recognises workload interfaces by this prefix (FelixSettings.interface_prefix).
INTERFACE_PREFIX: str = FelixSettings.default_of("interface_prefix")


@dataclass(frozen=True)
class Workload:
    node: str
    namespace: str
    pod: str
    orchestrator: str
    container_id: str
    ifname: str

    @property
    def host_interface(self) -> str:
        ident = f"{self.namespace}.{self.pod}" if self.orchestrator == "k8s" else self.container_id
        return INTERFACE_PREFIX + hashlib.sha1(ident.encode()).hexdigest()[:11]

    @property
    def endpoint_name(self) -> str:
        """Calico's ``<node>-<orchestrator>-<pod>-<interface>``, each ``-`` doubled; a container ID's
        ``_`` (which names may not hold) becomes ``-`` and its capitals small letters."""
        parts = (self.node, self.orchestrator, self.pod, self.ifname)
        return "-".join(p.replace("-", "--").replace("_", "-") for p in parts).lower()


def labels_of(invocation: Invocation) -> dict[str, str]:
    """The CNI conventions' ``args.cni.labels`` (a list of ``{"key": ..., "value": ...}``), which
    become the WorkloadEndpoint's labels: what policy selectors see."""
    args = invocation.config.get("args") or {}
    cni = args.get("cni") if isinstance(args, dict) else None
    listed = cni.get("labels", []) if isinstance(cni, dict) else []
    if not isinstance(listed, list):
        raise CNIError(INVALID_CONFIG, "args.cni.labels must be a list of {key, value}")
    labels: dict[str, str] = {}
    for i, item in enumerate(listed):
        key = item.get("key") if isinstance(item, dict) else None
        value = item.get("value", "") if isinstance(item, dict) else None
        if not isinstance(key, str) or not isinstance(value, str):
            raise CNIError(INVALID_CONFIG, f"args.cni.labels[{i}]: expected {{key, value}} with text values")
        problem = label_problem(key, value)
        if problem is not None:
            raise CNIError(INVALID_CONFIG, f"args.cni.labels[{i}]: {problem}")
        labels[key] = value
    return labels


def profiles_of(invocation: Invocation) -> list[str]:
    """The network config's ``profiles`` (felid's key), by default Calico's default-allow one."""
    profiles = invocation.config.get("profiles", [Profile.DEFAULT_ALLOW])
    if not isinstance(profiles, list) or not all(isinstance(p, str) for p in profiles):
        raise CNIError(INVALID_CONFIG, "profiles must be a list of Profile names")
    for name in profiles:
        try:
            valid_name(name, "profiles")
        except InvalidName as exc:
            raise CNIError(INVALID_CONFIG, str(exc)) from None
    return profiles


def workload_of(invocation: Invocation) -> Workload:
    pod = invocation.args.get("K8S_POD_NAME")
    namespace = invocation.args.get("K8S_POD_NAMESPACE")
    k8s = bool(pod and namespace)
    if k8s and pod and namespace:
        # They become the WorkloadEndpoint's key: checked here, where a wrong one can be named.
        for check, value, what in (
            (valid_namespace, namespace, "K8S_POD_NAMESPACE"),
            (valid_name, pod, "K8S_POD_NAME"),
        ):
            try:
                check(value, f"CNI_ARGS {what}")
            except InvalidName as exc:
                raise CNIError(INVALID_ENVIRONMENT, str(exc)) from None
    return Workload(
        node=node_name(invocation),
        namespace=namespace if k8s and namespace else "default",
        pod=pod if k8s and pod else invocation.container_id,
        orchestrator="k8s" if k8s else "cni",
        container_id=invocation.container_id,
        ifname=invocation.ifname or "eth0",
    )


class Context:
    def __init__(self, invocation: Invocation, kv_for: KVSource = EtcdKV) -> None:
        config = datastore_config(invocation)
        self.layout = KeyLayout(config.etcd_prefix)
        self.kv = kv_for(config)
        self.store = ResourceStore(self.kv, self.layout)
        self.workload = workload_of(invocation)
        self.allocator = BlockAllocator(self.kv, self.layout, self.workload.node)
        self.handle = pod_handle(invocation.container_id)

    def mtu(self, invocation: Invocation) -> int:
        """The network config's ``mtu``, else the one felix wrote to the MTU file, else a guess."""
        if "mtu" in invocation.config:
            mtu = invocation.config["mtu"]
            if not isinstance(mtu, int) or isinstance(mtu, bool) or not MIN_MTU <= mtu <= MAX_MTU:
                raise CNIError(INVALID_CONFIG, f"mtu: {str(mtu)[:40]!r} is not an MTU ({MIN_MTU}..{MAX_MTU})")
            return mtu
        path = invocation.config.get("mtu_file") or MTU_FILE
        written = read_int(Path(str(path)))
        if written is not None:
            return written
        # felix has not written it yet (it does at its first sync): the pools' overhead on Ethernet's MTU.
        return DEFAULT_MTU - encapsulation_overhead(self.store.list(IPPool))


def cni_add(invocation: Invocation, kv_for: KVSource = EtcdKV) -> Mapping[str, Any]:
    if not invocation.netns:
        raise CNIError(INVALID_CONFIG, "CNI_NETNS is not set")
    labels, profiles = labels_of(invocation), profiles_of(invocation)  # refused before any change
    ctx = Context(invocation, kv_for)
    wl = ctx.workload
    undo: list[Callable[[], object]] = []
    try:
        addresses = ctx.allocator.ips_of_handle(ctx.handle)
        if not addresses:
            pools = requested_pools(invocation)
            attrs = {"namespace": wl.namespace, "pod": wl.pod, "containerID": wl.container_id}
            try:
                addresses = ctx.allocator.auto_assign(ctx.handle, attrs=attrs, pools=pools)
            except NoUsablePool as exc:
                raise CNIError(INVALID_CONFIG, str(exc)) from None
            undo.append(lambda: ctx.allocator.release_handle(ctx.handle))
        address = addresses[0]
        mtu = ctx.mtu(invocation)
        undo.append(partial(_delete_link, wl.host_interface))
        pod_mac = _plumb(wl, invocation.netns, address, mtu)
        endpoint = WorkloadEndpoint.model_validate(
            {
                "metadata": {"name": wl.endpoint_name, "namespace": wl.namespace, "labels": labels},
                "spec": {
                    "orchestrator": wl.orchestrator,
                    "node": wl.node,
                    "pod": wl.pod,
                    "containerID": wl.container_id,
                    "endpoint": wl.ifname,
                    "interfaceName": wl.host_interface,
                    "ipNetworks": [f"{a}/32" for a in addresses],
                    "mac": pod_mac,
                    "profiles": profiles,
                },
            }
        )
        try:
            ctx.store.create(endpoint)  # one round trip for a new pod
        except AlreadyExists:
            ctx.store.apply(endpoint)  # an ADD repeated for the same container
    except BaseException:
        for step in reversed(undo):
            # Roll back as much as possible; the original error is the one to report.
            with contextlib.suppress(Exception):
                step()
        raise
    return _result(invocation, wl, addresses, pod_mac)


def _plumb(wl: Workload, netns: str, address: str, mtu: int) -> str:
    try:
        pod_mac = plumb_workload(
            host_name=wl.host_interface,
            host_mac=HOST_MAC,
            mtu=mtu,
            netns_path=netns,
            ifname=wl.ifname,
            address=address,
            gateway=WORKLOAD_GATEWAY,
        )
        sysctl.configure_host()
        sysctl.configure_workload_interface(wl.host_interface)
        # The pod is reachable now, before felix has even heard of it.
        replace_route(Route(f"{address}/32", "local", ifname=wl.host_interface), FELIX_PROTO)
        return pod_mac
    except KernelError as exc:
        raise CNIError(DATAPLANE_FAILURE, str(exc)) from None


def _delete_link(name: str) -> None:
    async def delete() -> None:
        netlink = Netlink()
        try:
            await netlink.delete_link(name)
        finally:
            netlink.close()

    asyncio.run(delete())


def _result(invocation: Invocation, wl: Workload, addresses: list[str], pod_mac: str) -> dict[str, Any]:
    ips: list[dict[str, Any]] = []
    for a in addresses:
        entry: dict[str, Any] = {"address": f"{a}/32", "interface": 1}
        if invocation.version != "1.0.0":
            entry["version"] = "4"
        ips.append(entry)
    return {
        "cniVersion": invocation.version,
        "interfaces": [
            {"name": wl.host_interface, "mac": HOST_MAC},
            {"name": wl.ifname, "mac": pod_mac, "sandbox": invocation.netns},
        ],
        "ips": ips,
        "routes": [{"dst": "0.0.0.0/0", "gw": WORKLOAD_GATEWAY}],
        "dns": {},
    }


def _find_endpoint(ctx: Context) -> WorkloadEndpoint | None:
    try:
        return ctx.store.get(WorkloadEndpoint, ctx.workload.endpoint_name, ctx.workload.namespace)
    except NotFound:
        # CNI_ARGS may differ from ADD's: look the container up instead.
        return next(
            (w for w in ctx.store.list(WorkloadEndpoint) if w.spec.container_id == ctx.workload.container_id),
            None,
        )


def cni_del(invocation: Invocation, kv_for: KVSource = EtcdKV) -> None:
    ctx = Context(invocation, kv_for)
    endpoint = _find_endpoint(ctx)
    interfaces = {ctx.workload.host_interface}
    if endpoint is not None:
        interfaces.add(endpoint.spec.interface_name)
    netlink = Netlink()

    async def unplug() -> None:
        try:
            for name in interfaces:
                await netlink.delete_link(name)  # its route and the pod's end go with it
        finally:
            netlink.close()

    asyncio.run(unplug())
    if endpoint is not None:
        with contextlib.suppress(NotFound):
            ctx.store.delete(WorkloadEndpoint, endpoint.name, endpoint.namespace)
    ctx.allocator.release_handle(ctx.handle)


def cni_check(invocation: Invocation, kv_for: KVSource = EtcdKV) -> None:
    ctx = Context(invocation, kv_for)
    held = ctx.allocator.ips_of_handle(ctx.handle)
    if not held:
        raise CNIError(UNKNOWN_CONTAINER, f"no address is allocated for container {invocation.container_id}")
    endpoint = _find_endpoint(ctx)
    if endpoint is None:
        raise CNIError(UNKNOWN_CONTAINER, f"no WorkloadEndpoint for container {invocation.container_id}")
    if sorted(endpoint.spec.ip_networks) != sorted(f"{a}/32" for a in held):
        raise CNIError(
            DATAPLANE_FAILURE, f"endpoint {endpoint.name} has {endpoint.spec.ip_networks}, IPAM {held}"
        )
    netlink = Netlink()

    async def inspect() -> tuple[bool, dict[str, Any], list[str]]:
        try:
            links = await netlink.links()
            routes = await netlink.routes(FELIX_PROTO)
            inside = (
                await netlink.workload_address(invocation.netns, ctx.workload.ifname)
                if invocation.netns
                else []
            )
            return endpoint.spec.interface_name in links, dict(routes), inside
        finally:
            netlink.close()

    present, routes, inside = asyncio.run(inspect())
    if not present:
        raise CNIError(DATAPLANE_FAILURE, f"host interface {endpoint.spec.interface_name} is missing")
    for address in held:
        if f"{address}/32" not in routes:
            raise CNIError(DATAPLANE_FAILURE, f"no route to {address} on this host")
        if invocation.netns and f"{address}/32" not in inside:
            raise CNIError(
                DATAPLANE_FAILURE, f"{ctx.workload.ifname} in {invocation.netns} lacks {address}/32"
            )


def plugin(kv_for: KVSource = EtcdKV) -> Plugin:
    return Plugin(
        add=partial(cni_add, kv_for=kv_for),
        delete=partial(cni_del, kv_for=kv_for),
        check=partial(cni_check, kv_for=kv_for),
    )


def main() -> int:
    return run(plugin())

"""A felid cluster on one machine: a lab network with felid-node on every host, workloads by CNI.

The same harness serves ``felid demo``, the end-to-end tests and
``bench/cluster.py``.  felid-node processes lead their own process groups, so a
cluster can outlive the process that made it (``felid demo --keep``) and be
removed from its saved record (``felid demo down``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from felid.node.config import NodeSettings
from felix.calc.chains import endpoint_chain
from felix.dataplane.iptables import COMMANDS
from lab import network
from lab.convergence import BlockReader, ClusterProgress, http_statuses, lacking, routed_blocks
from lab.etcd import EtcdServer
from lab.network import Lab, LabHost
from lab.processes import BIN, clean_environment, kill_tree, kill_trees, wait_gone, wait_until
from lab.typha import TyphaProcess
from lab.workloads import PingResult, ping_many
from typha.config import TyphaSettings

Mode = Literal["never", "vxlan", "ipip", "crosssubnet"]
MODES: tuple[Mode, ...] = ("never", "vxlan", "ipip", "crosssubnet")
POOL_CIDR = "10.244.0.0/16"
CLUSTER_ID = "244.0.0.1"
NODE_HEALTH_PORT: int = NodeSettings.default_of("health_port")
PROGRAMMED_TIMEOUT = 60.0  # felix may be restarting (test_faults kills it under churn)
STOP_GRACE = 15.0  # felid-node stops felix and bgp (which stops ExaBGP) on SIGTERM
TYPHA_HOSTS = 240  # typha-1 is at .241 on the lab's subnet, typha-2 at .242, ...
TYPHA_PORT: int = TyphaSettings.default_of("server_port")
PING_SOURCES = 16  # fpings at once in a ping matrix, each pinging all of its targets
NEIGHBOUR_LIMITS = Path("/proc/sys/net/ipv4/neigh/default")

Report = Callable[[ClusterProgress], None]


def neighbour_room(hosts: int, workloads_per_host: int = 8) -> list[str]:
    """Raise the kernel's ARP table limits to fit a cluster of ``hosts``; what was changed.

    The table is one for the whole machine, every network namespace's entries counted against
    ``gc_thresh3`` (default 1024, set only in the initial namespace): past it, a host cannot
    resolve its next hop and the packet is dropped ("neighbor table overflow!" in the kernel
    log).  Each host resolves every other host it routes to, and each workload and its host one
    another: from about 30 hosts on (35 hosts: 1,190 host pairs) the default is too small, and
    pings between lab hosts with every route in place were lost.  Only ever raised, never
    lowered (another lab may be running beside this one).
    """
    needed = hosts * (hosts + 4) + 2 * hosts * workloads_per_host
    changed = []
    for name, value in (("gc_thresh2", needed), ("gc_thresh3", 2 * needed)):
        path = NEIGHBOUR_LIMITS / name
        try:
            current = int(path.read_text())
            if current < value:
                path.write_text(f"{value}\n")
                changed.append(f"net.ipv4.neigh.default.{name} {current} -> {value}")
        except OSError as exc:
            changed.append(f"net.ipv4.neigh.default.{name} not raised to {value}: {exc.strerror}")
    return changed


def node_environment(mode: Mode) -> dict[str, str]:
    """felid-node's pool and backend settings for a demo mode."""
    ipip = {"ipip": "Always", "crosssubnet": "CrossSubnet"}.get(mode, "Never")
    return {
        "FELID_IPV4POOL_CIDR": POOL_CIDR,
        "FELID_IPV4POOL_IPIP": ipip,
        "FELID_IPV4POOL_VXLAN": "Always" if mode == "vxlan" else "Never",
        "FELID_IPV4POOL_NAT_OUTGOING": "true",
        "FELID_NETWORKING_BACKEND": "vxlan" if mode == "vxlan" else "bgp",
    }


REFLECTOR_DOCUMENTS = [
    {
        "apiVersion": "projectcalico.org/v3",
        "kind": "BGPConfiguration",
        "metadata": {"name": "default"},
        "spec": {"nodeToNodeMeshEnabled": False},
    },
    {
        "apiVersion": "projectcalico.org/v3",
        "kind": "BGPPeer",
        "metadata": {"name": "peer-with-route-reflectors"},
        "spec": {"nodeSelector": "all()", "peerSelector": "route-reflector == 'true'"},
    },
]


@dataclass(frozen=True)
class Workload:
    name: str
    node: str
    netns: str
    address: str
    namespace: str | None = None  # a Kubernetes pod's namespace, None for a plain container
    added_at: float = 0.0  # time.time() when its CNI ADD returned (before felix had programmed it)


NodeRunner = Callable[[LabHost, Mapping[str, str]], tuple[list[str], dict[str, str]]]


@dataclass
class Cluster:
    work: Path
    size: int
    mode: Mode = "never"
    route_reflectors: int = 0
    prefix: str = "fd"
    fast_election: bool = True
    nic_mtu: int | None = None  # the hosts' NICs' MTU (default the kernel's 1500)
    node_env: dict[str, str] = field(default_factory=dict)  # more settings for every felid-node
    typhas: int = 0  # typhas, each in a namespace of its own; every felid-node is pointed at them
    # How felid-node is started: (host, its environment) -> (command line, more environment);
    # unset, the checkout's felid-node in the host's namespace (lab.podman.node_container: the image).
    node_runner: NodeRunner | None = None
    lab: Lab | None = None
    typha_processes: list[TyphaProcess] = field(default_factory=list)
    nodes: dict[str, int] = field(default_factory=dict)  # node -> felid-node pid
    workloads: list[Workload] = field(default_factory=list)
    raised_limits: list[str] = field(default_factory=list)  # kernel limits build() raised: old -> new
    blocks: BlockReader | None = None  # every node's blocks from etcd, for wait_converged and reports

    # -- life cycle --------------------------------------------------------------------------------

    def build(self) -> Lab:
        self.work.mkdir(parents=True, exist_ok=True)
        self.raised_limits = neighbour_room(self.size)
        self.lab = network.build(
            self.work, self.size, prefix=self.prefix, fast_election=self.fast_election, mtu=self.nic_mtu
        )
        if self.route_reflectors:
            self.apply(REFLECTOR_DOCUMENTS)
        for i in range(1, self.typhas + 1):
            self.start_typha(
                self.lab.add_host(f"typha-{i}", f"{network.SUBNET}.{TYPHA_HOSTS + i}", self.work)
            )
        for typha in self.typha_processes:
            typha.wait_ready(timeout=60)
        return self.lab

    def start_typha(self, host: LabHost) -> TyphaProcess:
        assert self.lab is not None
        typha = TyphaProcess(
            host.node, self.lab.etcd.url, Path(host.home) / "typha.log", host=host, port=TYPHA_PORT
        )
        Path(host.home).mkdir(parents=True, exist_ok=True)
        typha.start()
        self.typha_processes.append(typha)
        return typha

    @property
    def typha_addresses(self) -> list[str]:
        return [t.address for t in self.typha_processes]

    @property
    def hosts(self) -> list[LabHost]:
        assert self.lab is not None, "build() first"
        return self.lab.hosts

    def reflector(self, host: LabHost) -> bool:
        return self.hosts.index(host) >= self.size - self.route_reflectors

    def start_node(self, host: LabHost) -> int:
        assert self.lab is not None
        home = Path(host.home)
        env = {
            **clean_environment(),
            **node_environment(self.mode),
            "FELID_ETCD_ENDPOINTS": self.lab.etcd.url,
            "FELID_NODENAME": host.node,
            "FELID_VAR_DIR": str(host.var_dir),
            "FELID_RUN_DIR": str(home / "run"),
            "FELID_CNI_SOCKET": str(host.cni_socket),
            **({"FELID_TYPHA_ADDRS": ",".join(self.typha_addresses)} if self.typha_processes else {}),
            **self.node_env,
        }
        if self.reflector(host):
            env["FELID_ROUTE_REFLECTOR_CLUSTER_ID"] = CLUSTER_ID
        home.mkdir(parents=True, exist_ok=True)
        argv = ["ip", "netns", "exec", host.netns, str(BIN / "felid-node")]
        if self.node_runner is not None:
            argv, extra = self.node_runner(host, env)
            env = {**env, **extra}
        with open(home / "felid-node.log", "ab") as out:
            process = subprocess.Popen(
                argv,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.nodes[host.node] = process.pid
        return process.pid

    def kill_node(self, host: LabHost) -> None:
        """SIGKILL felid-node alone (its felix and bgp follow it by their parent-death signal)."""
        pid = self.nodes.pop(host.node)
        os.kill(pid, signal.SIGKILL)
        kill_tree(pid)  # reaps it; what is left of its group goes too

    def ready(self, host: LabHost) -> bool:
        return self.ready_among([host]) == [host]

    def ready_among(self, hosts: Iterable[LabHost]) -> list[LabHost]:
        """Those of ``hosts`` whose felid-node is ready, all asked at once."""
        chosen = list(hosts)
        statuses = http_statuses([h.netns for h in chosen], NODE_HEALTH_PORT, "/readiness")
        return [h for h, status in zip(chosen, statuses, strict=True) if status == 200]

    def _check_running(self, host: LabHost) -> None:
        pid = self.nodes.get(host.node)
        if pid is None or wait_gone(pid, 0):
            raise RuntimeError(f"felid-node on {host.node} exited:\n{self.node_log(host)[-3000:]}")

    def wait_ready(
        self, hosts: Iterable[LabHost] | None = None, timeout: float = 120.0, report: Report | None = None
    ) -> float:
        """Until every felid-node of ``hosts`` (default all) is ready: the seconds it took.
        ``report`` is called after each look with the cluster's progress, routes included."""
        started = time.monotonic()
        chosen = list(hosts or self.hosts)
        waiting = list(chosen)
        blocks = self._block_reader() if report is not None else None
        while True:
            looked = time.process_time()
            for host in waiting:
                self._check_running(host)
            for host in self.ready_among(waiting):
                waiting.remove(host)
            if report is not None:
                ready = len(chosen) - len(waiting)
                report(self._progress(chosen, ready, blocks, started))
            took = time.monotonic() - started
            if not waiting:
                return took
            if took > timeout:
                names = ", ".join(h.node for h in waiting)
                # A host once ready is not asked again above: it may have lost a session since.
                ready_now = set(self.ready_among(chosen))
                unready = [h for h in chosen if h not in ready_now]
                told = "".join(self._unready_story(h) for h in unready[:4])
                raise TimeoutError(
                    f"felid-node not ready in {timeout:.0f}s on {names} "
                    f"(not ready now: {', '.join(h.node for h in unready) or 'none'}){told}"
                )
            time.sleep(_pause(time.process_time() - looked))

    def wait_converged(
        self, hosts: Iterable[LabHost] | None = None, timeout: float = 120.0, report: Report | None = None
    ) -> float:
        """Until every host of ``hosts`` (default all) routes to every confirmed block (as etcd has
        them now) of every other host with a felid-node started (BGP's routes, or felix's over
        VXLAN): the seconds it took."""
        started = time.monotonic()
        chosen = list(hosts or self.hosts)
        blocks = self._block_reader()
        while True:
            looked = time.process_time()
            for host in chosen:
                self._check_running(host)
            ready = len(self.ready_among(chosen)) if report is not None else len(chosen)
            progress = self._progress(chosen, ready, blocks, started)
            if report is not None:
                report(progress)
            if progress.converged == len(chosen):
                return progress.elapsed
            if progress.elapsed > timeout:
                shown = [f"{n} lacks {', '.join(b[:3])}" for n, b in sorted(progress.lacking.items())]
                raise TimeoutError(
                    f"routes not converged in {timeout:.0f}s: {'; '.join(shown[:5])}"
                    + (f" (and {len(shown) - 5} more hosts)" if len(shown) > 5 else "")
                )
            time.sleep(_pause(time.process_time() - looked))

    @property
    def _etcd(self) -> EtcdServer:
        assert self.lab is not None, "build() first"
        return self.lab.etcd

    def _block_reader(self) -> BlockReader:
        """The helper reading every node's blocks from etcd: started at the first wait that needs
        it, kept until destroy() (so a later wait's first look is not slowed by its start)."""
        if self.blocks is None or self.blocks.process.poll() is not None:
            self.blocks = BlockReader(self._etcd.url, self._etcd.netns)
        return self.blocks

    def _close_block_reader(self) -> None:
        if self.blocks is not None:
            self.blocks.close()
            self.blocks = None

    def _progress(
        self, hosts: list[LabHost], ready: int, blocks: BlockReader | None, started: float
    ) -> ClusterProgress:
        known = blocks.read() if blocks is not None else None
        if known is None:
            return ClusterProgress(len(hosts), ready, None, time.monotonic() - started)
        nodes = list(self.nodes)  # those with a felid-node started
        vxlan = self.mode == "vxlan"  # felix routes to the other hosts' blocks, no BGP
        missing = {}
        for host in hosts:
            lacks = lacking(known, host.node, routed_blocks(host.netns, vxlan), nodes)
            if lacks:
                missing[host.node] = lacks
        owned = sum(len(b) for b in known.values())
        converged = len(hosts) - len(missing)
        return ClusterProgress(len(hosts), ready, converged, time.monotonic() - started, owned, missing)

    def _unready_story(self, host: LabHost) -> str:
        """The last lines of ``host``'s felid-node and ExaBGP logs (ExaBGP's statistics left out):
        what a failed wait reports, since the cluster is gone by the time anyone reads it."""
        exabgp = Path(host.home) / "run" / "bgp" / "exabgp.log"
        lines = exabgp.read_text(errors="replace").splitlines() if exabgp.exists() else []
        told = [line for line in lines if line.strip() and " statistics " not in line]
        node = self.node_log(host).splitlines()
        return "\n--- {0} felid-node.log\n{1}\n--- {0} exabgp.log\n{2}".format(
            host.node, "\n".join(node[-15:]), "\n".join(told[-25:])
        )

    def node_log(self, host: LabHost) -> str:
        path = Path(host.home) / "felid-node.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def destroy(self) -> None:
        self._close_block_reader()
        kill_trees(self.nodes.values(), grace=STOP_GRACE)
        self.nodes.clear()
        for typha in self.typha_processes:
            typha.kill()
        self.typha_processes.clear()
        if self.lab is not None:
            self.lab.destroy()

    def save(self, path: Path) -> None:
        """Record the cluster for another process to destroy (the helpers of this one go)."""
        assert self.lab is not None
        self._close_block_reader()
        record = {
            "lab": self.lab.saved(),
            "nodes": self.nodes,
            "typhas": [t.pid for t in self.typha_processes if t.pid],
            "workloads": [asdict(w) for w in self.workloads],
            "work": str(self.work),
        }
        path.write_text(json.dumps(record, indent=2))

    # -- the datastore ---------------------------------------------------------------------------------

    def felidctl(
        self, *args: str, stdin: str | None = None, host: LabHost | None = None
    ) -> subprocess.CompletedProcess[str]:
        assert self.lab is not None, "build() first"
        return self.lab.felidctl(*args, stdin=stdin, host=host)

    def apply(self, documents: list[Any]) -> None:
        assert self.lab is not None, "build() first"
        self.lab.apply(documents)

    # -- workloads --------------------------------------------------------------------------------------

    def add_workload(
        self,
        host: LabHost,
        name: str | None = None,
        *,
        labels: Mapping[str, str] | None = None,
        namespace: str | None = None,
        programmed: bool = True,
    ) -> Workload:
        """A pod through the CNI plugin; ``labels`` as a runtime passes them (``args.cni.labels``),
        ``namespace`` as Kubernetes' (the pod then is ``name`` in it).  Returns once felix has
        programmed it, or (``programmed=False``, to time that) as soon as ADD has returned."""
        assert self.lab is not None
        name = name or f"w{uuid.uuid4().hex[:6]}"
        netns = f"{self.prefix}-p-{name}-{uuid.uuid4().hex[:4]}"
        network.add_namespace(netns)
        self.lab.namespaces.append(netns)
        netconf = dict(host.netconf())
        if labels:
            netconf["args"] = {"cni": {"labels": [{"key": k, "value": v} for k, v in labels.items()]}}
        args = f"K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name}" if namespace else ""
        code, result = host.cni("ADD", netconf, name, f"/run/netns/{netns}", args)
        added_at = time.time()
        if code != 0 or result is None:
            raise RuntimeError(f"CNI ADD of {name} on {host.node} failed: {result}")
        address = str(result["ips"][0]["address"]).split("/")[0]
        workload = Workload(name, host.node, netns, address, namespace, added_at)
        self.workloads.append(workload)
        if programmed:
            self._wait_programmed(host, str(result["interfaces"][0]["name"]))
        return workload

    def _wait_programmed(self, host: LabHost, interface: str) -> None:
        """A pod is up once its host's felix has written its policy chains (ADD returns before
        that, as Calico's does without its policy wait): the lab's workloads are reachable when
        add_workload returns. The dispatch chains change in the same commit as these."""
        chain = endpoint_chain(interface, "Egress")
        iptables = COMMANDS[self.node_env.get("FELIX_IPTABLESBACKEND", "Auto")]  # felix's own
        wait_until(
            lambda: host.run(iptables, "-S", chain).returncode == 0,
            PROGRAMMED_TIMEOUT,
            f"felix on {host.node} programs {chain}",
            0.05,
        )

    def delete_workload(self, workload: Workload) -> None:
        assert self.lab is not None
        host = self.lab.host(workload.node)
        ns = workload.namespace
        args = f"K8S_POD_NAMESPACE={ns};K8S_POD_NAME={workload.name}" if ns else ""
        code, result = host.cni("DEL", host.netconf(), workload.name, f"/run/netns/{workload.netns}", args)
        if code != 0:
            raise RuntimeError(f"CNI DEL of {workload.name} failed: {result}")
        network.ip("netns", "del", workload.netns, check=False)
        self.lab.namespaces.remove(workload.netns)
        self.workloads.remove(workload)

    def ping_matrix(self, workloads: list[Workload] | None = None, count: int = 3) -> list[PingResult]:
        """Every workload pings every other: one fping per source for all its targets, up to
        ``PING_SOURCES`` of them at once; a result per (source, target) pair, sources in order."""
        chosen = workloads or self.workloads

        def from_one(source: Workload) -> list[PingResult]:
            return ping_many(source.netns, [w.address for w in chosen if w is not source], count=count)

        with ThreadPoolExecutor(max_workers=PING_SOURCES) as pool:
            return [r for results in pool.map(from_one, chosen) for r in results]


def destroy_saved(record: Mapping[str, Any]) -> None:
    kill_trees((int(pid) for pid in record.get("nodes", {}).values()), grace=STOP_GRACE)
    kill_trees(int(pid) for pid in record.get("typhas", []))
    network.destroy_saved(record.get("lab", {}))


def _pause(looked: float) -> float:
    """Between two looks at the cluster: 0.2 s, or 9 times the CPU a look took, so that looking
    costs at most a tenth of a core (at 100 hosts a look is some 70 ms: the cluster starting
    beside it needs the machine); at most 2 s."""
    return min(2.0, max(0.2, 9 * looked))

"""How far a lab cluster has come, read cheaply enough to poll 100 hosts: which felid-nodes are
ready, and which hosts' kernels route to every other host's blocks.

No process per host and poll: this thread steps into a host's network namespace
(``felix.dataplane.netlink.entered``) just long enough to make a socket there, then asks through it:
felid-node's ``/readiness`` over TCP (every host's at once), the kernel's routes over rtnetlink.
The old probe, a Python started with ``ip netns exec`` per host and one host after another, cost
about 60 ms of CPU each (at 100 hosts, a core of the machine the cluster was starting on), and
each could wait its 2 s timeout for a felid-node too busy to answer.  The blocks every node holds come
from etcd through one helper process in etcd's namespace that keeps a datastore client (``python
-m lab.convergence blocks URL``: one range read per line it is sent).

A host has *converged* when its kernel has a route to every confirmed block of every other node
of the cluster (each claims one when its felid-node starts): learned over BGP (protocol 186), or
in VXLAN mode felix's route (protocol 80, via the remote VTEP).
"""

from __future__ import annotations

import contextlib
import errno
import json
import selectors
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import cast

from felix.calc.model import BGP_PROTO, FELIX_PROTO
from felix.dataplane.netlink import KernelError, entered
from felix.dataplane.rtnl import RTN_UNICAST, Rtnl, cidr
from lab.processes import BIN, clean_environment, kill_tree


def http_statuses(namespaces: Sequence[str], port: int, path: str, timeout: float = 2.0) -> list[int]:
    """GET http://127.0.0.1:``port````path`` inside each of ``namespaces``, all at once: their
    statuses, 0 where nothing answered within ``timeout`` (a felid-node starting on a busy machine
    may be slow to answer: asked one after another, each could hold up the look by its timeout)."""
    request = f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode()
    statuses = [0] * len(namespaces)
    with selectors.DefaultSelector() as waiting:
        try:
            for index, netns in enumerate(namespaces):
                try:
                    with entered(f"/run/netns/{netns}"):
                        conn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                except (OSError, KernelError):
                    continue  # the namespace is gone
                conn.setblocking(False)
                if conn.connect_ex(("127.0.0.1", port)) not in (0, errno.EINPROGRESS):
                    conn.close()  # refused: nothing listens yet
                    continue
                waiting.register(conn, selectors.EVENT_WRITE, (index, bytearray()))
            deadline = time.monotonic() + timeout
            while waiting.get_map() and (left := deadline - time.monotonic()) > 0:
                for key, events in waiting.select(left):
                    _answer(waiting, key, events, request, statuses)
        finally:
            for key in list(waiting.get_map().values()):
                waiting.unregister(key.fileobj)
                cast(socket.socket, key.fileobj).close()
    return statuses


def _answer(
    waiting: selectors.BaseSelector,
    key: selectors.SelectorKey,
    events: int,
    request: bytes,
    statuses: list[int],
) -> None:
    """One step of one GET: connected (send the request), or some of the answer has come."""
    conn = cast(socket.socket, key.fileobj)
    index, head = key.data
    try:
        if events & selectors.EVENT_WRITE:
            if conn.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                conn.send(request)
                waiting.modify(conn, selectors.EVENT_READ, key.data)
                return
            chunk = b""
        else:
            chunk = conn.recv(4096)
    except OSError:
        chunk = b""
    head += chunk
    if chunk and b"\r\n" not in head and len(head) < 4096:
        return
    words = bytes(head).split(b"\r\n", 1)[0].split()
    statuses[index] = int(words[1]) if len(words) > 1 and words[1].isdigit() else 0
    waiting.unregister(conn)
    conn.close()


def routed_blocks(netns: str, vxlan: bool = False) -> set[str]:
    """The destinations this host's kernel routes to other hosts the way felid does: the routes
    felid-bgp learned (protocol 186), or with ``vxlan`` felix's VXLAN routes (protocol 80 with a
    gateway; its other routes are local workloads and the blackholes of the host's own blocks).
    One route dump: about 0.5 ms of CPU for a host of a 100-host cluster (105 routes)."""
    with entered(f"/run/netns/{netns}"):
        rtnl = Rtnl()
    try:
        routes = rtnl.dump_routes(FELIX_PROTO if vxlan else BGP_PROTO)
    finally:
        rtnl.close()
    return {cidr(r) for r in routes if r.kind == RTN_UNICAST and (r.gateway is not None or not vxlan)}


def lacking(
    blocks: Mapping[str, frozenset[str]], node: str, routed: set[str], nodes: Iterable[str]
) -> list[str]:
    """What ``node``'s kernel has no route to: each block of the other ``nodes`` it lacks, and
    ``"<node>: no block yet"`` for another node that holds none (felid-node claims one at start)."""
    missing: list[str] = []
    for other in nodes:
        if other != node:
            owned = blocks.get(other)
            missing.extend(sorted(owned - routed) if owned else [f"{other}: no block yet"])
    return missing


@dataclass(frozen=True)
class ClusterProgress:
    """One look at the cluster: how many of ``hosts`` are ready and how many have converged."""

    hosts: int
    ready: int
    converged: int | None  # None: not looked at (etcd did not answer this time)
    elapsed: float
    blocks: int = 0  # confirmed blocks in the cluster
    lacking: Mapping[str, list[str]] = field(default_factory=dict)  # node -> blocks it has no route to

    def line(self) -> str:
        converged = "?" if self.converged is None else str(self.converged)
        return (
            f"hosts ready {self.ready}/{self.hosts}, routes converged {converged}/{self.hosts}"
            f"  ({self.elapsed:.1f}s)"
        )


class BlockReader:
    """Every node's confirmed blocks, read from etcd by a helper process (one datastore client,
    started once) in etcd's namespace.  A context manager: the helper goes when it is left."""

    def __init__(self, etcd_url: str, netns: str | None) -> None:
        argv = [str(BIN / "python"), "-m", "lab.convergence", "blocks", etcd_url]
        if netns:
            argv = ["ip", "netns", "exec", netns, *argv]
        # Its own session: a Ctrl-C for the demo is not the helper's to print a traceback for;
        # it ends when its stdin closes, with us.
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=clean_environment(),
            start_new_session=True,
        )

    def read(self) -> dict[str, frozenset[str]] | None:
        """node -> its confirmed blocks; None when etcd did not answer."""
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None
        try:
            stdin.write("blocks\n")
            stdin.flush()
            line = stdout.readline()
        except (BrokenPipeError, ValueError):
            line = ""
        if not line:
            raise RuntimeError("the lab's block reader (python -m lab.convergence) exited")
        answer = json.loads(line)
        if "error" in answer:
            return None
        return {node: frozenset(blocks) for node, blocks in answer["blocks"].items()}

    def close(self) -> None:
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            kill_tree(self.process.pid)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> BlockReader:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def serve_blocks(etcd_url: str) -> None:
    """The helper: for each line on stdin, one JSON line: ``{"blocks": {node: [cidr...]}}``."""
    from datastore.config import DatastoreConfig
    from datastore.etcd import EtcdKV
    from datastore.keys import IPAMKeys
    from datastore.models.ipam import AffinityState, affinity_state

    kv, keys = EtcdKV(DatastoreConfig(etcd_endpoints=(etcd_url,)), timeout=10), IPAMKeys()
    for _ in sys.stdin:
        try:
            found, _revision = kv.list(keys.hosts)
        except Exception as exc:  # etcd away, or anything else: this look is unknown, the next may do
            print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
            continue
        blocks: dict[str, list[str]] = {}
        for item in found:
            try:
                confirmed = affinity_state(item.value) is AffinityState.CONFIRMED
            except (ValueError, KeyError, TypeError):
                continue
            if confirmed:
                blocks.setdefault(keys.affinity_node(item.key), []).append(keys.cidr_of(item.key))
        print(json.dumps({"blocks": blocks}), flush=True)


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "blocks":
        with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
            serve_blocks(argv[1])
        return 0
    print("usage: python -m lab.convergence blocks ETCD_URL", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

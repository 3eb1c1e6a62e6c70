"""``felid demo``: the README's main job.

At this stage of felid it brings up the cluster datastore: a local etcd, the
cluster resources applied with felidctl, read back, and an invalid document
refused without a write.  (The multi-host cluster joins it in a later issue.)
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from felid.etcdserver import EtcdServer

STATE_DIR = Path("/run/felid-demo")
RESOURCES = Path(__file__).with_name("demo_resources.yaml")
FELIDCTL = str(Path(sys.executable).parent / "felidctl")

INVALID = """\
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: overlapping
spec:
  cidr: 10.244.128.0/17
"""


class DemoFailed(Exception):
    pass


class Progress:
    def __init__(self, total: int) -> None:
        self.total = total
        self.step = 0

    @contextmanager
    def __call__(self, title: str) -> Iterator[None]:
        self.step += 1
        print(f"\n\033[1m[{self.step}/{self.total}] {title}\033[0m", flush=True)
        start = time.monotonic()
        yield
        print(f"    ok ({time.monotonic() - start:.1f}s)", flush=True)


def felidctl(url: str, *args: str, stdin: str | None = None, expect_ok: bool = True) -> str:
    shown = " ".join(["felidctl", *args]) + (" <<EOF" if stdin else "")
    print(f"$ {shown}", flush=True)
    env = {**os.environ, "FELID_ETCD_ENDPOINTS": url}
    result = subprocess.run(
        [FELIDCTL, *args], input=stdin, capture_output=True, text=True, env=env, check=False
    )
    sys.stdout.write(result.stdout)
    sys.stdout.write(result.stderr)
    if (result.returncode == 0) != expect_ok:
        raise DemoFailed(f"felidctl {' '.join(args)} exited {result.returncode}")
    return result.stdout


def up(keep: bool) -> int:
    if (STATE_DIR / "etcd.pid").exists():
        print(
            f"a demo is already running (state in {STATE_DIR}); run 'felid demo down' first", file=sys.stderr
        )
        return 1
    progress = Progress(5)
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    etcd = EtcdServer(STATE_DIR / "etcd", log_file=STATE_DIR / "etcd.log")
    try:
        with progress("start etcd (Debian etcd-server) on loopback"):
            etcd.start()
            (STATE_DIR / "etcd.pid").write_text(f"{etcd.pid}\n")
            (STATE_DIR / "endpoints").write_text(f"{etcd.url}\n")
            print(f"    etcd pid {etcd.pid}, client URL {etcd.url}")
        with progress("apply the cluster resources"):
            felidctl(etcd.url, "apply", "-f", str(RESOURCES))
        with progress("read them back"):
            pools = felidctl(etcd.url, "get", "ippool", "-o", "wide")
            felidctl(etcd.url, "get", "bgpconfig")
            felidctl(etcd.url, "get", "bgppeer")
        with progress("an invalid document is refused and nothing is written"):
            print("    " + INVALID.replace("\n", "\n    ").rstrip())
            felidctl(etcd.url, "apply", "-f", "-", stdin=INVALID, expect_ok=False)
            if felidctl(etcd.url, "get", "ippool", "-o", "wide") != pools:
                raise DemoFailed("the refused document changed the pools")
        with progress("leave it running" if keep else "stop etcd and clean up"):
            if keep:
                print(f"    export FELID_ETCD_ENDPOINTS={etcd.url}   # then: felidctl get ippool -o wide")
                print("    felid demo down                             # removes everything")
            else:
                etcd.stop()
                down()
        print("\ndemo complete")
        return 0
    except (DemoFailed, RuntimeError) as exc:
        print(f"\ndemo FAILED: {exc}", file=sys.stderr)
        etcd.stop()
        down()
        return 1


def down() -> int:
    """Stop the demo's processes by PID and remove its state."""
    pid_file = STATE_DIR / "etcd.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text())
        try:
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                os.kill(pid, 0)
                time.sleep(0.05)
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    shutil.rmtree(STATE_DIR, ignore_errors=True)
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="felid demo", description=__doc__)
    parser.add_argument("action", nargs="?", choices=("up", "down"), default="up")
    parser.add_argument(
        "--keep", action="store_true", help="leave etcd running; 'felid demo down' removes it"
    )
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("felid demo: run as root", file=sys.stderr)
        return 1
    return up(args.keep) if args.action == "up" else down()

"""felidctl ipam: show, check, release, gc, configure."""

from __future__ import annotations

import argparse
import ipaddress
import socket
from collections.abc import Callable, Sequence

from pydantic import ValidationError

from datastore.errors import ValidationFailed
from datastore.keys import IPAMKeys
from datastore.kv import Absent, Put, Unchanged
from datastore.models import parse_duration
from datastore.models.ipam import IPAMConfig
from datastore.store import ResourceStore
from ipam.allocator import BlockAllocator
from ipam.gc import GarbageCollector
from ipam.inventory import check, find_address, load_inventory, pool_usage


def boxed(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]) -> str:
    """A table framed like calicoctl's ipam output."""
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=True)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def fmt(cells: Sequence[str], centre: bool) -> str:
        out = []
        for cell, width, r in zip(cells, widths, right, strict=True):
            text = cell.center(width) if centre else (cell.rjust(width) if r else cell.ljust(width))
            out.append(f" {text} ")
        return "|" + "|".join(out) + "|"

    return "\n".join([line, fmt(headers, True), line, *(fmt(r, False) for r in rows), line]) + "\n"


def _pct(part: int, whole: int) -> str:
    return f"{part} ({round(100 * part / whole) if whole else 0}%)"


def cmd_show(args: argparse.Namespace, store: ResourceStore) -> int:
    if args.show_configuration:
        print(boxed(["PROPERTY", "VALUE"], _config_rows(read_config(store)), [False, False]), end="")
        return 0
    inventory = load_inventory(store.kv, store.layout)
    if args.ip:
        found = find_address(inventory, args.ip)
        block, attr = found if found else (None, None)
        if block is None or attr is None:
            print(f"IP {args.ip} is not assigned")
            return 0
        print(f"IP {args.ip} is in use (block {block.cidr}, affine to {block.host or 'no host'})")
        print(f"  handle: {attr.handle_id}")
        for key, value in sorted(attr.attrs.items()):
            print(f"  {key}: {value}")
        return 0
    rows = []
    for pool, usage, blocks in pool_usage(inventory):
        rows.append(
            [
                "IP Pool",
                pool.spec.cidr,
                "",
                str(usage.size),
                _pct(usage.in_use, usage.size),
                _pct(usage.free, usage.size),
            ]
        )
        if args.show_blocks:
            for b in blocks:
                rows.append(
                    ["Block", b.cidr, b.host or "", str(b.size), _pct(b.in_use, b.size), _pct(b.free, b.size)]
                )
    headers = ["GROUPING", "CIDR", "HOST", "IPS TOTAL", "IPS IN USE", "IPS FREE"]
    print(boxed(headers, rows, [False, False, False, True, False, False]), end="")
    return 0


def cmd_check(args: argparse.Namespace, store: ResourceStore) -> int:
    inventory = load_inventory(store.kv, store.layout)
    print(
        f"Checked {len(inventory.blocks)} blocks, {len(inventory.handles)} handles, "
        f"{len(inventory.affinities)} affinities, {len(inventory.nodes)} nodes, "
        f"{len(inventory.container_ids)} workload endpoints."
    )
    report = check(inventory)
    for leak in report.leaks:
        print(
            f"leaked: IP {leak.address} handle {leak.handle_id} node {leak.node or '?'} "
            f"allocated {leak.timestamp or '?'}: {leak.reason}"
        )
    for node, cidr, why in report.stray_affinities:
        print(f"stray affinity: node {node} block {cidr}: {why}")
    for problem in report.inconsistencies:
        print(f"inconsistent: {problem}")
    if report.problems:
        print(f"Found {report.problems} problem(s); 'felidctl ipam gc' releases leaked addresses.")
        return 2
    print("No problems found.")
    return 0


def cmd_release(args: argparse.Namespace, store: ResourceStore) -> int:
    if bool(args.ip) == bool(args.handle):
        raise ValidationFailed("felidctl ipam release", "give exactly one of --ip or --handle")
    allocator = BlockAllocator(store.kv, store.layout, node=socket.gethostname())
    released = allocator.release_ips(args.ip) if args.ip else allocator.release_handle(args.handle)
    for address in released:
        print(f"Released {address}")
    if not released:
        print("Nothing to release (already free).")
    return 0


def cmd_gc(args: argparse.Namespace, store: ResourceStore) -> int:
    try:
        grace = parse_duration(args.grace)
    except ValueError as exc:
        raise ValidationFailed("--grace", str(exc)) from None
    gc = GarbageCollector(store.kv, store.layout, grace)
    if args.dry_run:
        ripe, waiting = gc.candidates()
        for leak in ripe:
            print(f"would release IP {leak.address} handle {leak.handle_id}: {leak.reason}")
        print(f"{len(ripe)} leaked address(es) past the grace period, {len(waiting)} still inside it.")
        return 0
    released = gc.collect()
    for leak in released:
        print(f"Released IP {leak.address} handle {leak.handle_id}: {leak.reason}")
    print(f"Released {len(released)} leaked address(es).")
    return 0


def read_config(store: ResourceStore) -> IPAMConfig:
    item = store.kv.get(IPAMKeys(store.layout.prefix).config)
    return IPAMConfig.from_json(item.value) if item else IPAMConfig()


def _config_rows(config: IPAMConfig) -> list[list[str]]:
    return [[name, str(value).lower()] for name, value in config.model_dump(by_alias=True).items()]


def cmd_configure(args: argparse.Namespace, store: ResourceStore) -> int:
    key = IPAMKeys(store.layout.prefix).config
    changes = {
        name: getattr(args, name) for name in IPAMConfig.model_fields if getattr(args, name) is not None
    }
    if not changes:
        raise ValidationFailed("felidctl ipam configure", "nothing to change; see --help")
    for _ in range(10):
        item = store.kv.get(key)
        current = IPAMConfig.from_json(item.value) if item else IPAMConfig()
        try:
            updated = IPAMConfig.model_validate({**current.model_dump(), **changes})
        except ValidationError as exc:
            err = exc.errors()[0]
            flag = _flag(str(err["loc"][0]))
            raise ValidationFailed(flag, f"{err['msg']} (got {err['input']!r})") from None
        guard = Unchanged(key, item.mod_revision) if item else Absent(key)
        if store.kv.commit([guard], [Put(key, updated.to_json())]) is not None:
            print("Successfully set the IPAM configuration:")
            print(boxed(["PROPERTY", "VALUE"], _config_rows(updated), [False, False]), end="")
            return 0
    raise ValidationFailed("felidctl ipam configure", "the configuration kept changing; try again")


def _flag(name: str) -> str:
    """``max_blocks_per_host`` -> ``--maxblocksperhost``, as calicoctl spells it."""
    field = IPAMConfig.model_fields[name]
    return "--" + (field.alias or name).lower()


def _address(text: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IPv4 address") from None


def _bool(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"{text!r}: use true or false")
    return text.lower() == "true"


IPAMHandler = Callable[[argparse.Namespace, ResourceStore], int]


def add_ipam_parser(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    add_flags: Callable[[argparse.ArgumentParser], None],
    open_store: Callable[[argparse.Namespace], ResourceStore],
) -> None:
    ipam = sub.add_parser("ipam", help="IP address management: show, check, release, gc, configure.")
    verbs = ipam.add_subparsers(dest="ipam_command", required=True, metavar="VERB")

    def verb(name: str, handler: IPAMHandler, text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = verbs.add_parser(name, help=text, description=text)
        p.set_defaults(handler=lambda args: handler(args, open_store(args)))
        add_flags(p)
        return p

    p = verb("show", cmd_show, "Pool usage; --show-blocks per block and its host; --ip who holds an address.")
    p.add_argument("--show-blocks", action="store_true")
    p.add_argument("--ip", metavar="ADDRESS", type=_address)
    p.add_argument("--show-configuration", action="store_true", help="the IPAM configuration")
    verb("check", cmd_check, "Report leaked addresses, stray affinities and inconsistencies (exit 2 if any).")
    p = verb("release", cmd_release, "Release addresses by IP or by handle (idempotent).")
    p.add_argument("--ip", nargs="+", metavar="ADDRESS", type=_address)
    p.add_argument("--handle", metavar="HANDLE_ID")
    p = verb("gc", cmd_gc, "Release leaked addresses older than the grace period.")
    p.add_argument("--grace", default="15m", help="how old a leak must be (default 15m)")
    p.add_argument("--dry-run", action="store_true", help="only say what would be released")
    p = verb("configure", cmd_configure, "Change the IPAM configuration.")
    # One flag per IPAMConfig setting, from its declaration.
    for name, field in IPAMConfig.model_fields.items():
        boolean = field.annotation is bool
        p.add_argument(
            _flag(name),
            dest=name,
            type=_bool if boolean else int,
            metavar="true|false" if boolean else "N",
            help=field.description,
        )

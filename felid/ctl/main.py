"""felidctl: apply / create / replace / get / delete / label / version over the datastore."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import yaml

from datastore.config import DEFAULT_CONFIG_FILE, DatastoreConfig, read_config_file
from datastore.errors import (
    AlreadyExists,
    BatchItemFailed,
    Conflict,
    DatastoreError,
    NotFound,
    PartlyWritten,
    ValidationFailed,
    quoted,
)
from datastore.etcd import EtcdKV
from datastore.keys import KeyLayout
from datastore.models import API_VERSION, ClusterInformation, Resource
from datastore.models.base import label_problem, valid_name, valid_namespace
from datastore.settings import add_flags, resolve
from datastore.store import ResourceStore, WriteMode
from felid import __version__
from felid.ctl.documents import DocumentError, read_documents
from felid.ctl.ipam import add_ipam_parser
from felid.ctl.kinds import UnknownKind, kind_named
from felid.ctl.node import add_node_parser
from felid.ctl.tables import render_table


class UsageError(Exception):
    pass


def add_datastore_flags(parser: argparse.ArgumentParser) -> None:
    """Flags for every DatastoreConfig setting, from its declaration."""
    group = parser.add_argument_group("datastore")
    group.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help=f"datastore config file (default {DEFAULT_CONFIG_FILE} if present)",
    )
    add_flags(group, DatastoreConfig)


def datastore_config(args: argparse.Namespace, environ: dict[str, str]) -> DatastoreConfig:
    path = args.config or environ.get("FELID_CONFIG")
    if path is None and os.path.exists(DEFAULT_CONFIG_FILE):
        path = DEFAULT_CONFIG_FILE
    file_values = read_config_file(path) if path else {}
    flags = {name: getattr(args, name, None) for name in DatastoreConfig.model_fields}
    return resolve(DatastoreConfig, flags=flags, environ=environ, file_values=file_values)


def open_store(args: argparse.Namespace) -> ResourceStore:
    config = datastore_config(args, dict(os.environ))
    return ResourceStore(EtcdKV(config), KeyLayout(config.etcd_prefix))


def _write(args: argparse.Namespace, mode: WriteMode) -> int:
    docs = read_documents(args.filename)
    for doc in docs:
        for warning in doc.warnings:
            print(f"warning: {doc.where()}: {warning}", file=sys.stderr)
    store = open_store(args)
    resources = [d.resource for d in docs]
    if mode is WriteMode.CREATE and args.skip_exists:
        resources = [r for r in resources if not _exists(store, r)]
    try:
        written = store.write(resources, mode) if resources else []
    except BatchItemFailed as exc:
        doc = docs[[d.resource for d in docs].index(resources[exc.index])]
        cause = exc.cause
        field = cause.field if isinstance(cause, ValidationFailed) else ""
        message = cause.message if isinstance(cause, ValidationFailed) else str(cause)
        raise DocumentError(
            doc.source, doc.index, doc.label, field, f"{message}; nothing was written"
        ) from None
    except PartlyWritten as exc:
        raise DocumentError(docs[0].source, None, "", "", str(exc)) from None
    verb = {WriteMode.CREATE: "created", WriteMode.REPLACE: "replaced", WriteMode.APPLY: "applied"}[mode]
    print(f"Successfully {verb} {len(written)} resource(s)")
    return 0


def _exists(store: ResourceStore, resource: Resource) -> bool:
    try:
        store.get(type(resource), resource.name, resource.namespace)
    except NotFound:
        return False
    return True


def cmd_apply(args: argparse.Namespace) -> int:
    return _write(args, WriteMode.APPLY)


def cmd_create(args: argparse.Namespace) -> int:
    return _write(args, WriteMode.CREATE)


def cmd_replace(args: argparse.Namespace) -> int:
    return _write(args, WriteMode.REPLACE)


def _named(kind: type[Resource], names: Sequence[str], namespace: str | None) -> None:
    """Names from the command line become keys: refuse what no resource can be called."""
    for name in names:
        valid_name(name, f"{kind.KIND} name")
    if kind.NAMESPACED and namespace is not None:
        valid_namespace(namespace, "--namespace")


def cmd_get(args: argparse.Namespace) -> int:
    kind = kind_named(args.kind)
    namespace = None if args.all_namespaces or not kind.NAMESPACED else args.namespace
    _named(kind, args.names, namespace)
    store = open_store(args)
    if args.names:
        resources: list[Resource] = [store.get(kind, name, namespace or "default") for name in args.names]
    else:
        resources = list(store.list(kind, namespace))
    if args.output in ("yaml", "json"):
        docs = [r.to_dict() for r in resources]
        data: Any = (
            docs[0]
            if len(args.names) == 1
            else {"apiVersion": API_VERSION, "kind": f"{kind.KIND}List", "items": docs}
        )
        if args.output == "json":
            print(json.dumps(data, indent=2))
        else:
            print(yaml.safe_dump(data, sort_keys=False, default_flow_style=False), end="")
        return 0
    sys.stdout.write(
        render_table(kind, resources, wide=args.output == "wide", namespaces=args.all_namespaces)
    )
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    if args.filename:
        if args.kind or args.names:
            raise UsageError("delete takes either -f FILE or KIND NAME..., not both")
        targets = [
            (type(d.resource), d.resource.name, d.resource.namespace) for d in read_documents(args.filename)
        ]
    else:
        if not args.kind or not args.names:
            raise UsageError("delete needs KIND and NAME (or -f FILE)")
        kind = kind_named(args.kind)
        _named(kind, args.names, args.namespace)
        targets = [(kind, name, args.namespace if kind.NAMESPACED else None) for name in args.names]
    store = open_store(args)
    deleted = 0
    for kind, name, namespace in targets:
        try:
            store.delete(kind, name, namespace)
            deleted += 1
        except NotFound:
            if not args.skip_not_exists:
                raise
    print(f"Successfully deleted {deleted} resource(s)")
    return 0


LABEL_RETRIES = 5


def cmd_label(args: argparse.Namespace) -> int:
    """calicoctl label: set (``key=value``, ``--overwrite`` to change one) or ``--remove`` a label,
    as one compare-and-swap of the resource (retried if another writer got there first)."""
    kind = kind_named(args.kind)
    namespace = args.namespace if kind.NAMESPACED else None
    _named(kind, [args.name], namespace)
    key, sep, value = args.label.partition("=")
    if args.remove == bool(sep):
        raise UsageError("label takes KEY=VALUE to set a label, or KEY with --remove")
    problem = label_problem(key, value)
    if problem is not None:
        raise UsageError(problem)
    store = open_store(args)
    what = f"{kind.KIND.lower()} {quoted(args.name)}"
    for _ in range(LABEL_RETRIES):
        resource = store.get(kind, args.name, namespace)
        labels = dict(resource.metadata.labels)
        if args.remove:
            if key not in labels:
                raise UsageError(f"{what} has no label {quoted(key)}")
            del labels[key]
        elif key in labels and labels[key] != value and not args.overwrite:
            raise UsageError(f"{what} already has {key}={labels[key]}; use --overwrite to change it")
        else:
            labels[key] = value
        meta = resource.metadata.model_copy(update={"labels": labels})
        try:
            store.update(resource.model_copy(update={"metadata": meta}))
        except Conflict:
            continue
        done = f"removed label {key} from" if args.remove else f"set label {key}={value} on"
        print(f"Successfully {done} {what}")
        return 0
    raise UsageError(f"{what} kept changing under us; try again")


def cmd_version(args: argparse.Namespace) -> int:
    print(f"Client Version:    v{__version__}")
    try:
        info = open_store(args).get(ClusterInformation, "default")
        print(f"Cluster Version:   {info.spec.calico_version or 'unknown'}")
        print(f"Cluster Type:      {info.spec.cluster_type or 'unknown'}")
    except NotFound:
        print("Cluster Version:   unknown (no ClusterInformation yet)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="felidctl", description="Manage felid resources in the datastore.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, handler: Callable[[argparse.Namespace], int], help_text: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        add_datastore_flags(p)
        return p

    for name, handler, text in (
        ("apply", cmd_apply, "Create or replace resources from a file (- for stdin)."),
        ("create", cmd_create, "Create resources from a file; fails if one exists."),
        ("replace", cmd_replace, "Replace existing resources from a file."),
    ):
        p = command(name, handler, text)
        p.add_argument("-f", "--filename", required=True, metavar="FILE")
        if name == "create":
            p.add_argument("--skip-exists", action="store_true", help="leave resources that exist alone")

    p = command("get", cmd_get, "Show resources of one kind.")
    p.add_argument("kind", metavar="KIND")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("-o", "--output", choices=("ps", "wide", "yaml", "json"), default="ps")
    p.add_argument("-n", "--namespace", default="default")
    p.add_argument("-A", "--all-namespaces", action="store_true")

    p = command("delete", cmd_delete, "Delete resources by kind and name, or those named in a file.")
    p.add_argument("kind", nargs="?", metavar="KIND")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("-f", "--filename", metavar="FILE")
    p.add_argument("-n", "--namespace", default="default")
    p.add_argument(
        "--skip-not-exists", action="store_true", help="do not fail on resources that do not exist"
    )

    p = command("label", cmd_label, "Set or remove a label on one resource (calicoctl label).")
    p.add_argument("kind", metavar="KIND")
    p.add_argument("name", metavar="NAME")
    p.add_argument("label", metavar="KEY=VALUE | KEY")
    p.add_argument("--remove", action="store_true", help="remove the label KEY")
    p.add_argument("--overwrite", action="store_true", help="change the value of a label that is set")
    p.add_argument("-n", "--namespace", default="default")

    command("version", cmd_version, "Show the client and cluster versions.")
    add_ipam_parser(sub, add_datastore_flags, open_store)
    add_node_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
        return code
    except DocumentError as exc:
        print(f"felidctl: {exc}", file=sys.stderr)
    except ValidationFailed as exc:
        print(f"felidctl: invalid setting: {exc}", file=sys.stderr)
    except (UnknownKind, UsageError) as exc:
        print(f"felidctl: {exc}", file=sys.stderr)
    except (NotFound, AlreadyExists) as exc:
        print(f"felidctl: {exc}", file=sys.stderr)
    except DatastoreError as exc:
        print(f"felidctl: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())

"""``felid-bgp`` / ``python -m bgp``: settings from flags and the environment, then run the agent."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from bgp.config import BGPSettings
from bgp.launch import agent_from, log_level
from datastore.daemon import until_signalled
from datastore.errors import DatastoreError, InvalidName, NotFound, ValidationFailed
from datastore.etcd import EtcdKV
from datastore.keys import KeyLayout
from datastore.models import Node
from datastore.models.node import mark_reflector
from datastore.settings import add_flags
from datastore.store import ResourceStore


def make_reflector(store: ResourceStore, name: str, cluster_id: str, address: str | None) -> Node:
    """This Node as a route reflector: its cluster ID and a label BGPPeers can select it by."""
    try:
        node = store.get(Node, name)
    except NotFound:
        node = Node.model_validate({"metadata": {"name": name}})
    data = node.model_dump(by_alias=True, exclude_none=True)
    bgp = data["spec"].setdefault("bgp", {})
    if "ipv4Address" not in bgp:
        if address is None:
            raise ValidationFailed(f"Node {name}", "has no BGP address: give --address (192.0.2.10/24)")
        bgp["ipv4Address"] = address
    mark_reflector(data, cluster_id)
    return store.apply(Node.model_validate(data))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="felid-bgp", description="felid's BGP agent (ExaBGP underneath)")
    add_flags(parser, BGPSettings)
    args = parser.parse_args(argv)
    try:
        agent = agent_from(dict(os.environ), {name: getattr(args, name) for name in BGPSettings.model_fields})
    except (ValidationFailed, InvalidName) as exc:
        print(f"felid-bgp: invalid setting: {exc}", file=sys.stderr)
        return 1
    settings = agent.settings
    logging.basicConfig(level=log_level(agent), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pyroute2").setLevel(logging.INFO)
    if settings.route_reflector and settings.cluster_id is not None:
        kv = EtcdKV(agent.datastore)
        try:
            store = ResourceStore(kv, KeyLayout(agent.datastore.etcd_prefix))
            make_reflector(store, agent.node, settings.cluster_id, settings.address)
        except (ValidationFailed, DatastoreError) as exc:
            print(f"felid-bgp: cannot make {agent.node} a route reflector: {exc}", file=sys.stderr)
            return 1
        finally:
            kv.close()
    # SIGTERM: exit 0 with ExaBGP stopped and reaped and the routes left in the kernel.
    return asyncio.run(until_signalled(agent.run, logging.getLogger("bgp")))


if __name__ == "__main__":
    sys.exit(main())

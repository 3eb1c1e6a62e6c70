"""What each session carries (own prefixes, RFC 4456 reflection) and the fewest ExaBGP lines to get there."""

from __future__ import annotations

from bgp.adjribout import NLRI_PER_COMMAND, Advert, commands, desired
from bgp.calc import BGPPlan, Session
from bgp.rib import Path

CLIENT_A, CLIENT_B, OTHER_RR, EXTERNAL = "198.51.100.1", "198.51.100.2", "198.51.100.9", "192.0.2.1"


def plan(
    cluster_id: str | None = "244.0.0.1", announce: frozenset[str] = frozenset({"10.0.9.0/26"})
) -> BGPPlan:
    return BGPPlan(
        node="rr",
        router_id="198.51.100.10",
        local_as=64512,
        listen_port=179,
        cluster_id=cluster_id,
        sessions=frozenset(
            {
                Session(CLIENT_A, 64512, "route reflector client", rr_client=True),
                Session(CLIENT_B, 64512, "route reflector client", rr_client=True),
                Session(OTHER_RR, 64512, "route reflector"),
                Session(EXTERNAL, 65001, "global"),
            }
        ),
        announce=announce,
    )


BEST = {
    "10.0.1.0/26": (CLIENT_A, Path(CLIENT_A)),
    "10.0.2.0/26": (OTHER_RR, Path("198.51.100.20", "198.51.100.20", ("244.0.0.2",))),
    "198.18.0.0/15": (EXTERNAL, Path(EXTERNAL)),
}


def test_reflection_follows_rfc4456() -> None:
    out = desired(plan(), BEST)
    own = Advert()
    from_client = Advert(CLIENT_A, CLIENT_A, ("244.0.0.1",))
    # A client's route goes to every other iBGP peer, never back to it, never to eBGP.
    assert out[CLIENT_B]["10.0.1.0/26"] == from_client
    assert out[OTHER_RR]["10.0.1.0/26"] == from_client
    assert "10.0.1.0/26" not in out[CLIENT_A]
    # A non-client's route goes to clients only, keeping its originator, our cluster id prepended.
    reflected = Advert("198.51.100.20", "198.51.100.20", ("244.0.0.1", "244.0.0.2"))
    assert out[CLIENT_A]["10.0.2.0/26"] == reflected
    assert "10.0.2.0/26" not in out[OTHER_RR]
    # eBGP-learned routes are not reflected; our own prefix goes to everyone with next hop self.
    assert all("198.18.0.0/15" not in table for table in out.values())
    assert all(table["10.0.9.0/26"] == own for table in out.values())
    assert set(out[EXTERNAL]) == {"10.0.9.0/26"}


def test_no_reflection_without_a_cluster_id() -> None:
    out = desired(plan(cluster_id=None), BEST)
    assert all(set(table) == {"10.0.9.0/26"} for table in out.values())


def test_commands_group_by_attributes_and_peers_and_withdraw_first() -> None:
    wanted = desired(plan(cluster_id=None, announce=frozenset({"10.0.9.0/26", "10.0.8.0/26"})), {})
    lines = commands({}, wanted)
    peers = " , ".join(f"neighbor {p}" for p in sorted([CLIENT_A, CLIENT_B, EXTERNAL, OTHER_RR]))
    assert lines == [f"{peers} announce attributes next-hop self nlri 10.0.8.0/26 10.0.9.0/26"]
    assert commands(wanted, wanted) == []
    smaller = {peer: {p: a for p, a in table.items() if p != "10.0.8.0/26"} for peer, table in wanted.items()}
    assert commands(wanted, smaller) == [f"{peers} withdraw attributes nlri 10.0.8.0/26"]
    # Only the peer that lacks a prefix is given it.
    partial = {peer: dict(table) for peer, table in wanted.items()}
    del partial[CLIENT_A]["10.0.9.0/26"]
    assert commands(partial, wanted) == [
        f"neighbor {CLIENT_A} announce attributes next-hop self nlri 10.0.9.0/26"
    ]


def test_long_announcements_are_split() -> None:
    many = frozenset(f"10.{i // 256}.{i % 256}.0/24" for i in range(NLRI_PER_COMMAND + 1))
    lines = commands({}, desired(plan(cluster_id=None, announce=many), {}))
    assert len(lines) == 2
    assert sum(len(line.split(" nlri ")[1].split()) for line in lines) == NLRI_PER_COMMAND + 1


def test_export_filters_communities_and_next_hop_modes() -> None:
    from datastore.models import BGPFilter

    rules = BGPFilter.model_validate(
        {
            "metadata": {"name": "f"},
            "spec": {"exportV4": [{"cidr": "10.0.1.0/26", "matchOperator": "Equal", "action": "Reject"}]},
        }
    ).spec.export_v4
    sessions = {
        Session(CLIENT_A, 64512, "node-to-node mesh"),
        Session(CLIENT_B, 64512, "node-to-node mesh"),
        Session(EXTERNAL, 65001, "global", next_hop="Keep"),
        Session("192.0.2.2", 65001, "global", export_rules=tuple(rules)),
    }
    base = plan(cluster_id=None)
    node = BGPPlan(
        **{
            **base.__dict__,
            "sessions": frozenset(sessions),
            "exported_pools": frozenset({"10.0.0.0/16"}),
            "communities": (("10.0.9.0/24", ("64512:7", "64512:7:7")),),
        }
    )
    best = {
        "10.0.1.0/26": (CLIENT_A, Path(CLIENT_A, communities=("64512:5",))),
        "198.18.0.0/15": (EXTERNAL, Path(EXTERNAL)),
    }
    out = desired(node, best)
    own = Advert(communities=("64512:7", "64512:7:7"))
    assert all(table["10.0.9.0/26"] == own for table in out.values())
    assert own.attributes() == "next-hop self community [ 64512:7 ] large-community [ 64512:7:7 ]"
    # iBGP-learned pool routes go to eBGP peers (not to iBGP ones): next hop kept when asked ...
    assert out[EXTERNAL]["10.0.1.0/26"] == Advert(CLIENT_A, communities=("64512:5",))
    assert "10.0.1.0/26" not in out[CLIENT_B]
    # ... and never past an export filter that rejects them.
    assert set(out["192.0.2.2"]) == {"10.0.9.0/26"}
    # eBGP-learned routes and routes outside the pools are not passed on.
    assert all("198.18.0.0/15" not in table for table in out.values())
    # On a reflector, nextHopMode Self puts itself as the next hop of what it reflects.
    selfish = BGPPlan(
        **{
            **plan().__dict__,
            "sessions": frozenset(
                {
                    Session(CLIENT_A, 64512, "route reflector client", rr_client=True),
                    Session(CLIENT_B, 64512, "route reflector client", rr_client=True, next_hop="Self"),
                }
            ),
        }
    )
    assert desired(selfish, BEST)[CLIENT_B]["10.0.1.0/26"].next_hop == "self"

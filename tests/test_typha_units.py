"""typha's pure parts: frames and hellos, the update log and snapshots, fair shares, identities,
and the snapshot diff every reconnect goes through."""

from __future__ import annotations

import pytest
import zstandard

from datastore.errors import ValidationFailed
from datastore.keys import SyncerType
from datastore.settings import resolve
from datastore.syncer import KnownKeys, Update
from typha import protocol
from typha.cache import FellBehind, SyncerCache, UpdateLog
from typha.config import TyphaClientSettings, TyphaSettings
from typha.protocol import ClientHello, Kind, ProtocolError, ServerHello
from typha.registry import Registration, fair_share, room_elsewhere
from typha.tls import refusal

FELIX = SyncerType.FELIX.prefixes("/felid")
NODE = "/felid/resources/v3/projectcalico.org/nodes/"
BLOCK = "/felid/ipam/v2/assignment/ipv4/block/"


def parse(data: bytes) -> tuple[int, dict[str, object]]:
    length, kind, flags = protocol.HEADER.unpack(data[: protocol.HEADER.size])
    assert len(data) == protocol.HEADER.size + length
    return kind, protocol.decode(flags, data[protocol.HEADER.size :])


def test_frames_round_trip_plain_and_compressed() -> None:
    kvs = [(f"{NODE}n{i}", b"x" * 100, i) for i in range(50)] + [(f"{NODE}gone", None, 99)]
    plain, raw = protocol.kvs_frame(Kind.SNAPSHOT, kvs)
    assert raw == len(plain)
    frames = [plain]
    for codec in protocol.COMPRESSIONS:
        packed, raw_too = protocol.kvs_frame(Kind.SNAPSHOT, kvs, compress=codec)
        assert raw_too == raw and len(packed) < len(plain) / 5, codec
        assert packed[protocol.HEADER.size - 1] == protocol.CODEC_FLAGS[codec]  # the frame names its codec
        frames.append(packed)
    for data in frames:
        kind, body = parse(data)
        assert kind == Kind.SNAPSHOT and protocol.wire_kvs(body) == kvs
    with pytest.raises(ValueError, match="no codec 'snappy'"):
        protocol.kvs_frame(Kind.SNAPSHOT, kvs, compress="snappy")


def test_the_server_compresses_with_its_preferred_codec_of_those_offered() -> None:
    def hello(*offered: str) -> ClientHello:
        return ClientHello("node-1", "felix", "0.1.0", compressions=offered)

    assert hello().common_compression() is None
    assert hello("zlib").common_compression() == "zlib"  # an older client: what it can read
    assert hello("zlib", "zstd").common_compression() == "zstd"  # the server's preference wins
    assert hello("snappy").common_compression() is None
    assert ClientHello("node-1", "felix", "0.1.0").compressions[0] == "zstd"


def test_a_hello_keeps_what_it_knows_and_ignores_the_rest() -> None:
    hello = ClientHello("node-1", "felix", "0.1.0")
    _, body = parse(hello.frame())
    assert ClientHello.parse({**body, "aFieldFromTheFuture": [1, 2]}) == hello
    assert hello.common_protocol() == max(protocol.PROTOCOL_VERSIONS)
    newer = ClientHello("node-1", "felix", "9.0.0", protocols=(1, 7))
    assert newer.common_protocol() == 1
    assert ClientHello("n", "felix", "9.0.0", protocols=(7,)).common_protocol() is None
    for broken in ({}, {**body, "protocols": "1"}, {**body, "hostname": 5}, {**body, "compressions": [1]}):
        with pytest.raises(ProtocolError):
            ClientHello.parse(broken)


def test_a_server_hello_the_client_cannot_honour_is_refused() -> None:
    good = {"name": "t", "version": "1", "protocol": 1, "pingInterval": 10.0, "compression": "zlib"}
    assert ServerHello.parse(good).compression == "zlib"
    for bad in ({**good, "protocol": 7}, {**good, "compression": "snappy"}, {**good, "pingInterval": 0}):
        with pytest.raises(ProtocolError):
            ServerHello.parse(bad)


def test_corrupt_bodies_are_protocol_errors() -> None:
    with pytest.raises(ProtocolError):
        protocol.decode(protocol.CODEC_FLAGS["zlib"], b"not zlib")
    with pytest.raises(ProtocolError, match="zstd body that does not decompress"):
        protocol.decode(protocol.CODEC_FLAGS["zstd"], b"not zstd")
    bomb = zstandard.ZstdCompressor().compress(b"\0" * (protocol.MAX_BODY + 1))
    with pytest.raises(ProtocolError, match="over the"):
        protocol.decode(protocol.CODEC_FLAGS["zstd"], bomb)
    with pytest.raises(ProtocolError):
        protocol.decode(0, b"\xc1")
    with pytest.raises(ProtocolError):
        protocol.wire_kvs({"kvs": (("k", "text, not bytes", 1),)})
    with pytest.raises(ProtocolError, match="kvs missing"):
        protocol.wire_kvs({"kvs": "not an array"})


def test_the_log_serves_from_a_cursor_and_forgets_what_nobody_needs() -> None:
    log = UpdateLog()
    for i in range(10):
        log.append(i, bytes([i]) * 10, float(i), [(f"k{i}", b"v", i)])
    assert log.since(7) == [bytes([7]) * 10, bytes([8]) * 10, bytes([9]) * 10]
    assert log.since(10) == []
    assert log.bytes_since(7) == 30 and log.bytes_since(0) == 100
    log.trim(5)
    assert (log.base, log.head, log.bytes) == (5, 10, 50)
    with pytest.raises(FellBehind):
        log.since(4)
    assert log.since(0 + 5, max_bytes=15) == [bytes([5]) * 10, bytes([6]) * 10]
    # A stretch as one frame: its entries' changes in order; one entry is its own frame.
    frame, entries = log.stretch(7)
    assert entries == 3 and parse(frame) == (
        Kind.UPDATES,
        {"kvs": tuple((f"k{i}", b"v", i) for i in (7, 8, 9))},
    )
    assert log.stretch(9) == (bytes([9]) * 10, 1) and log.stretch(10) == (b"", 0)


def test_the_cache_keeps_its_syncer_types_keys_and_logs_one_frame_per_batch() -> None:
    cache = SyncerCache(FELIX)
    batch = [
        Update(f"{NODE}a", b"1", 5),
        Update(f"{BLOCK}10.0.0.0-26", b"{}", 6),
        Update(f"{NODE}b", b"2", 7),
    ]
    (entry,) = cache.apply(batch, 0.0)
    assert entry.kvs == 2 and entry.revision == 7
    assert cache.values == {f"{NODE}a": (5, b"1"), f"{NODE}b": (7, b"2")}
    # A deletion of a key it never had, or only keys of another type: nothing to send.
    assert cache.apply([Update(f"{NODE}never", None, 8)], 0.0) == []
    assert cache.apply([Update(f"{BLOCK}10.0.0.64-26", b"{}", 9)], 0.0) == []
    assert cache.revision == 9 and cache.log.head == 1
    # A resync's difference of thousands of keys: frames of a bounded size, in order.
    entries = cache.apply([Update(f"{NODE}r{i}", b"v", 100 + i) for i in range(2500)], 1.0)
    assert [e.kvs for e in entries] == [1000, 1000, 500] and entries[-1].revision == 2599
    # Before the first sync nothing is logged: no client can be waiting.
    assert cache.apply([Update(f"{NODE}early", b"v", 3000)], 2.0, logged=False) == []
    assert cache.values[f"{NODE}early"] == (3000, b"v") and cache.log.head == 4


def test_a_snapshot_is_reused_while_the_log_since_it_is_small() -> None:
    cache = SyncerCache(FELIX)
    cache.apply([Update(f"{NODE}n{i}", b"v" * 200, i + 1) for i in range(100)], 0.0)
    first = cache.snapshot("zstd")
    assert cache.snapshot("zstd") is first and (cache.generated, cache.reused) == (1, 1)
    cache.apply([Update(f"{NODE}n0", b"w" * 200, 200)], 1.0)
    assert cache.snapshot("zstd") is first  # one small update: replayed from the log
    for i in range(50):
        cache.apply([Update(f"{NODE}n{i}", b"z" * 200, 300 + i)], 2.0)
    second = cache.snapshot("zstd")
    assert second is not first and second.seq == cache.log.head and cache.generated == 2
    kvs = [kv for data in second.frames for kv in protocol.wire_kvs(parse(data)[1])]
    assert {k: (r, v) for k, v, r in kvs} == cache.values
    cache.log.trim(cache.log.head)  # the log no longer holds what came after it: a new one
    cache.apply([Update(f"{NODE}n1", b"y", 400)], 3.0)
    cache.log.trim(cache.log.head)
    assert cache.snapshot("zstd") is not second


def test_fair_share_splits_every_nodes_clients_with_slack() -> None:
    assert fair_share(nodes=100, typhas=3, max_connections=10000) == 74  # 200 clients / 3, +10%
    assert fair_share(nodes=1000, typhas=1, max_connections=500) == 500
    assert fair_share(nodes=0, typhas=5, max_connections=10) == 1
    full = Registration("a", "192.0.2.1", 5473, 74, 74)
    roomy = Registration("b", "192.0.2.2", 5473, 10, 74)
    assert not room_elsewhere([full]) and room_elsewhere([full, roomy])
    assert Registration.decode(roomy.encode()) == roomy and Registration.decode(b"{") is None


def test_a_peer_must_have_the_allowed_cn_or_uri_san() -> None:
    cert = {
        "subject": ((("commonName", "typha-client"),),),
        "subjectAltName": (("DNS", "node-1"), ("URI", "spiffe://cluster/felix")),
    }
    assert refusal(cert, "typha-client", None) is None
    assert refusal(cert, None, "spiffe://cluster/felix") is None
    assert refusal(cert, "other", "spiffe://cluster/felix") is None
    why = refusal(cert, "typha-server", None)
    assert why is not None and "'typha-client'" in why and "'typha-server'" in why
    assert refusal(None, "x", None) is not None


def test_a_fresh_snapshot_becomes_only_its_difference() -> None:
    known = KnownKeys()
    first = known.diff({"c": ("c", b"3", 2), "b": ("b", b"2", 2), "a": ("a", b"1", 1)}, 3)
    assert first == [Update("a", b"1", 1), Update("b", b"2", 2), Update("c", b"3", 2)]  # revision, key
    assert all(type(u) is Update for u in first) and len(known) == 3
    # After a reconnect: a unchanged, b changed, c gone, d new.
    again = known.diff({"a": ("a", b"1", 1), "b": ("b", b"22", 5), "d": ("d", b"4", 6)}, 6)
    assert again == [Update("c", None, 6), Update("b", b"22", 5), Update("d", b"4", 6)]
    assert all(type(u) is Update for u in again)
    assert known.apply("b", b"22", 5) is None  # already delivered by the snapshot
    assert known.apply("e", None, 7) is None  # a deletion of what the consumer never had


def test_settings_refuse_half_a_tls_setup_and_addresses_without_a_port() -> None:
    with pytest.raises(ValidationFailed, match=r"TLS needs all of .* \(only ca_file given\)"):
        resolve(TyphaSettings, environ={"TYPHA_CAFILE": "/etc/hostname"})
    files = {TyphaClientSettings.env_name(f): "/etc/hostname" for f in ("typha_ca_file", "typha_cert_file")}
    files[TyphaClientSettings.env_name("typha_key_file")] = "/etc/hostname"
    with pytest.raises(ValidationFailed, match="set typha_cn or typha_uri_san"):
        resolve(TyphaClientSettings, environ=files)
    with pytest.raises(ValidationFailed, match=r"FELID_TYPHA_ADDRS.*'192\.0\.2\.1' is not host:port"):
        resolve(TyphaClientSettings, environ={"FELID_TYPHA_ADDRS": "192.0.2.1:5473,192.0.2.1"})
    assert resolve(TyphaClientSettings, environ={"FELID_TYPHA_ADDRS": "192.0.2.1:5473"}).enabled

"""The nats sink under real pipelines and real nats-server processes with JetStream: several
hosts into one stream, a server killed and restarted mid-run, a node of a three-node
cluster killed and restarted under a replicated stream. What `consume` reads back is
compared, event by event, with what each pipeline read (its jsonl reference file)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import StartPipeline, needs_root, wait_for
from helpers.nats_fleet import (
    Host,
    by_host,
    consume,
    sink_stats,
    start_host,
    unique,
    write_config,
)
from helpers.nats_servers import NatsServer, cluster, needs_nats_server

pytestmark = [needs_root, needs_nats_server]


@pytest.fixture
def servers() -> Iterator[list[NatsServer]]:
    """Every server a test starts, stopped at its end however it ended."""
    started: list[NatsServer] = []
    yield started
    for s in started:
        s.stop()


def one_server(tmp: Path, servers: list[NatsServer]) -> NatsServer:
    s = NatsServer(tmp, "single").start()
    servers.append(s)
    s.wait_healthy()
    return s


def stop_and_check(host: Host) -> dict[str, Any]:
    """Stop the host's pipeline; produced = read = delivered + dropped at the nats sink."""
    assert host.proc.stop() == 0, host.proc.stderr()
    final, nats = sink_stats(host.proc)
    assert final["produced"] == final["read"], final
    assert nats["delivered"] + nats["dropped_total"] == final["read"], final
    assert final["sinks"]["jsonl"]["delivered"] == final["read"], final
    assert nats["failed"] is None, final
    return final


def assert_exactly(events: list[dict[str, Any]], hosts: list[Host], *,
                   leader_changed: bool = False) -> None:
    """Each host's events in the stream are exactly those it read, in its order, once.
    After a change of the stream's leader, the order is `seq` order once sorted: a message
    in flight lost with the old leader is stored after later ones (docs/sinks.md, Order)."""
    got = by_host(events)
    assert sorted(got) == sorted(h.host_id for h in hosts)
    for h in hosts:
        ref, mine = h.reference(), got[h.host_id]
        if leader_changed:
            mine = sorted(mine, key=lambda e: int(e["seq"]))
        assert mine == ref, (h.host_id, len(mine), len(ref))
    keys = [(e["host"], e["seq"]) for e in events]
    assert len(keys) == len(set(keys)), "an event stored twice"


def test_two_hosts_one_stream(tmp_path: Path, pin_root: Path, pipeline_proc: StartPipeline,
                              servers: list[NatsServer]) -> None:
    srv = one_server(tmp_path, servers)
    stream, prefix = unique("T1_"), unique("t1")
    cfg = write_config(tmp_path / "c.toml", {"stream": stream})
    hosts = [start_host(pipeline_proc, tmp_path, pin_root, hid, cfg, srv.url,
                        f"{prefix}.ev.{{host}}") for hid in ("alpha", "beta", "gamma")]
    # all three at once, so their messages interleave in the stream
    creators = [h.create(f"{h.host_id}-f", n) for h, n in zip(hosts, (3000, 2000, 1000),
                                                               strict=True)]
    for c in creators:
        assert c.wait(120) == 0
    for h, n in zip(hosts, (3000, 2000, 1000), strict=True):
        wait_for(lambda h=h, n=n: len(h.ref.read_bytes().splitlines()) >= n, 30, "events")
        final = stop_and_check(h)
        assert final["read"] == n and final["sinks"]["nats"]["delivered"] == n, final
    events, _ = consume(srv.url, f"{prefix}.ev.>")
    assert_exactly(events, hosts)
    for h in hosts:
        names = [Path(e["name"]).name for e in events if e["host"] == h.host_id]
        assert names == [f"{h.host_id}-f-{i:06d}" for i in range(len(names))]
        assert {e["comm"] for e in events if e["host"] == h.host_id} == {h.comm}
        assert len({e["pid"] for e in events if e["host"] == h.host_id}) == 1
    # a second consumer under the same durable name has nothing left to read
    again, _ = consume(srv.url, f"{prefix}.ev.>")
    assert again == []


def test_server_killed_and_restarted(tmp_path: Path, pin_root: Path,
                                     pipeline_proc: StartPipeline,
                                     servers: list[NatsServer]) -> None:
    srv = one_server(tmp_path, servers)
    stream, prefix = unique("T2_"), unique("t2")
    cfg = write_config(tmp_path / "c.toml", {"stream": stream, "backoff_max": 0.2})
    host = start_host(pipeline_proc, tmp_path, pin_root, "h1", cfg, srv.url,
                      f"{prefix}.ev.{{host}}")
    # the server dies while a creator is still going: messages in flight lose their acks
    creator = host.create("a", 6000)
    wait_for(lambda: host.ref.exists() and len(host.ref.read_bytes().splitlines()) >= 1500,
             30, "the first events")
    srv.kill()
    assert creator.wait(120) == 0
    host.make("b", 2000)  # the server is down: held in the sink's buffer
    srv.start()
    srv.wait_healthy()
    host.make("c", 3000)
    wait_for(lambda: len(host.ref.read_bytes().splitlines()) >= 11000, 30, "events")
    final = stop_and_check(host)
    nats = final["sinks"]["nats"]
    assert final["read"] == 11000, final
    assert nats["dropped_total"] == 0, final  # 100000 events of buffer: none to drop
    events, _ = consume(srv.url, f"{prefix}.ev.>")
    assert_exactly(events, [host])
    assert len(events) == nats["delivered"]
    text = host.proc.stderr()
    assert "connection to" in text and "lost" in text and "reconnected" in text, text


def test_server_hangs_acknowledgements_time_out(tmp_path: Path, pin_root: Path,
                                                pipeline_proc: StartPipeline,
                                                servers: list[NatsServer]) -> None:
    """A server that stops answering (SIGSTOP) keeps the bytes already sent to it and stores
    them once it runs again, after the sink has given up on their acknowledgements and sent
    them again on a new connection: only the de-duplication ids keep them from being
    stored twice."""
    srv = one_server(tmp_path, servers)
    stream, prefix = unique("T4_"), unique("t4")
    cfg = write_config(tmp_path / "c.toml", {"stream": stream, "ack_timeout": 1.0,
                                             "connect_timeout": 0.5, "backoff_max": 0.2})
    host = start_host(pipeline_proc, tmp_path, pin_root, "h1", cfg, srv.url,
                      f"{prefix}.ev.{{host}}")
    creator = host.create("a", 6000)
    wait_for(lambda: host.ref.exists() and len(host.ref.read_bytes().splitlines()) >= 1000,
             30, "the first events")
    srv.freeze()
    wait_for(lambda: "no acknowledgement within 1 s" in host.proc.stderr(), 30,
             "the acknowledgement timeout")
    srv.thaw()
    assert creator.wait(120) == 0
    host.make("b", 2000)
    wait_for(lambda: len(host.ref.read_bytes().splitlines()) >= 8000, 30, "events")
    final = stop_and_check(host)
    assert final["read"] == 8000 and final["sinks"]["nats"]["dropped_total"] == 0, final
    events, _ = consume(srv.url, f"{prefix}.ev.>")
    assert_exactly(events, [host])


def test_cluster_node_killed_and_restarted(tmp_path: Path, pin_root: Path,
                                           pipeline_proc: StartPipeline,
                                           servers: list[NatsServer]) -> None:
    nodes = cluster(tmp_path, 3)
    for n in nodes:
        servers.append(n.start())
    for n in nodes:
        n.wait_healthy()
    url = ",".join(n.url for n in nodes)
    stream, prefix = unique("T3_"), unique("t3")
    cfg = write_config(tmp_path / "c.toml", {"stream": stream, "replicas": 3,
                                             "backoff_max": 0.2})
    hosts = [start_host(pipeline_proc, tmp_path, pin_root, hid, cfg, url,
                        f"{prefix}.ev.{{host}}") for hid in ("east", "west")]
    leader = stream_leader(nodes, stream)
    creators = [h.create("a", 4000) for h in hosts]
    wait_for(lambda: all(h.ref.exists() and len(h.ref.read_bytes().splitlines()) >= 1000
                         for h in hosts), 30, "the first events")
    leader.kill()  # the stream's leader: the others must elect one and go on
    for c in creators:
        assert c.wait(120) == 0
    for h in hosts:
        h.make("b", 2000)
    leader.start()
    leader.wait_healthy()
    for h in hosts:
        h.make("c", 2000)
    for h in hosts:
        wait_for(lambda h=h: len(h.ref.read_bytes().splitlines()) >= 8000, 30, "events")
        final = stop_and_check(h)
        assert final["read"] == 8000, final
        assert final["sinks"]["nats"]["dropped_total"] == 0, final
    # The two nodes that never died hold the stream (a quorum of its three copies): they
    # must agree on it. The killed node's own copy is nats-server's business: a SIGKILL
    # drops the writes its file store had not flushed, and nats-server 2.9 can leave that
    # copy with a hole that a consumer it leads would read from. So the restarted node is
    # stopped before reading back, and the stream is read through the survivors.
    survivors = [n for n in nodes if n is not leader]
    try:
        wait_for(lambda: len({stream_state(n, stream) for n in survivors}) == 1, 60, "")
    except AssertionError:
        raise AssertionError(f"the surviving copies of the stream differ: "
                             f"{[(n.name, stream_state(n, stream)) for n in survivors]}"
                             ) from None
    leader.stop()

    def survivors_lead() -> bool:
        try:
            return stream_leader(survivors, stream) in survivors
        except AssertionError:
            return False

    wait_for(survivors_lead, 60, "a stream leader among the surviving nodes")
    # Just after the leader change a new consumer can stay without messages past the
    # reader's 1.5 s idle exit; a stream that holds 16,000 events is not empty, so an
    # empty read is read again (the read that returns is checked whole).
    events: list[dict[str, Any]] = []
    for _ in range(5):
        events, _ = consume(",".join(n.url for n in survivors), f"{prefix}.ev.>")
        if events:
            break
    assert_exactly(events, hosts, leader_changed=True)


def stream_state(node: NatsServer, stream: str) -> tuple[int, int, int] | None:
    """(messages, bytes, last sequence) of `node`'s own copy of `stream` (its /jsz)."""
    jsz = node.varz("jsz?streams=true&accounts=true")
    for acc in jsz.get("account_details") or []:
        for s in acc.get("stream_detail") or []:
            if s.get("name") == stream:
                st = s.get("state") or {}
                return (int(st.get("messages", 0)), int(st.get("bytes", 0)),
                        int(st.get("last_seq", 0)))
    return None


def stream_leader(nodes: list[NatsServer], stream: str) -> NatsServer:
    """The node that leads `stream` (from any node's /jsz)."""
    for n in nodes:
        jsz = n.varz("jsz?streams=true&accounts=true")
        for acc in jsz.get("account_details") or []:
            for s in acc.get("stream_detail") or []:
                if s.get("name") == stream:
                    leader = (s.get("cluster") or {}).get("leader")
                    for m in nodes:
                        if m.name == leader:
                            return m
    raise AssertionError(f"no leader found for {stream}")

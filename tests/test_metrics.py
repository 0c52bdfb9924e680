"""The Prometheus endpoint (`--metrics HOST:PORT`) of a real pipeline process, scraped over
real HTTP on loopback: the figures parsed with prometheus_client's own parser and checked
exactly against the run's final statistics; /healthz while healthy and once every sink has
failed; kernel drops and reader lag with a reader held up by a full pipe; scrapers that
stall; addresses that are bad or taken."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    PipelineProc,
    StartPipeline,
    assert_one_line,
    needs_root,
    run_pipeline,
    wait_for,
)
from helpers import creator
from helpers.creator import create
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from pipeline.metrics_http import MAX_CLIENTS

pytestmark = needs_root

P = "arena_pipeline_"


def new_comm() -> str:
    return creator.new_comm("apm")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def get(port: int, path: str) -> tuple[int, str, str]:
    """(status, content type, body) of GET http://127.0.0.1:port/path."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode()


def scrape(port: int) -> Samples:
    status, ctype, body = get(port, "/metrics")
    assert (status, ctype) == (200, "text/plain; version=0.0.4; charset=utf-8")
    out: Samples = {}
    for fam in text_string_to_metric_families(body):
        for s in fam.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in out, key
            out[key] = s.value
    return out


def val(samples: Samples, name: str, **labels: str) -> float:
    return samples[(P + name, frozenset(labels.items()))]


def by_name(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in samples.items() if n == P + name}


def check_against_final(samples: Samples, final: dict[str, Any], *,
                        accounting_only: bool = False) -> None:
    """Every figure the final statistics hold, read back from a scrape, exactly; with
    accounting_only, the events' accounting alone (produced, read, delivered, dropped)."""
    assert val(samples, "events_produced_total") == final["produced"]
    assert val(samples, "events_read_total") == final["read"]
    want_dropped: dict[frozenset[tuple[str, str]], float] = {}
    for reason, n in final["dropped"].items():
        place = "kernel" if reason.startswith("kernel_") else "reader"
        want_dropped[frozenset({"place": place, "sink": "", "reason": reason}.items())] = n
    for sink, st in final["sinks"].items():
        assert val(samples, "events_delivered_total", sink=sink) == st["delivered"]
        assert val(samples, "sink_failed", sink=sink) == (st["failed"] is not None)
        for reason, n in st["dropped"].items():
            want_dropped[frozenset({"place": "sink", "sink": sink, "reason": reason}.items())] = n
    assert by_name(samples, "events_dropped_total") == want_dropped
    assert set(by_name(samples, "events_delivered_total")) == {
        frozenset({"sink": s}.items()) for s in final["sinks"]}
    if accounting_only:
        return
    for name, key in (("queue_high_water_events", "queue_high_water"),
                      ("queue_capacity_events", "queue_capacity"),
                      ("arena_resident_bytes", "arena_resident_bytes"),
                      ("reader_batches_total", "batches"), ("reader_sleeps_total", "sleeps"),
                      ("reader_naps_total", "naps"),
                      ("doorbell_wakeups_total", "wakeups")):
        assert val(samples, name) == final[key], name


def build_info(samples: Samples) -> dict[str, str]:
    (labels,) = by_name(samples, "build_info")
    return dict(labels)


def base(pin_root: Path, comm: str, port: int, linger: bool = True) -> list[str]:
    """A run filtered to comm, with its endpoint on port; with linger, it serves its final
    figures after its final statistics until a second SIGINT."""
    return ["--trigger", "tracepoint", "--filter-comm", comm, "--pin-dir", str(pin_root),
            "--metrics", f"127.0.0.1:{port}", *(["--metrics-linger", "60"] if linger else [])]


def final_line(pl: PipelineProc) -> dict[str, Any]:
    wait_for(lambda: any(ln.startswith("pipeline: final ") for ln in pl.lines), 60,
             "the final statistics")
    return pl.final()


@pytest.fixture
def work(tmp_path: Path) -> Path:
    d = tmp_path / "work"
    d.mkdir()
    return d


def test_scrapes_while_running_and_after_match_the_final_statistics(
        pipeline_proc: StartPipeline, pin_root: Path, work: Path, tmp_path: Path) -> None:
    comm, port, n = new_comm(), free_port(), 300
    out = tmp_path / "ev.jsonl"
    pl = pipeline_proc(*base(pin_root, comm, port), "--sink", "jsonl,stdout",
                       "--output", str(out))
    assert f"pipeline: metrics: http://127.0.0.1:{port}/metrics and /healthz" in pl.lines
    first = scrape(port)
    assert val(first, "events_produced_total") == 0
    assert build_info(first) == {"version": pl_version(), "kernel": os.uname().release,
                                 "trigger": "tracepoint"}
    assert get(port, "/healthz") == (200, "text/plain; charset=utf-8", "ok\n")
    assert val(first, "healthy") == 1

    create(comm, work, "m", n)

    def delivered() -> bool:
        s = scrape(port)
        return all(val(s, "events_delivered_total", sink=k) == n for k in ("jsonl", "stdout"))

    wait_for(delivered, 30, f"{n} events delivered to both sinks")
    running = scrape(port)
    assert val(running, "events_produced_total") == n
    assert val(running, "events_read_total") == n
    assert val(running, "queue_events") == 0
    assert val(running, "reader_lag_seconds") == 0  # an empty queue has no oldest event
    assert 1 <= val(running, "queue_high_water_events") <= n
    assert val(running, "arena_size_bytes") == 32768 * 4096
    assert get(port, "/healthz")[0] == 200
    # a scraper that asks for OpenMetrics (Prometheus does) gets it, with the same figures
    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics",
                                 headers={"Accept": "application/openmetrics-text; "
                                                    "version=1.0.0"})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.headers["Content-Type"].startswith("application/openmetrics-text")
        om = {(s.name, frozenset(s.labels.items())): s.value
              for f in openmetrics_families(r.read().decode()) for s in f.samples}
    assert om[(P + "events_delivered_total", frozenset({"sink": "jsonl"}.items()))] == n

    pl.proc.send_signal(signal.SIGINT)
    final = final_line(pl)
    assert final["produced"] == final["read"] == n
    assert final["sinks"]["jsonl"]["delivered"] == final["sinks"]["stdout"]["delivered"] == n
    after = scrape(port)  # served while the run lingers, from the final statistics
    check_against_final(after, final)
    check_against_final(running, final, accounting_only=True)  # no event came since
    assert get(port, "/healthz") == (
        503, "text/plain; charset=utf-8",
        "unhealthy: the reader is not running (starting or stopped)\n")
    assert val(after, "healthy") == 0
    pl.proc.send_signal(signal.SIGINT)  # ends the linger
    assert pl.wait() == 0, pl.stderr()
    assert len(out.read_bytes().splitlines()) == n


def pl_version() -> str:
    from pipeline.version import version

    return version()


def test_kernel_drops_and_reader_lag_with_the_reader_held_up(
        pipeline_proc: StartPipeline, pin_root: Path, work: Path) -> None:
    """stdout is a pipe nobody reads: the sink's write blocks, the reader waits on it, the
    queue (64 events) fills and the kernel drops the rest; the figures are then still."""
    comm, port, n, cap = new_comm(), free_port(), 3000, 64
    pl = pipeline_proc(*base(pin_root, comm, port), "--sink", "stdout",
                       "--queue-capacity", str(cap), stdout=subprocess.PIPE)
    create(comm, work, "d", n)
    s = scrape(port)
    drops = {dict(k)["reason"]: v for k, v in by_name(s, "events_dropped_total").items()}
    assert val(s, "events_produced_total") == n
    assert val(s, "queue_events") == cap == val(s, "queue_high_water_events")
    assert drops["kernel_queue_full"] > 0
    assert n == val(s, "events_read_total") + cap + drops["kernel_queue_full"] + drops[
        "kernel_queue_busy"]
    assert val(s, "reader_lag_seconds") > 0  # the oldest event waits while the pipe is full
    assert get(port, "/healthz")[0] == 200  # held up is not failed

    assert pl.proc.stdout is not None
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(pl.proc.stdout.read()),  # type: ignore
                              daemon=True)
    reader.start()
    kept = n - drops["kernel_queue_full"] - drops["kernel_queue_busy"]
    wait_for(lambda: val(scrape(port), "events_delivered_total", sink="stdout") == kept, 30,
             "the held-up events delivered")
    pl.proc.send_signal(signal.SIGINT)
    final = final_line(pl)
    check_against_final(scrape(port), final)
    assert final["dropped"]["kernel_queue_full"] == drops["kernel_queue_full"]
    pl.proc.send_signal(signal.SIGINT)
    assert pl.wait() == 0
    reader.join(10)
    assert len(got[0].splitlines()) == kept


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "full"
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(d)],
                   check=True)
    yield d
    subprocess.run(["umount", "-l", str(d)], check=False)


def test_healthz_503_once_every_sink_has_failed(pipeline_proc: StartPipeline, pin_root: Path,
                                               work: Path, small_tmpfs: Path) -> None:
    comm, port = new_comm(), free_port()
    pl = pipeline_proc(*base(pin_root, comm, port), "--sink", "jsonl",
                       "--output", str(small_tmpfs / "ev.jsonl"))
    assert get(port, "/healthz")[0] == 200
    create(comm, work, "z", 5000)  # ~1.8 MB of JSON into 256 KiB: the disk fills up
    final = final_line(pl)  # the run ends by itself, then lingers
    status, _, body = get(port, "/healthz")
    assert status == 503, body
    assert body.startswith("unhealthy: every sink has failed (jsonl: ")
    assert "No space left on device" in body
    s = scrape(port)
    check_against_final(s, final)
    assert val(s, "sink_failed", sink="jsonl") == 1
    assert val(s, "events_dropped_total", place="sink", sink="jsonl",
               reason="write_failed") == final["sinks"]["jsonl"]["dropped"]["write_failed"] > 0
    pl.proc.send_signal(signal.SIGINT)
    assert pl.wait() == 1, pl.stderr()  # the linger changes nothing in the status


def test_bpf_run_time_absent_unless_enabled(pipeline_proc: StartPipeline, pin_root: Path,
                                           work: Path) -> None:
    on = Path("/proc/sys/kernel/bpf_stats_enabled").read_text().strip() != "0"
    comm, port = new_comm(), free_port()
    pl = pipeline_proc(*base(pin_root, comm, port, linger=False), "--sink", "stdout")
    s = scrape(port)
    assert val(s, "bpf_stats_enabled") == on
    assert bool(by_name(s, "bpf_prog_runs_total")) == on
    pl.close()

    port = free_port()
    pl = pipeline_proc(*base(pin_root, comm, port, linger=False), "--sink", "stdout",
                       "--metrics-bpf-stats")
    before = by_name(scrape(port), "bpf_prog_runs_total")
    create(comm, work, "b", 50)
    wait_for(lambda: val(scrape(port), "events_delivered_total", sink="stdout") == 50, 30,
             "50 events")
    s = scrape(port)
    assert val(s, "bpf_stats_enabled") == 1
    runs = by_name(s, "bpf_prog_runs_total")
    times = by_name(s, "bpf_prog_run_time_seconds_total")
    assert set(runs) == set(times) == set(before)
    prog = frozenset({"program": "exit_openat"}.items())
    # every openat on the machine runs it; the creator's 50 are among them
    assert runs[prog] - before[prog] >= 50
    assert times[prog] > 0


BAD = {
    "no port": ("127.0.0.1", "port"),
    "no host": (":9464", "no host"),
    "port 0": ("127.0.0.1:0", "1-65535"),
    "port too big": ("127.0.0.1:65536", "1-65535"),
    "port not a number": ("127.0.0.1:http", "1-65535"),
    "ipv6 without brackets": ("::1:9464", "brackets"),
    "ipv6 bracket no port": ("[::1]9464", "]:PORT"),
    "not ipv6 in brackets": ("[localhost]:9464", "not an IPv6 address"),
    "space": (" 127.0.0.1:9464", "not an address"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_metrics_address_one_line_exit_2(name: str, pin_root: Path) -> None:
    value, words = BAD[name]
    res = run_pipeline("--metrics", value, "--pin-dir", str(pin_root), "--duration", "1")
    line = assert_one_line(res, "metrics", words)
    assert "HOST:PORT" in line
    assert not pin_root.exists()  # refused before anything was made


def test_metrics_options_need_an_endpoint(pin_root: Path) -> None:
    res = run_pipeline("--metrics-linger", "5", "--pin-dir", str(pin_root), "--duration", "1")
    assert_one_line(res, "metrics_linger", "--metrics HOST:PORT")
    res = run_pipeline("--metrics", "127.0.0.1:9464", "--metrics-linger", "3601",
                       "--duration", "1")
    assert_one_line(res, "--metrics-linger", "<= 3600")


def test_address_not_on_this_machine_exit_2(pin_root: Path) -> None:
    res = run_pipeline("--metrics", "192.0.2.1:9464", "--pin-dir", str(pin_root),
                       "--duration", "1")
    assert_one_line(res, "192.0.2.1:9464", "not an address of this machine")
    assert not pin_root.exists()


def test_port_in_use_exit_2(pin_root: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        res = run_pipeline("--metrics", f"127.0.0.1:{port}", "--pin-dir", str(pin_root),
                           "--duration", "1")
    assert_one_line(res, f"127.0.0.1:{port}", "already in use")
    assert not pin_root.exists()


def test_stalled_scrapers_neither_stall_the_run_nor_pile_up(
        pipeline_proc: StartPipeline, pin_root: Path, work: Path, tmp_path: Path) -> None:
    """MAX_CLIENTS connections that send half a request and wait: the run goes on, one
    more connection is closed unanswered, and each stalled one is answered 408 and closed."""
    comm, port, n = new_comm(), free_port(), 200
    out = tmp_path / "ev.jsonl"
    pipeline_proc(*base(pin_root, comm, port, linger=False), "--sink", "jsonl",
                  "--output", str(out))
    stalled = []
    for _ in range(MAX_CLIENTS):
        c = socket.create_connection(("127.0.0.1", port))
        c.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # no blank line: never complete
        stalled.append(c)
    # accepted after them, within their read timeout: over the bound, closed unanswered
    extra = socket.create_connection(("127.0.0.1", port))
    extra.settimeout(30)
    extra.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        answer = extra.recv(100)
    except ConnectionResetError:
        answer = b""
    assert answer == b"", answer
    extra.close()
    create(comm, work, "s", n)
    wait_for(lambda: out.exists() and len(out.read_bytes().splitlines()) == n, 30,
             f"{n} lines while scrapers stall")
    for c in stalled:
        c.settimeout(30)
        head = c.recv(100)
        assert head.startswith(b"HTTP/1.1 408 "), head
        c.close()
    assert val(scrape(port), "events_delivered_total", sink="jsonl") == n


def raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as c:
        c.sendall(request)
        out = b""
        while chunk := c.recv(65536):
            out += chunk
        return out


def test_only_get_and_head_of_the_two_paths(pipeline_proc: StartPipeline,
                                            pin_root: Path) -> None:
    port = free_port()
    pipeline_proc(*base(pin_root, new_comm(), port, linger=False), "--sink", "stdout")
    head = raw(port, b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"\r\n\r\n"), head
    assert b"Content-Length: 3\r\n" in head  # the length of the GET's body, none sent
    assert raw(port, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.1 200 ")
    for request, status in ((b"POST /metrics HTTP/1.1\r\n\r\n", b"405"),
                            (b"GET / HTTP/1.1\r\n\r\n", b"404"),
                            (b"GET /metrics\r\n\r\n", b"400"),
                            (b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n",
                             b"431")):
        assert raw(port, request).startswith(b"HTTP/1.1 " + status + b" "), request[:30]

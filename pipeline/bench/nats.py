"""Events/s from the pipeline into one local JetStream server, against the jsonl file sink in
the same run: the end-to-end load (bench/e2e.py: getppid in a tight loop on CPU 0, the
pipeline on CPU 1), rounds alternating between the two sinks so that both see the same
machine state. A rate is the events the sink delivered (for nats: acknowledged by the
stream) over the load's own duration; the rest of what the load made was dropped, in the
kernel queue or at the sink, and is reported.

The server is a nats-server on a free loopback port with file storage in a temporary
directory; each round publishes into a stream of its own, deleted after it (the stream's
size limit keeps the store under 1 GiB).

    python -m pipeline.bench.nats [--rounds R] [--seconds S] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from .e2e import Load, fresh_start, pipeline_round
from .tools import program

TARGET = 0.5  # nats events/s at least half the file sink's


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Server:
    def __init__(self, d: Path) -> None:
        exe = shutil.which("nats-server")
        if exe is None:
            raise RuntimeError("nats-server is not installed (make setup installs it)")
        self.port = _free_port()
        store = d / "store"
        self.proc = subprocess.Popen(
            [exe, "-js", "-sd", str(store), "-a", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("nats-server did not start") from None
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _round(tmp: Path, seconds: float, sink_args: list[str], sink: str,
           warm: bool) -> dict[str, Any]:
    load = Load(tmp, seconds, warm)
    try:
        final, info, rest = pipeline_round(load, ["--sink", sink, *sink_args],
                                           f"pipeline ({sink})")
    finally:
        load.kill()
    st = final["sinks"][sink]
    return {"delivered": st["delivered"], "dropped_at_sink": st["dropped_total"],
            "dropped_at_sink_by_reason": st["dropped"],
            "sink_reports": [ln.strip() for ln in rest.splitlines() if "pipeline: sink " in ln],
            "produced": final["produced"], "lost_in_kernel_queue": sum(final["dropped"].values()),
            "load_seconds": info["seconds"],
            "events_per_s": st["delivered"] / info["seconds"]}


def _delete_stream(url: str, stream: str) -> None:
    async def go() -> None:
        import nats

        nc = await nats.connect(url)
        try:
            await nc.jetstream().delete_stream(stream)
        finally:
            await nc.close()

    import asyncio

    asyncio.run(go())


def run_nats_vs_jsonl(seconds: float = 2.0, rounds: int = 3,
                      warm: bool = True) -> dict[str, Any]:
    """Alternating rounds, jsonl first in each; figures per round and their medians."""
    program("loadgen")  # built here when missing
    out: dict[str, Any] = {"load_seconds": seconds, "rounds": [], "target": TARGET}
    with tempfile.TemporaryDirectory(prefix="ap-bench-nats-") as d:
        server = _Server(Path(d))
        try:
            for _ in range(rounds):
                pair: dict[str, Any] = {}
                with tempfile.TemporaryDirectory(prefix="ap-bench-") as r:
                    fresh_start()
                    pair["jsonl"] = _round(Path(r), seconds,
                                           ["--output", str(Path(r) / "e.jsonl")], "jsonl", warm)
                stream = f"BENCH_{uuid.uuid4().hex[:8]}"
                cfg = Path(d) / "nats.toml"
                cfg.write_text(f'[sink.nats]\nstream = "{stream}"\nmax_bytes = {1 << 30}\n'
                               f'subject = "bench.{stream}.{{host}}"\n')
                with tempfile.TemporaryDirectory(prefix="ap-bench-") as r:
                    fresh_start()
                    pair["nats"] = _round(Path(r), seconds,
                                          ["--config", str(cfg), "--nats-url", server.url],
                                          "nats", warm)
                _delete_stream(server.url, stream)
                out["rounds"].append(pair)
        finally:
            server.stop()
    for sink in ("jsonl", "nats"):
        out[f"{sink}_events_per_s_median"] = statistics.median(
            r[sink]["events_per_s"] for r in out["rounds"])
    out["nats_vs_jsonl"] = (out["nats_events_per_s_median"]
                            / max(out["jsonl_events_per_s_median"], 1e-9))
    out["meets_target"] = out["nats_vs_jsonl"] >= TARGET
    return out


def report(res: dict[str, Any]) -> str:
    lines = [f"nats vs jsonl ({res['load_seconds']:g} s of load per round):"]
    for i, r in enumerate(res["rounds"], 1):
        lines.append(f"  round {i}: jsonl {r['jsonl']['events_per_s'] / 1e6:.2f} M/s, "
                     f"nats {r['nats']['events_per_s'] / 1e6:.2f} M/s "
                     f"(dropped at the sink {r['nats']['dropped_at_sink']}"
                     + "".join(f", {k} {v}"
                               for k, v in r['nats']['dropped_at_sink_by_reason'].items())
                     + f"; lost in the kernel queue {r['nats']['lost_in_kernel_queue']})")
    lines.append(f"  median: jsonl {res['jsonl_events_per_s_median'] / 1e6:.2f} M/s, nats "
                 f"{res['nats_events_per_s_median'] / 1e6:.2f} M/s = "
                 f"{res['nats_vs_jsonl']:.2f}x (target >= {res['target']}x)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from ..ranges import BENCH

    p = argparse.ArgumentParser(prog="python -m pipeline.bench.nats",
                                description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--rounds", type=BENCH["rounds"].flag(), default=3,
                   help=f"rounds of each sink; {BENCH['rounds'].describe()}")
    p.add_argument("--seconds", type=BENCH["seconds"].flag(), default=2.0,
                   help=f"load per round; {BENCH['seconds'].describe()}")
    p.add_argument("--no-warm", action="store_true", help="skip the memory warm-up")
    p.add_argument("--json", action="store_true", help="the figures as one JSON object")
    args = p.parse_args(argv)
    try:
        res = run_nats_vs_jsonl(args.seconds, args.rounds, warm=not args.no_warm)
    except RuntimeError as e:
        print(f"bench nats: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    print(json.dumps(res) if args.json else report(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())

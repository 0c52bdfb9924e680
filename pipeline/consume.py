"""`python -m pipeline consume`: read the events a fleet's nats sinks stored back, as JSON
lines on stdout (`| jq` works on the whole fleet at once).

Each line gets the publishing host's id as its first key, "host" (from the message's
Arena-Host header, which the nats sink sets).

A durable pull consumer with explicit acknowledgements: each message (a batch of lines) is
written and flushed to stdout before it is acknowledged, so a consumer stopped or killed
part-way starts again, under the same --durable name, from the first message not
acknowledged. Nothing is lost that way; a message written but not yet acknowledged when the
consumer died comes again (at least once). The connection keys (TLS, credentials) are the
nats sink's, from [sink.nats] of --config, so one file serves both.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .config import Config, load_file
from .errors import ConfigError
from .ranges import CONSUME
from .sinks.base import SinkError

T = TypeVar("T")

DEFAULT_FILTER = "arena.events.>"
DEFAULT_DURABLE = "arena-consume"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Read events from the NATS JetStream stream the nats sink publishes "
                     "into and write them to stdout as JSON lines (durable consumer, "
                     "explicit acknowledgements).")
    p.add_argument("--config", metavar="PATH",
                   help="TOML file whose [sink.nats] gives url, TLS and credential keys")
    p.add_argument("--nats-url", metavar="nats://HOST:PORT[,...]",
                   help="the servers (default: [sink.nats] url of --config)")
    p.add_argument("--subject", default=DEFAULT_FILTER, metavar="FILTER",
                   help=f"subjects to read, wildcards allowed (default {DEFAULT_FILTER})")
    p.add_argument("--stream", metavar="NAME",
                   help="the stream (default: the one that stores the subjects)")
    p.add_argument("--durable", default=DEFAULT_DURABLE, metavar="NAME",
                   help="the durable consumer's name: a later run with the same name goes on "
                        f"where this one stopped (default {DEFAULT_DURABLE})")
    for key, metavar, default, text in (
            ("batch", "N", 64, "messages fetched at once (default 64)"),
            ("idle_exit", "SECONDS", 0, "exit 0 after this long without a new message "
                                        "(0, the default: wait for ever)"),
            ("max_events", "N", 0, "exit 0 once at least N events are written (whole "
                                   "messages; 0, the default: no limit)")):
        rng = CONSUME[key]
        p.add_argument("--" + key.replace("_", "-"), type=rng.flag(), metavar=metavar,
                       default=default, help=f"{text}; {rng.describe()}")


def _options(args: argparse.Namespace) -> dict[str, Any]:
    from .sinks.nats import NatsSink

    raw: dict[str, Any] = {}
    if args.config:
        cfg = Config()
        load_file(args.config, cfg)
        raw = dict(cfg.sink_options.get("nats", {}))
    if args.nats_url:
        raw["url"] = args.nats_url
    if "url" not in raw:
        raise ConfigError("consume needs the servers: give --nats-url nats://HOST:PORT or a "
                          "--config whose [sink.nats] sets url")
    return NatsSink.validate_options(raw)


def _check_names(args: argparse.Namespace) -> None:
    from .sinks.nats_conn import subject_problem

    problem = subject_problem(args.subject, wildcards=True)
    if problem:
        raise ConfigError(f"--subject {args.subject!r} {problem}; fix it")
    for flag, value in (("--stream", args.stream), ("--durable", args.durable)):
        if value is not None and (not value or not all(
                c.isascii() and (c.isalnum() or c in "-_") for c in value)):
            raise ConfigError(f"{flag} {value!r} may hold only letters, digits, - and _; fix it")


def main(args: argparse.Namespace) -> int:
    _check_names(args)
    options = _options(args)
    return asyncio.run(_consume(args, options))


async def _consume(args: argparse.Namespace, options: dict[str, Any]) -> int:
    import nats.errors
    import nats.js.api as api
    import nats.js.errors

    from .sinks.nats_conn import connect, connect_kwargs, fix_for, why
    from .sinks.nats_stream import jetstream_problem

    where = "consume"
    kwargs = connect_kwargs(where, options)

    async def quiet(_: Exception) -> None:
        pass

    try:
        nc = await connect(options, kwargs, error_cb=quiet)
    except Exception as e:
        raise SinkError(f"{where}: cannot connect to {options['url']}: {why(e)}; "
                        f"{fix_for(e, '--nats-url')}") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        problem = await jetstream_problem(nc)
        if problem is not None:
            raise SinkError(f"{where}: {problem}")
        js = nc.jetstream()
        stream = args.stream
        try:
            if stream is None:
                stream = await _api(where, lambda: js.find_stream_name_by_subject(args.subject))
        except nats.js.errors.NotFoundError:
            raise SinkError(f"{where}: no stream stores {args.subject}; check --subject, or "
                            "name the stream with --stream") from None
        try:
            sub = await _api(where, lambda: js.pull_subscribe(
                args.subject, durable=args.durable, stream=stream,
                config=api.ConsumerConfig(ack_policy=api.AckPolicy.EXPLICIT,
                                          deliver_policy=api.DeliverPolicy.ALL)))
        except nats.js.errors.NotFoundError:
            raise SinkError(f"{where}: stream {stream} does not exist; fix --stream") from None
        except nats.js.errors.APIError as e:
            raise SinkError(f"{where}: cannot use durable consumer {args.durable} on stream "
                            f"{stream}: {why(e)}; pick another --durable name") from None
        await _pump(sub, args, stop)
        await nc.flush(timeout=5)
    except (BrokenPipeError, ConnectionResetError):
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.close(devnull)
    finally:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await nc.close()
    return 0


# A cluster that is electing a leader (a node just stopped or restarted) answers no
# JetStream API request for a few seconds: the set-up requests are tried again until then.
API_PATIENCE_S = 30.0


async def _api(where: str, call: Callable[[], Awaitable[T]]) -> T:
    """call() (a JetStream API request), again while it times out or finds no responder,
    for up to API_PATIENCE_S; then one line."""
    import nats.errors

    loop = asyncio.get_running_loop()
    end = loop.time() + API_PATIENCE_S
    while True:
        try:
            return await call()
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as e:
            if loop.time() >= end:
                raise SinkError(f"{where}: the JetStream API did not answer for "
                                f"{API_PATIENCE_S:.0f} s ({type(e).__name__}); check that the "
                                "servers are up and the stream has a leader") from None
            await asyncio.sleep(0.5)


def with_host(data: bytes, host: str) -> bytes:
    """Each line of `data` with "host":HOST first, when `host` is a valid host id (the
    nats sink's header); lines are passed on unchanged otherwise."""
    if not host or not data.startswith(b"{") or not all(
            c.isascii() and (c.isalnum() or c in "-_") for c in host):
        return data
    field = b'{"host":"' + host.encode() + b'",'
    return field + data[1:].replace(b"\n{", b"\n" + field)


async def _pump(sub: Any, args: argparse.Namespace, stop: asyncio.Event) -> int:
    import nats.errors

    from .sinks.nats import HOST_HEADER

    out = sys.stdout.buffer
    written = 0
    loop = asyncio.get_running_loop()
    last_new = loop.time()
    while not stop.is_set():
        if args.idle_exit and loop.time() - last_new >= args.idle_exit:
            break
        fetch = asyncio.ensure_future(sub.fetch(args.batch, timeout=0.5))
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait({fetch, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if not fetch.done():
            fetch.cancel()
            with contextlib.suppress(BaseException):
                await fetch
            break
        try:
            msgs = fetch.result()
        except (nats.errors.TimeoutError, TimeoutError):
            continue
        last_new = loop.time()
        for msg in msgs:
            out.write(with_host(msg.data, (msg.headers or {}).get(HOST_HEADER, "")))
        out.flush()  # on stdout before the server forgets them
        for msg in msgs:
            await msg.ack()
            written += msg.data.count(b"\n")
        if args.max_events and written >= args.max_events:
            break
    return written

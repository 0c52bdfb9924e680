"""nats sink: batches of JSON lines published into a NATS JetStream stream, acknowledged.

Accounting (what "delivered" means here)
----------------------------------------
write() only queues a batch, in a buffer bounded by `buffer_events` (counting events waiting,
events in messages sent and not yet acknowledged, and events in messages to send again); a
batch that does not fit is dropped ("buffer_overflow"), so the buffer keeps the oldest
events and what reaches the stream is an unbroken prefix of each outage.

A sender task cuts the waiting events into messages (nats_batch: whole lines, within the
server's max_payload and `batch_events`), publishes up to `in_flight` of them at once and
counts a message's events as delivered only when the stream's acknowledgement for it comes
back; an acknowledgement that says "duplicate" counts too (the stream has the message from
an earlier attempt). Each message carries Nats-Msg-Id = HOST.RUN.FIRST.LAST (the host id,
this run's random id, the sequence numbers of its first and last events) and keeps it when
it is sent again, so the stream's de-duplication (within `duplicate_window`) stores it
once. Arena-Host = HOST names the publisher for consume, which adds it to each line.

An acknowledgement has no deadline of its own: one not back within `ack_timeout` (a dead
node, a stream without a leader), an error answer, or a lost connection ends the connection.
Every message not acknowledged then goes back, in order, ahead of anything newer, and the
sink reconnects with a doubling, jittered backoff (`backoff_initial` to `backoff_max`),
trying the servers of `url` in turn. One line reports the outage, one the reconnection.

close() keeps sending for at most `close_timeout` seconds and then counts what is left as
dropped: "disconnected" if no connection was up, "close_timeout" otherwise. So at the end
delivered + dropped = every event written to the sink.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import secrets
import socket
from collections.abc import Mapping
from typing import Any, ClassVar

from pipeline.ranges import SINK_NATS
from pipeline.sinks.base import REQUIRED, Batch, Option, SinkError
from pipeline.sinks.nats_batch import Message, Outbox
from pipeline.sinks.nats_conn import (
    check_connection_options,
    check_servers,
    connect,
    connect_kwargs,
    fix_for,
    subject_problem,
    why,
)
from pipeline.sinks.nats_stream import ensure_stream
from pipeline.sinks.outage import OutageSink

# What the headers of a message take out of the server's max_payload, with room to spare.
HEADER_ROOM = 512
MIN_PAYLOAD = 4096
# Names the publishing host whatever the subject is; consume puts it in each line as "host".
HOST_HEADER = "Arena-Host"
RETENTIONS = ("limits", "interest", "workqueue")
STORAGES = ("file", "memory")


def _choice(values: tuple[str, ...]) -> Any:
    def check(value: Any) -> str | None:
        return None if value in values else f"must be one of {', '.join(values)}"
    return check


def _check_subject(value: Any) -> str | None:
    if not isinstance(value, str):
        return "must be a string"
    rest = value.replace("{host}", "h")
    if "{" in rest or "}" in rest:
        return "may hold only the placeholder {host}"
    return subject_problem(rest, wildcards=False)


def _check_stream_subjects(value: Any) -> str | None:
    for part in str(value).split(","):
        if part.strip():
            problem = subject_problem(part.strip(), wildcards=True)
            if problem:
                return problem
    return None


def _check_token(value: Any) -> str | None:
    """host_id and stream: one subject token, also usable in a stream's name."""
    if value == "":
        return None
    if not all(c.isascii() and (c.isalnum() or c in "-_") for c in value):
        return "may hold only letters, digits, - and _"
    return None


def default_host_id() -> str:
    """The host name up to its first dot, made a subject token."""
    name = socket.gethostname().split(".")[0] or "host"
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "_" for c in name)


def _num(key: str, kind: type, default: Any, text: str) -> Option:
    return Option(kind, default, text, check=SINK_NATS[key])


class NatsSink(OutageSink):
    name: ClassVar[str] = "nats"
    options: ClassVar[dict[str, Option]] = {
        "url": Option(str, REQUIRED, 'servers: "nats://HOST:PORT[,nats://HOST:PORT...]" '
                      "(tls:// for TLS)", check=check_servers),
        "subject": Option(str, "arena.events.{host}", "subject of every message; {host} is "
                          "replaced by host_id", check=_check_subject),
        "host_id": Option(str, "", "this host's name in subjects and message ids; empty: "
                          "the host name up to its first dot", check=_check_token),
        "stream": Option(str, "ARENA_EVENTS", "the JetStream stream that stores the subject",
                         check=lambda v: _check_token(v) or (None if v else "must not be empty")),
        "create_stream": Option(bool, True, "create the stream when it is missing"),
        "stream_subjects": Option(str, "", "subjects of a stream the sink creates, "
                                  "comma-separated; empty: the subject with {host} as *",
                                  check=_check_stream_subjects),
        "duplicate_window": _num("duplicate_window", float, 120.0,
                                 "seconds the stream remembers message ids (a created stream)"),
        "retention": Option(str, "limits", "retention policy of a created stream",
                            check=_choice(RETENTIONS)),
        "max_bytes": _num("max_bytes", int, 1 << 30, "size limit of a created stream, oldest "
                          "messages removed past it (0: none)"),
        "max_age": _num("max_age", float, 0.0, "age limit of a created stream's messages "
                        "(0: none)"),
        "replicas": _num("replicas", int, 1, "copies of a created stream (a cluster's servers)"),
        "storage": Option(str, "file", "storage of a created stream", check=_choice(STORAGES)),
        "batch_events": _num("batch_events", int, 1024, "events per message at most"),
        "batch_bytes": _num("batch_bytes", int, 0, "bytes per message at most (0: the server's "
                            "max_payload, which also caps it)"),
        "in_flight": _num("in_flight", int, 16, "messages published and not yet acknowledged"),
        "ack_timeout": _num("ack_timeout", float, 5.0, "seconds an acknowledgement may take "
                            "before the connection is dropped and the message sent again"),
        "buffer_events": _num("buffer_events", int, 100_000, "events held while the stream is "
                              "slow or away; newer batches are dropped"),
        "backoff_initial": _num("backoff_initial", float, 0.05, "seconds before the first "
                                "reconnection attempt"),
        "backoff_max": _num("backoff_max", float, 2.0, "cap on the doubling, jittered "
                            "reconnection delay"),
        "connect_timeout": _num("connect_timeout", float, 2.0, "seconds one connection "
                                "attempt to a server may take"),
        "close_timeout": _num("close_timeout", float, 5.0, "seconds close() may take to get "
                              "the rest acknowledged"),
        "tls": Option(bool, False, "TLS to every server (tls:// URLs imply it)"),
        "tls_ca": Option(str, "", "TLS: PEM file of the CA certificates the servers' must "
                         "chain to; empty: the system's trust store"),
        "tls_cert": Option(str, "", "TLS: PEM client certificate, for servers that ask"),
        "tls_key": Option(str, "", "TLS: PEM private key of tls_cert; empty: in tls_cert"),
        "tls_server_name": Option(str, "", "TLS: the name the servers' certificates must "
                                  "hold; empty: each URL's host"),
        "token": Option(str, "", "log in with this token", secret=True),
        "user": Option(str, "", "log in as this user (with password)"),
        "password": Option(str, "", "password of user", secret=True),
        "nkey_seed": Option(str, "", "log in with the NKey whose seed is in this file"),
        "creds": Option(str, "", "log in with this credentials file (user JWT and seed)"),
    }

    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> dict[str, str]:
        group.add_argument("--nats-url", metavar="nats://HOST:PORT[,...]",
                           help="nats sink: the servers")
        group.add_argument("--subject", metavar="SUBJECT",
                           help="nats sink: the subject ({host} is the host id; default "
                                "arena.events.{host})")
        group.add_argument("--nats-host-id", metavar="NAME",
                           help="nats sink: this host's id (default: the host name)")
        return {"nats_url": "url", "subject": "subject", "nats_host_id": "host_id"}

    @classmethod
    def validate_options(cls, raw: Mapping[str, Any]) -> dict[str, Any]:
        out = super().validate_options(raw)
        where = f"sink {cls.name}"
        if out["backoff_max"] < out["backoff_initial"]:
            raise SinkError(
                f"{where}: option 'backoff_max' ({out['backoff_max']:g}) is below "
                f"'backoff_initial' ({out['backoff_initial']:g}); raise backoff_max")
        check_connection_options(where, out)
        return out

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        cfg = self.config
        self.host_id: str = cfg["host_id"] or default_host_id()
        self.subject: str = cfg["subject"].replace("{host}", self.host_id)
        self.run_id = secrets.token_hex(6)
        self._outbox = Outbox(f"{self.host_id}.{self.run_id}", 1 << 20, cfg["batch_events"])
        self._again: collections.deque[Message] = collections.deque()
        self._nc: Any = None
        self._js: Any = None
        self._lost = asyncio.Event()
        self._kwargs: dict[str, Any] = {}
        self._outage = False  # reported, and not over until the stream acknowledges again

    # -- the interface ---------------------------------------------------------------------

    async def start(self) -> None:
        where = f"sink {self.name}"
        self._kwargs = connect_kwargs(where, self.config)
        try:
            nc = await self._connect()
        except Exception as e:
            raise SinkError(f"{where}: cannot connect to {self.config['url']}: {why(e)}; "
                            f"{fix_for(e, '--nats-url')}") from None
        try:
            limit = nc.max_payload
            if limit < MIN_PAYLOAD + HEADER_ROOM:
                raise SinkError(f"{where}: the server's max_payload is {limit} bytes, too small "
                                "for batches; raise max_payload in the server's configuration")
            wanted = self.config["batch_bytes"] or limit
            self._outbox.max_bytes = min(wanted, limit - HEADER_ROOM)
            await ensure_stream(where, nc, self.config, self.subject)
        except BaseException:
            await self._drop_connection(nc)
            raise
        self._use(nc)
        self.start_sender()

    async def write(self, batch: Batch) -> None:
        if self.admit(batch):
            self._outbox.add(batch.data, batch.count)
        # One turn of the loop for the sender and the client's socket work, whatever became
        # of the batch: under load the reader drains batch after batch without suspending,
        # and would starve them (a full buffer would then never empty).
        await asyncio.sleep(0)

    async def close(self) -> None:
        await self.stop_sender()
        self.drop_held("disconnected" if self._nc is None else "close_timeout")
        self._outbox.clear()
        self._again.clear()
        if self._nc is not None:
            await self._drop_connection(self._nc)
            self._nc = None

    # -- connections -----------------------------------------------------------------------

    async def _connect(self) -> Any:
        # this connection's own event: a late callback of an old one must not mark a new one
        gone = self._lost = asyncio.Event()

        async def lost(*_: Any) -> None:
            gone.set()
            self._wake.set()

        async def quiet(_: Exception) -> None:
            pass  # errors reach the sender through `lost` and the publish futures

        return await connect(self.config, self._kwargs, error_cb=quiet,
                             disconnected_cb=lost, closed_cb=lost)

    def _use(self, nc: Any) -> None:
        self._nc = nc
        self._js = nc.jetstream(publish_async_max_pending=self.config["in_flight"])

    async def _drop_connection(self, nc: Any) -> None:
        # close() flushes what the client buffered: bounded, the server may be gone
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await nc.close()

    # -- the sender task -------------------------------------------------------------------

    async def _send_loop(self) -> None:
        # The backoff grows over connections too: one that connects and fails at once (a
        # stream deleted meanwhile, a leader not yet elected) must not make a busy loop.
        # It starts again only once the stream has acknowledged something.
        attempt = 0
        while not (self._closing and self._held == 0):
            if self._nc is None:
                try:
                    nc = await self._connect()
                except Exception:
                    await asyncio.sleep(self.backoff(attempt))
                    attempt += 1
                    continue
                self._use(nc)
            before = self.stats.delivered
            problem = await self._pump()
            if self.stats.delivered > before:
                attempt = 0
            if problem is None:
                break  # closing and everything acknowledged
            nc, self._nc, self._js = self._nc, None, None
            await self._drop_connection(nc)
            if self._closing and self._held == 0:
                break
            if not self._outage:
                self._outage = True
                self.report(f"connection to {self.config['url']} lost ({problem}); "
                            f"reconnecting, holding up to {self.config['buffer_events']} events")
            await asyncio.sleep(self.backoff(attempt))
            attempt += 1

    async def _pump(self) -> str | None:
        """Publish and collect acknowledgements until the connection fails (returns why)
        or, when closing, until nothing is left (returns None)."""
        loop = asyncio.get_running_loop()
        timeout = self.config["ack_timeout"]
        # (message, its acknowledgement, deadline), in publishing order
        flight: list[tuple[Message, asyncio.Future[Any], float]] = []
        try:
            while True:
                while len(flight) < self.config["in_flight"]:
                    msg = self._again.popleft() if self._again else self._outbox.take()
                    if msg is None:
                        break
                    try:
                        async with asyncio.timeout(timeout):
                            fut = await self._js.publish_async(
                                self.subject, msg.payload,
                                headers={"Nats-Msg-Id": msg.msg_id, HOST_HEADER: self.host_id})
                    except Exception as e:
                        self._again.appendleft(msg)
                        return why(e)
                    flight.append((msg, fut, loop.time() + timeout))
                if not flight:
                    if self._closing and self._held == 0:
                        return None
                    if self._lost.is_set() or (self._nc is not None and self._nc.is_closed):
                        return "the server closed the connection"
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                self._wake.clear()
                waiter = asyncio.ensure_future(self._wake.wait())
                try:
                    await asyncio.wait({waiter, *(f for _, f, _ in flight)},
                                       timeout=max(flight[0][2] - loop.time(), 0),
                                       return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                problem = self._collect(flight, loop.time())
                if problem is not None:
                    return problem
                if self._lost.is_set() and flight:
                    return "the server closed the connection"
        finally:
            # not acknowledged on this connection: sent again, first, on the next one
            for msg, fut, _ in reversed(flight):
                fut.cancel()
                self._again.appendleft(msg)

    def _collect(self, flight: list[tuple[Message, asyncio.Future[Any], float]],
                 now: float) -> str | None:
        """Credit every acknowledged message; the first failure ends the connection."""
        keep: list[tuple[Message, asyncio.Future[Any], float]] = []
        problem: str | None = None
        for entry in flight:
            msg, fut, deadline = entry
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self.stats.delivered += msg.count
                self._held -= msg.count
                if self._outage:
                    self._outage = False
                    self.report(f"reconnected to {self.config['url']}")
                continue
            if problem is None:
                if fut.done():
                    exc = fut.exception() if not fut.cancelled() else None
                    problem = "cancelled" if exc is None else f"the stream answered {why(exc)}"
                elif deadline <= now:
                    problem = (f"no acknowledgement within {self.config['ack_timeout']:g} s")
            keep.append(entry)
        flight[:] = keep
        return problem

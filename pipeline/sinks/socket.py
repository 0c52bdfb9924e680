"""socket sink: JSON lines streamed to a TCP or unix-socket listener, reconnecting with backoff.

Accounting (what "delivered" means here)
----------------------------------------
write() only queues a batch in a buffer bounded by `buffer_events` (counting queued batches and
batches sent but not yet known to be received). When a new batch does not fit it is dropped
("buffer_overflow"): the buffer keeps the oldest events, so what reaches the peer is an
unbroken prefix of each outage, and a batch already partly on the wire is never discarded.

A background task sends the batches in order, one send loop per batch, on a non-blocking
socket it owns, so it knows exactly how many bytes the kernel accepted. A batch counts as
delivered only once the peer is known to have it, read from the socket with SIOCOUTQ:
- unix sockets: SIOCOUTQ is the memory of the bytes the peer has not read yet (at least the
  bytes themselves), so a batch is counted when the peer process has read all of it;
- TCP: SIOCOUTQ is the bytes the peer's kernel has not acknowledged; TCP has no application
  acknowledgement, so a peer that dies after its kernel acknowledged bytes but before it read
  them loses them while they count as delivered. A peer that exits normally after reading
  what arrived (close with an empty receive queue) loses nothing: closing with unread data
  makes its kernel answer with a reset instead of a FIN, and unacknowledged bytes are resent.

When the peer shuts down gracefully (stops accepting, sends FIN, reads to EOF, closes), the
sink sees EOF, finishes the batch in progress (no cut line), stops sending, shuts down its
write side and waits (up to `close_timeout`) until SIOCOUTQ reports everything taken. Every
batch then counts exactly once: delivered and received, or resent on the next connection.
If the connection breaks instead (reset, broken pipe), the batches not known to be delivered
are put back at the head of the buffer and resent after reconnecting. For TCP the split is
still by kernel acknowledgement (the socket keeps the acknowledged sequence after a reset),
with the limit above. For unix sockets the kernel frees what the dead peer never read, so
the last reading taken before the reset is used: batches the peer read after it are sent
again (at least once, never lost). A peer that sends FIN and then stops reading gets
`close_timeout` seconds, then is treated like a broken connection.

close() keeps sending and reconnecting for at most `close_timeout` seconds, then resets the
connection (so the kernel does not keep delivering unacknowledged bytes) and counts what is
left: "disconnected" if no connection was up, "close_timeout" if the peer did not take it in
time. Outages are reported on stderr: one line when a connection is lost, one when it is back.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import errno
import fcntl
import os
import pwd
import socket
import ssl
import struct
import termios
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from pipeline.ranges import SINK_SOCKET
from pipeline.sinks.base import REQUIRED, Batch, Option, SinkError
from pipeline.sinks.outage import OutageSink
from pipeline.sinks.tls import TlsStream, client_context, describe, handshake

SIOCOUTQ = termios.TIOCOUTQ  # the same ioctl number on sockets
# While the sender is idle with batches not yet acknowledged, it re-reads SIOCOUTQ: there is
# no event for "the peer acknowledged". The interval doubles while nothing moves (a stalled
# peer costs a few wakeups per second, not a hundred).
ACK_POLL_S = 0.01
ACK_POLL_MAX_S = 0.25
RECV_CHUNK = 65536
UID_MAX = 2**32 - 2  # (uid_t)-1 means "no uid"
NEVER = 2**63  # an offset no acknowledgement reaches


class PeerRefused(OSError):
    """A unix-socket listener that runs as a user not accepted by `peer_uid`."""


@dataclass(frozen=True)
class Endpoint:
    host: str = ""
    port: int = 0
    path: str = ""  # set for unix sockets; a leading NUL selects the abstract namespace

    @property
    def is_unix(self) -> bool:
        return bool(self.path)


def parse_connect(text: str) -> Endpoint:
    """HOST:PORT, [IPv6]:PORT, unix:/path or unix:@abstract; ValueError says what is wrong."""
    text = text.strip()
    if text.startswith("unix:"):
        path = text[len("unix:") :]
        if not path:
            raise ValueError('needs a socket path after "unix:"')
        return Endpoint(path="\0" + path[1:] if path.startswith("@") else path)
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not host or not rest.startswith(":"):
            raise ValueError('must look like "[::1]:9000"')
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError('must be "HOST:PORT", "[IPv6]:PORT" or "unix:/path"')
        if ":" in host:
            raise ValueError('needs brackets around an IPv6 address, as in "[::1]:9000"')
    port = int(port_text) if port_text.isdigit() else 0
    if not 1 <= port <= 65535:
        raise ValueError("needs a port between 1 and 65535")
    return Endpoint(host=host, port=port)


def _check_connect(value: Any) -> str | None:
    try:
        parse_connect(value)
    except ValueError as e:
        return str(e)
    return None


def _uid(raw: Any) -> int | None:
    """`peer_uid`: a uid, or the name of a user that exists (None: the default)."""
    if raw is None:
        return None  # validating the defaults again, as Sink.__init__ does
    if isinstance(raw, bool):
        raise ValueError("must be a uid or a user name")
    if isinstance(raw, str) and not raw.strip().isdigit():
        try:
            return pwd.getpwnam(raw.strip()).pw_uid
        except KeyError:
            raise ValueError("must be a uid or the name of an existing user") from None
    if isinstance(raw, (int, str)):
        uid = int(raw)
        if 0 <= uid <= UID_MAX:
            return uid
        raise ValueError(f"must be a uid from 0 to {UID_MAX}")
    raise ValueError("must be a uid or a user name")


def _why(e: BaseException, timeout: float) -> str:
    if isinstance(e, PeerRefused):
        return str(e.strerror)
    if isinstance(e, ssl.SSLError):
        return describe(e)
    if isinstance(e, TimeoutError) and not e.strerror:
        return f"timed out after {timeout:g} s"
    if isinstance(e, socket.gaierror) and e.strerror:
        return f"cannot resolve the host: {e.strerror}"
    if isinstance(e, OSError) and e.errno and e.errno > 0:
        # asyncio's connect errors carry "Connect call failed (...)" as strerror.
        return os.strerror(e.errno)
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


class _Link:
    """One connected socket and the batches written on it that the peer is not known to have."""

    def __init__(self, sock: socket.socket, wake: asyncio.Event, eof_grace: float,
                 tls: TlsStream | None = None) -> None:
        self.sock = sock
        self.tls = tls  # the bytes on the wire are its records; offsets count those
        self.is_tcp = sock.family != socket.AF_UNIX
        self.sent = 0  # bytes the kernel accepted on this connection
        self.acked = 0  # bytes the peer is known to have
        # (batch, offset just past its last byte), oldest first
        self.inflight: collections.deque[tuple[Batch, int]] = collections.deque()
        self.eof = False
        self.eof_at = 0.0
        self.error: OSError | None = None
        self.fin_sent = False
        self._wake = wake
        self._eof_grace = eof_grace
        self._loop = asyncio.get_running_loop()
        self._writer: asyncio.Future[None] | None = None  # set while send() waits for room
        self._reading = True
        self._loop.add_reader(sock.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        try:
            data = self.sock.recv(RECV_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._lost(e)
            return
        closed = not data  # FIN: the peer sends no more, and may be about to stop reading
        if data and self.tls is not None:
            try:
                closed = self.tls.feed(data)  # close_notify means the same as FIN
            except ssl.SSLError as e:
                self._lost(e)
                return
        if closed:
            self.eof = True
            self.eof_at = self._loop.time()
            self._stop_reading()
            self._nudge()
        # Anything else the peer sends is ignored: the protocol is one-way.

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self.sock.fileno())

    def _lost(self, e: OSError) -> None:
        if self.error is None:
            self.error = e
        self._stop_reading()
        self._nudge()

    def _nudge(self) -> None:
        """Wake the sender: a waiting send() re-checks the state, an idle one looks too."""
        if self._writer is not None and not self._writer.done():
            self._writer.set_result(None)
        self._wake.set()

    async def send(self, batch: Batch) -> None:
        """Hand all of `batch` to the kernel; OSError if the connection broke meanwhile."""
        try:
            payload = batch.data if self.tls is None else self.tls.encrypt(batch.data)
        except ssl.SSLError as e:
            # Never confirmed on this connection: it goes back to the queue when the link ends.
            self.inflight.append((batch, NEVER))
            self._lost(e)
            raise
        self.inflight.append((batch, self.sent + len(payload)))
        await self._send_bytes(payload)

    async def _send_bytes(self, payload: bytes) -> None:
        view = memoryview(payload)
        while view:
            if self.error is not None:
                raise self.error
            try:
                n = self.sock.send(view, socket.MSG_NOSIGNAL)
            except (BlockingIOError, InterruptedError):
                try:
                    await self._writable()
                except OSError as e:
                    self._lost(e)
                    raise
                continue
            except OSError as e:
                self._lost(e)
                raise
            self.sent += n
            view = view[n:]

    async def _writable(self) -> None:
        """Wait for room in the send buffer. After the peer's FIN the batch in progress is
        finished (no cut line) only if the peer keeps reading: at most `eof_grace` seconds."""
        stalled = OSError(errno.ETIMEDOUT, "the peer stopped reading after closing its side")
        limit = None
        if self.eof:
            limit = self.eof_at + self._eof_grace - self._loop.time()
            if limit <= 0:
                raise stalled
        fut: asyncio.Future[None] = self._loop.create_future()
        self._writer = fut
        fd = self.sock.fileno()

        def ready() -> None:
            if not fut.done():
                fut.set_result(None)

        self._loop.add_writer(fd, ready)
        try:
            async with asyncio.timeout(limit):
                await fut
        except TimeoutError:
            raise stalled from None
        finally:
            self._writer = None
            self._loop.remove_writer(fd)

    def refresh(self) -> int:
        """Update what the peer is known to have; return the events newly delivered."""
        if self.sock.fileno() < 0 or (self.error is not None and not self.is_tcp):
            # A unix peer that died took its unread bytes with it: the kernel no longer
            # counts them, so readings after its death would claim they were read.
            return self._settle()
        try:
            outq = struct.unpack("i", fcntl.ioctl(self.sock.fileno(), SIOCOUTQ, b"\0\0\0\0"))[0]
            err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        except OSError:
            return self._settle()
        if err:
            # Read after the queue length: a zero here means that reading predates the death.
            self._lost(OSError(err, os.strerror(err)))
            if not self.is_tcp:
                return self._settle()
        if self.is_tcp and self.fin_sent:
            outq = max(outq - 1, 0)  # our FIN occupies one sequence number
        self.acked = max(self.acked, self.sent - outq)
        return self._settle()

    def _settle(self) -> int:
        events = 0
        while self.inflight and self.inflight[0][1] <= self.acked:
            events += self.inflight.popleft()[0].count
        return events

    async def shutdown_write(self) -> None:
        """close_notify (TLS), then FIN. Bounded: called with nothing unsent (closing), or
        after the peer's FIN, when a stalled peer gets `eof_grace` seconds."""
        if self.fin_sent:
            return
        if self.tls is not None and self.error is None:
            with contextlib.suppress(OSError):
                await self._send_bytes(self.tls.close_notify())
        try:
            self.sock.shutdown(socket.SHUT_WR)
            self.fin_sent = True
        except OSError:
            pass

    def close(self, abort: bool) -> None:
        self._stop_reading()
        if abort and self.is_tcp and self.error is None:
            # Reset rather than FIN: the kernel must not keep delivering what we count as dropped.
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


class SocketSink(OutageSink):
    name: ClassVar[str] = "socket"
    options: ClassVar[dict[str, Option]] = {
        "connect": Option(
            str, REQUIRED, 'listener: "HOST:PORT", "[IPv6]:PORT", "unix:/path" or "unix:@name"',
            check=_check_connect,
        ),
        "buffer_events": Option(
            int, 100_000, "events held while the peer is slow or away; newer batches are dropped",
            check=SINK_SOCKET["buffer_events"],
        ),
        "backoff_initial": Option(
            float, 0.05, "seconds before the first reconnection attempt",
            check=SINK_SOCKET["backoff_initial"],
        ),
        "backoff_max": Option(
            float, 2.0, "cap on the doubling, jittered reconnection delay",
            check=SINK_SOCKET["backoff_max"],
        ),
        "connect_timeout": Option(
            float, 2.0, "seconds one connection attempt may take",
            check=SINK_SOCKET["connect_timeout"],
        ),
        "close_timeout": Option(
            float, 5.0, "seconds close() or a graceful peer shutdown may take to deliver the rest",
            check=SINK_SOCKET["close_timeout"],
        ),
        "peer_uid": Option(
            int, None, "unix sockets: the uid the listener must run as (root is always "
            "accepted); unset: root and the user the pipeline runs as", coerce=_uid,
        ),
        "tls": Option(bool, False, "TCP: TLS to the listener, whose certificate is verified"),
        "tls_ca": Option(
            str, "", "TLS: PEM file of the CA certificates the listener's must chain to; "
            "empty: the system's trust store",
        ),
        "tls_cert": Option(str, "", "TLS: PEM client certificate, for a listener that asks"),
        "tls_key": Option(str, "", "TLS: PEM private key of tls_cert; empty: in tls_cert"),
        "tls_server_name": Option(
            str, "", "TLS: the name the listener's certificate must hold; empty: the host of "
            "connect",
        ),
    }

    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> dict[str, str]:
        group.add_argument("--connect", metavar="HOST:PORT|unix:PATH",
                           help="socket sink: the listener")
        return {"connect": "connect"}

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.target: str = self.config["connect"]
        self.endpoint = parse_connect(self.target)
        self._pending: collections.deque[Batch] = collections.deque()
        self._link: _Link | None = None
        peer = self.config["peer_uid"]
        # root can read the pipeline's memory anyway: refusing it would protect nothing
        self.accepted_uids = frozenset({0, os.geteuid() if peer is None else peer})
        self._tls: ssl.SSLContext | None = None
        self._server_name = self.config["tls_server_name"] or self.endpoint.host
        self._refusal_reported = False  # one line per outage about refused listeners

    @classmethod
    def validate_options(cls, raw: Mapping[str, Any]) -> dict[str, Any]:
        out = super().validate_options(raw)
        if out["backoff_max"] < out["backoff_initial"]:
            raise SinkError(
                f"sink {cls.name}: option 'backoff_max' ({out['backoff_max']:g}) is below "
                f"'backoff_initial' ({out['backoff_initial']:g}); raise backoff_max"
            )
        unix = parse_connect(out["connect"]).is_unix
        if unix and out["tls"]:
            raise SinkError(
                f"sink {cls.name}: option 'tls' is for TCP listeners; a unix socket's listener "
                "is checked by its uid instead (peer_uid): remove tls"
            )
        if not unix and out["peer_uid"] is not None:
            raise SinkError(
                f"sink {cls.name}: option 'peer_uid' applies to unix sockets only; for TCP, "
                "use tls with a CA (and a client certificate): remove peer_uid"
            )
        tls_keys = [k for k in ("tls_ca", "tls_cert", "tls_key", "tls_server_name") if out[k]]
        if tls_keys and not out["tls"]:
            raise SinkError(
                f"sink {cls.name}: option '{tls_keys[0]}' has no effect without tls; "
                "set tls = true or remove it"
            )
        if out["tls_key"] and not out["tls_cert"]:
            raise SinkError(
                f"sink {cls.name}: option 'tls_key' needs 'tls_cert' (the certificate of that "
                "key); set tls_cert"
            )
        return out

    async def start(self) -> None:
        if self.config["tls"]:
            self._tls = client_context(self.config)
        try:
            self._link = await self._connect()
        except (OSError, ValueError) as e:  # ValueError: a host name IDNA cannot encode
            if isinstance(e, PeerRefused):
                fix = ("stop that listener and start the real one, or, if that user is "
                       "trusted, set [sink.socket] peer_uid to its uid")
            elif isinstance(e, ssl.SSLError):
                fix = "check tls_ca, tls_server_name and the listener's certificate"
            else:
                fix = "start the listener or fix --connect"
            raise SinkError(
                f"cannot connect to {self.target}: {_why(e, self.config['connect_timeout'])}; "
                f"{fix}"
            ) from None
        self.start_sender()

    async def write(self, batch: Batch) -> None:
        if self.admit(batch):
            self._pending.append(batch)

    async def close(self) -> None:
        await self.stop_sender()
        reason = "disconnected" if self._link is None else "close_timeout"
        if self._link is not None:
            self._end_link(self._link, abort=True)
        self.drop_held(reason)
        self._pending.clear()

    # -- the sender task -------------------------------------------------------------------

    async def _send_loop(self) -> None:
        attempt = 0
        while not (self._closing and self._held == 0):
            if self._link is None:
                try:
                    self._link = await self._connect()
                except OSError as e:
                    if isinstance(e, (PeerRefused, ssl.SSLError)) and not self._refusal_reported:
                        # Someone else may be listening in the real listener's place.
                        self._refusal_reported = True
                        self.report(f"refused the listener at {self.target}: {_why(e, 0)}; "
                                    "sending it nothing, retrying")
                    await asyncio.sleep(self.backoff(attempt))
                    attempt += 1
                    continue
                attempt = 0
                self._refusal_reported = False
                self.report(f"reconnected to {self.target}")
            link = self._link
            await self._pump(link)
            if link.eof and link.error is None:
                await self._finish(link)
            if link.error is None and link.eof is False:
                break  # closing and everything delivered
            why = "closed by the peer" if link.error is None else f"lost ({_why(link.error, 0)})"
            self._end_link(link, abort=link.error is None)
            if not (self._closing and self._held == 0):
                self.report(
                    f"connection to {self.target} {why}; reconnecting, holding up to "
                    f"{self.config['buffer_events']} events"
                )
        if self._link is not None:
            await self._link.shutdown_write()
            self._link.close(abort=False)
            self._link = None

    async def _pump(self, link: _Link) -> None:
        """Send queued batches until the link ends, or until closing with nothing left."""
        poll = ACK_POLL_S
        while not link.eof and link.error is None:
            if self._pending:
                batch = self._pending.popleft()
                try:
                    await link.send(batch)
                except OSError:
                    return
                self._credit(link.refresh())
                continue
            if self._closing and not link.inflight:
                return
            self._wake.clear()
            try:
                async with asyncio.timeout(poll if link.inflight else None):
                    await self._wake.wait()
            except TimeoutError:
                pass
            moved = link.refresh()
            self._credit(moved)
            poll = ACK_POLL_S if moved else min(poll * 2, ACK_POLL_MAX_S)

    async def _finish(self, link: _Link) -> None:
        """The peer sent FIN: tell it we are done too, and wait until it has taken everything."""
        await link.shutdown_write()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config["close_timeout"]
        self._credit(link.refresh())
        while link.inflight and link.error is None and loop.time() < deadline:
            await asyncio.sleep(ACK_POLL_S)
            self._credit(link.refresh())

    def _end_link(self, link: _Link, abort: bool) -> None:
        """Close `link`; batches the peer is not known to have go back to the head of the queue."""
        self._credit(link.refresh())
        unacked = [batch for batch, _ in link.inflight]
        link.inflight.clear()
        self._pending.extendleft(reversed(unacked))
        link.close(abort=abort and bool(unacked))
        if self._link is link:
            self._link = None

    def _credit(self, events: int) -> None:
        self.stats.delivered += events
        self._held -= events

    async def _connect(self) -> _Link:
        loop = asyncio.get_running_loop()
        ep = self.endpoint
        targets: list[tuple[int, Any]]
        if ep.is_unix:
            targets = [(socket.AF_UNIX, ep.path)]
        else:
            infos = await loop.getaddrinfo(ep.host, ep.port, type=socket.SOCK_STREAM)
            targets = [(info[0], info[4]) for info in infos]
        error: OSError = OSError(errno.EADDRNOTAVAIL, "no address to connect to")
        for family, address in targets:
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                async with asyncio.timeout(self.config["connect_timeout"]):
                    await loop.sock_connect(sock, address)
            except OSError as e:
                sock.close()
                error = e
                continue
            except BaseException:
                sock.close()
                raise
            tls = None
            try:
                if family == socket.AF_UNIX:
                    self._check_peer(sock)
                else:
                    # Batches are already coalesced: don't hold a batch's tail back for an ack.
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self._tls is not None:
                    async with asyncio.timeout(self.config["connect_timeout"]):
                        tls = await handshake(sock, self._tls, self._server_name)
            except BaseException:
                # Not one byte of an event has been sent on it.
                sock.close()
                raise
            return _Link(sock, self._wake, self.config["close_timeout"], tls)
        raise error

    def _check_peer(self, sock: socket.socket) -> None:
        """Refuse a unix-socket listener run by a user not accepted: anyone who can bind the
        path (or an abstract name) after the real listener is gone would get the events."""
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("iII"))
        pid, uid, _gid = struct.unpack("iII", raw)
        if uid not in self.accepted_uids:
            accepted = ", ".join(str(u) for u in sorted(self.accepted_uids))
            raise PeerRefused(
                errno.EACCES,
                f"the listener (pid {pid}) runs as uid {uid}, and peer_uid accepts {accepted}",
            )

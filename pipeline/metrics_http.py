"""The metrics endpoint's listener: the `--metrics HOST:PORT` address, its socket (bound
before anything is captured, so a bad address or a port in use is one line and exit 2),
and a small HTTP/1.1 server on the pipeline's own event loop serving /metrics and /healthz.

The server is deliberately small and bounded, because it runs as root inside the
pipeline: one request per connection, a request head of at most 8 KiB read within a few
seconds, a response written within a few seconds, at most a handful of connections at
once (more are closed at once). A scraper that is slow, silent or hostile therefore costs
the pipeline a few idle sockets, never its event loop. Rendering runs on the loop: a scrape
reads a few counters and formats a few dozen lines, and a loop that is stuck answers no
probe, which is what /healthz should then report.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass

from .errors import ConfigError, PipelineError
from .log import get

log = get(__name__)

HEAD_LIMIT = 8192  # bytes of request line and headers
READ_TIMEOUT = 5.0  # seconds for the whole request head
WRITE_TIMEOUT = 5.0  # seconds for the whole response
MAX_CLIENTS = 8  # connections served at once
BACKLOG = 16

# (status, content type, body) of one answer
Answer = tuple[int, str, bytes]
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 431: "Request Header Fields Too Large",
            500: "Internal Server Error", 503: "Service Unavailable"}


@dataclass(frozen=True)
class ListenAddr:
    host: str  # an IP address literal or a host name, without brackets
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_listen(text: str) -> ListenAddr:
    """`HOST:PORT` or `[IPV6]:PORT` (port 1-65535), or ConfigError naming the form."""
    forms = ("give HOST:PORT or [IPV6]:PORT with a port 1-65535, e.g. --metrics "
             "127.0.0.1:9464")
    if "\0" in text or not text.isprintable() or text != text.strip():
        raise ConfigError(f"metrics {text!r:.60} is not an address; {forms}")
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ConfigError(f"metrics {text!r:.60}: an IPv6 address needs ]:PORT after it; "
                              f"{forms}")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f"metrics {text!r:.60}: {host!r:.50} is not an IPv6 address; "
                              f"{forms}") from None
    else:
        host, sep, port = text.rpartition(":")
        if not sep or not host:
            raise ConfigError(f"metrics {text!r:.60} has no host (0.0.0.0 listens on every "
                              f"interface, 127.0.0.1 on loopback only); {forms}")
        if ":" in host:
            raise ConfigError(f"metrics {text!r:.60}: put an IPv6 address in brackets; "
                              f"{forms}")
    if not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        raise ConfigError(f"metrics {text!r:.60}: port {port!r:.20} is not a number "
                          f"1-65535; {forms}")
    return ListenAddr(host, int(port))


def bind(addr: ListenAddr) -> socket.socket:
    """A listening, non-blocking socket on addr, or PipelineError with one line."""
    try:
        infos = socket.getaddrinfo(addr.host, addr.port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE | socket.AI_NUMERICSERV)
    except socket.gaierror as e:
        raise PipelineError(f"--metrics {addr}: cannot resolve {addr.host!r} ({e.strerror}); "
                            "give an IP address such as 127.0.0.1") from None
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        # a scraper's connection in TIME_WAIT from the previous run must not block this one
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise PipelineError(f"--metrics {addr}: port {addr.port} is already in use (another "
                                "exporter, or another pipeline); choose a free port") from None
        if e.errno == errno.EADDRNOTAVAIL:
            raise PipelineError(f"--metrics {addr}: {addr.host} is not an address of this "
                                "machine; use 127.0.0.1, or 0.0.0.0 for every interface") from None
        raise PipelineError(f"--metrics {addr}: cannot listen: {e.strerror}") from None
    return sock


class MetricsServer:
    """Serves `render_metrics(accept)` (the request's Accept header, for the format) at
    /metrics and `health()` at /healthz from sock."""

    def __init__(self, sock: socket.socket, render_metrics: Callable[[str], tuple[bytes, str]],
                 health: Callable[[], tuple[bool, str]]) -> None:
        self.sock = sock
        self.render_metrics = render_metrics
        self.health = health
        self.clients = 0
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, sock=self.sock,
                                                  limit=HEAD_LIMIT)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for t in list(self._tasks):
                t.cancel()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None
        self.sock.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.clients >= MAX_CLIENTS:
            writer.transport.abort()
            return
        self.clients += 1
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except (TimeoutError, OSError, asyncio.CancelledError):
            writer.transport.abort()
        finally:
            self.clients -= 1
            if task is not None:
                self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
        except asyncio.LimitOverrunError:
            answer: Answer = (431, "text/plain", b"request head too large\n")
            head = b""
        except TimeoutError:
            answer, head = (408, "text/plain", b"request not received in time\n"), b""
        except asyncio.IncompleteReadError:
            writer.transport.abort()
            return
        method = b""
        if head:
            method, answer = self._answer(head)
        status, ctype, body = answer
        out = (f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {ctype}\r\n"
               f"Content-Length: {len(body)}\r\nConnection: close\r\n"
               "Cache-Control: no-store\r\n\r\n").encode()
        writer.write(out if method == b"HEAD" else out + body)
        # An answer the socket took whole needs no wait: the connection's slot is then
        # free before the event loop runs again, so a client that has read its answer
        # and connects anew is never refused for the slot its last request held.
        if writer.transport.get_write_buffer_size():
            await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)
        writer.close()

    def _answer(self, head: bytes) -> tuple[bytes, Answer]:
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            return b"", (400, "text/plain", b"not an HTTP/1.x request\n")
        method, target = parts[0], parts[1]
        path = target.split(b"?", 1)[0]
        if path not in (b"/metrics", b"/healthz"):
            return method, (404, "text/plain", b"try /metrics or /healthz\n")
        if method not in (b"GET", b"HEAD"):
            return method, (405, "text/plain", b"GET or HEAD only\n")
        if path == b"/healthz":
            ok, why = self.health()
            return method, (200 if ok else 503, "text/plain; charset=utf-8",
                            (why + "\n").encode())
        try:
            body, ctype = self.render_metrics(_header(head, b"accept"))
        except Exception as e:  # a scrape must never take the run down with it
            log.warning("metrics: cannot render the metrics: %s", e)
            return method, (500, "text/plain", b"cannot render the metrics\n")
        return method, (200, ctype, body)


def _header(head: bytes, name: bytes) -> str:
    """The value of the first header `name` (lower case) in a request head, or ""."""
    for line in head.split(b"\r\n")[1:]:
        key, sep, value = line.partition(b":")
        if sep and key.strip().lower() == name:
            return value.strip().decode("latin-1")
    return ""

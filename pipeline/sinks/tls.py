"""TLS for the socket sink: the client context from checked files, the handshake, and the
record layer over a socket the sink keeps sending on itself.

The sink counts an event as delivered from SIOCOUTQ, the bytes the peer's kernel has not
acknowledged, so it must know where each batch ends in the byte stream on the wire. With
asyncio's TLS transport it would not: the transport buffers plaintext and ciphertext out of
sight. Here OpenSSL works on memory buffers (ssl.MemoryBIO): a batch is encrypted as a whole,
its records are sent on the sink's own socket, and the end of the batch's last record is a
known offset. A batch counts as delivered once the peer's kernel has acknowledged every record
that carries it, which is the plain-TCP meaning; the listener's TLS library may still have to
decrypt them.

Files are read as the pipeline's user (root), so they must not be someone else's plant: each
is opened without following a symbolic link, must be a regular file owned by root or the
running user and not writable by group or others; the private key must not be readable by
them either. OpenSSL then reads the very file that was checked, through /proc/self/fd.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import ssl
import stat
from collections.abc import Iterator
from typing import Any

from pipeline.sinks.base import SinkError

RECV_CHUNK = 65536


@contextlib.contextmanager
def _checked(key: str, path: str, secret: bool) -> Iterator[str]:
    """Yield a path OpenSSL can open that names the checked file, or raise SinkError."""

    def refuse(problem: str, fix: str) -> SinkError:
        return SinkError(f"sink socket: option '{key}' {path}: {problem}; {fix}")

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
                     | os.O_NOCTTY)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise refuse("is a symbolic link", "give the path of the file itself") from None
        raise refuse(e.strerror or str(e), "fix the path in the sink config") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise refuse("is not a regular file", "give a PEM file")
        if st.st_uid not in (0, os.geteuid()):
            raise refuse(f"belongs to uid {st.st_uid}", "it must belong to root (chown root)")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o022:
            raise refuse(f"is writable by other users (mode {mode:#o})", "chmod go-w it")
        if secret and mode & 0o077:
            raise refuse(f"is readable by other users (mode {mode:#o})", "chmod 600 it")
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def client_context(config: dict[str, Any]) -> ssl.SSLContext:
    """The context for `config` (the socket sink's validated options), or SinkError."""
    ca, cert, key = config["tls_ca"], config["tls_cert"], config["tls_key"]
    # Certificate and host name checked, TLS 1.2 at least.
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH) if not ca else (
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca:
        with _checked("tls_ca", ca, secret=False) as p:
            try:
                ctx.load_verify_locations(cafile=p)
            except ssl.SSLError as e:
                raise SinkError(f"sink socket: option 'tls_ca' {ca}: no CA certificate in it "
                                f"({_reason(e)}); give a PEM file of CA certificates") from None
    if cert:
        with contextlib.ExitStack() as stack:
            cert_p = stack.enter_context(_checked("tls_cert", cert, secret=not key))
            key_p = stack.enter_context(_checked("tls_key", key, secret=True)) if key else None
            try:
                ctx.load_cert_chain(cert_p, key_p)
            except ssl.SSLError as e:
                raise SinkError(f"sink socket: options 'tls_cert'/'tls_key' {cert} {key}: "
                                f"not a usable certificate and key ({_reason(e)}); give PEM "
                                "files of a certificate and its private key") from None
    return ctx


def _reason(e: ssl.SSLError) -> str:
    return str(e.reason or e.strerror or e).replace("_", " ").lower()


def describe(e: ssl.SSLError) -> str:
    """One line for an error met during or after a handshake."""
    if isinstance(e, ssl.SSLCertVerificationError):
        return f"its TLS certificate was refused: {e.verify_message}"
    return f"TLS: {_reason(e)}"


class TlsStream:
    """The TLS record layer of one connection, on memory buffers."""

    def __init__(self, obj: ssl.SSLObject, incoming: ssl.MemoryBIO,
                 outgoing: ssl.MemoryBIO) -> None:
        self._obj = obj
        self._in = incoming
        self._out = outgoing

    def encrypt(self, data: bytes) -> bytes:
        """The bytes to send for `data`: its records, after anything already due."""
        view = memoryview(data)
        while view:
            view = view[self._obj.write(view):]
        return self._out.read()

    def feed(self, data: bytes) -> bool:
        """Take bytes from the peer; True once it has sent close_notify. Whatever it sends
        is processed (session tickets, key updates) and its application data ignored: the
        protocol is one-way. Raises ssl.SSLError for a fatal alert or a bad record."""
        self._in.write(data)
        while True:
            try:
                if not self._obj.read(RECV_CHUNK):
                    return True
            except ssl.SSLWantReadError:
                return False
            except ssl.SSLZeroReturnError:
                return True

    def close_notify(self) -> bytes:
        """The bytes of our close_notify alert."""
        with contextlib.suppress(ssl.SSLError):
            self._obj.unwrap()  # SSLWantReadError: the peer's own close_notify is not needed
        return self._out.read()


async def handshake(sock: socket.socket, ctx: ssl.SSLContext, server_name: str) -> TlsStream:
    """Run the client handshake on the connected non-blocking `sock`."""
    loop = asyncio.get_running_loop()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_side=False, server_hostname=server_name)
    while True:
        try:
            obj.do_handshake()
            done = True
        except ssl.SSLWantReadError:
            done = False
        data = outgoing.read()
        if data:
            await loop.sock_sendall(sock, data)
        if done:
            return TlsStream(obj, incoming, outgoing)
        chunk = await loop.sock_recv(sock, RECV_CHUNK)
        if not chunk:
            raise ConnectionResetError(errno.ECONNRESET,
                                       "the listener closed the connection during the TLS "
                                       "handshake")
        incoming.write(chunk)

"""What the nats sink and the consume command share: the server list, subjects, the
credential and TLS files (checked before they are read), one connection attempt, and the
line that says why one failed.

Files named in the config are read as root, so each must not be someone else's plant: opened
without following a symbolic link, a regular file owned by root or the running user, not
writable by group or others; secrets (keys, seeds, creds) not readable by them either.
Credentials are read once at start and handed to the client as text, so a file swapped
later is never read; OpenSSL reads the checked certificate files through /proc/self/fd.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import ssl
import stat
from collections import UserString
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pipeline.sinks.base import SinkError

SCHEMES = ("nats", "tls")
DEFAULT_PORT = 4222
# Subject tokens: printable ASCII without the separator, wildcards or spaces. The server
# accepts more, but a token that a shell or a consumer's filter mangles is no help.
_TOKEN_BAD = set(" \t\r\n.*>")


@dataclass(frozen=True)
class Server:
    url: str  # as given, normalized to scheme://host:port
    host: str
    port: int
    tls: bool


def parse_servers(text: str) -> list[Server]:
    """"nats://HOST:PORT[,nats://...]" (tls:// asks for TLS); ValueError says what is wrong."""
    out: list[Server] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            raise ValueError("has an empty entry; separate URLs with single commas")
        try:
            u = urlsplit(item)
        except ValueError as e:
            raise ValueError(f"entry {item!r} is not a URL ({e})") from None
        try:
            port = u.port
        except ValueError:
            port = 0
        if u.scheme not in SCHEMES:
            raise ValueError(f"entry {item!r} must start with nats:// or tls://")
        if u.username is not None or u.password is not None:
            raise ValueError(f"entry {item!r} carries credentials, which any user can read "
                             "in the process list; use the token, user/password, nkey_seed "
                             "or creds keys instead")
        if not u.hostname:
            raise ValueError(f"entry {item!r} has no host")
        if u.path not in ("", "/") or u.query or u.fragment:
            raise ValueError(f"entry {item!r} must be only scheme://HOST:PORT")
        port = DEFAULT_PORT if port is None else port
        if not 1 <= port <= 65535:
            raise ValueError(f"entry {item!r} needs a port between 1 and 65535")
        host = u.hostname
        shown = f"[{host}]" if ":" in host else host
        out.append(Server(f"{u.scheme}://{shown}:{port}", host, port, u.scheme == "tls"))
    return out


def check_servers(value: Any) -> str | None:
    try:
        parse_servers(value)
    except ValueError as e:
        return str(e)
    return None


def subject_problem(subject: str, wildcards: bool) -> str | None:
    """What is wrong with a subject (None: nothing). `wildcards`: * and > allowed (filters)."""
    if not subject:
        return "must not be empty"
    if not subject.isascii() or not subject.isprintable():
        return "must be printable ASCII"
    tokens = subject.split(".")
    for i, tok in enumerate(tokens):
        if not tok:
            return "has an empty token (two dots in a row, or a dot at an end)"
        if wildcards and (tok == "*" or (tok == ">" and i == len(tokens) - 1)):
            continue
        bad = sorted(set(tok) & _TOKEN_BAD)
        if bad:
            what = "wildcards (* >)" if set(bad) & {"*", ">"} else f"{bad[0]!r}"
            return f"has {what} in token {tok!r}"
    return None


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS matching: * is one token, a final > is one or more."""
    p, s = pattern.split("."), subject.split(".")
    for i, tok in enumerate(p):
        if tok == ">":
            return len(s) > i
        if i >= len(s) or (tok != "*" and tok != s[i]):
            return False
    return len(p) == len(s)


# -- files ---------------------------------------------------------------------------------

def _refusal(where: str, key: str, path: str, problem: str, fix: str) -> SinkError:
    return SinkError(f"{where}: option '{key}' {path}: {problem}; {fix}")


@contextlib.contextmanager
def checked(where: str, key: str, path: str, secret: bool) -> Iterator[int]:
    """Yield an fd of the checked file `path`, or raise SinkError."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
                     | os.O_NOCTTY)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _refusal(where, key, path, "is a symbolic link",
                           "give the path of the file itself") from None
        raise _refusal(where, key, path, e.strerror or str(e), "fix the path") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _refusal(where, key, path, "is not a regular file", "give a file")
        if st.st_uid not in (0, os.geteuid()):
            raise _refusal(where, key, path, f"belongs to uid {st.st_uid}",
                           "it must belong to root (chown root)")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o022:
            raise _refusal(where, key, path, f"is writable by other users (mode {mode:#o})",
                           "chmod go-w it")
        if secret and mode & 0o077:
            raise _refusal(where, key, path, f"is readable by other users (mode {mode:#o})",
                           "chmod 600 it")
        yield fd
    finally:
        os.close(fd)


def read_checked(where: str, key: str, path: str, secret: bool) -> str:
    with checked(where, key, path, secret) as fd:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
            if sum(map(len, chunks)) > 1 << 20:
                raise _refusal(where, key, path, "is larger than 1 MiB", "give the right file")
    try:
        return b"".join(chunks).decode("ascii")
    except UnicodeDecodeError:
        raise _refusal(where, key, path, "is not ASCII text", "give the right file") from None


def tls_context(where: str, config: dict[str, Any]) -> ssl.SSLContext:
    """Client context: the server's certificate and name verified, TLS 1.2 at least."""
    ca, cert, key = config["tls_ca"], config["tls_cert"], config["tls_key"]
    ctx = (ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT) if ca
           else ssl.create_default_context(ssl.Purpose.SERVER_AUTH))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca:
        pem = read_checked(where, "tls_ca", ca, secret=False)
        try:
            ctx.load_verify_locations(cadata=pem)
        except ssl.SSLError as e:
            raise SinkError(f"{where}: option 'tls_ca' {ca}: no CA certificate in it "
                            f"({_reason(e)}); give a PEM file of CA certificates") from None
    if cert:
        with contextlib.ExitStack() as stack:
            cfd = stack.enter_context(checked(where, "tls_cert", cert, secret=not key))
            kfd = stack.enter_context(checked(where, "tls_key", key, secret=True)) if key else None
            try:
                ctx.load_cert_chain(f"/proc/self/fd/{cfd}",
                                    None if kfd is None else f"/proc/self/fd/{kfd}")
            except ssl.SSLError as e:
                raise SinkError(f"{where}: options 'tls_cert'/'tls_key' {cert} {key}: not a "
                                f"usable certificate and key ({_reason(e)}); give PEM files "
                                "of a certificate and its private key") from None
    return ctx


def _reason(e: ssl.SSLError) -> str:
    return str(e.reason or e.strerror or e).replace("_", " ").lower()


# -- options both commands take --------------------------------------------------------------

CONNECTION_KEYS = ("url", "tls", "tls_ca", "tls_cert", "tls_key", "tls_server_name", "token",
                   "user", "password", "nkey_seed", "creds", "connect_timeout")


def check_connection_options(where: str, out: dict[str, Any]) -> None:
    """Combinations that cannot work, as one line each (SinkError)."""
    servers = parse_servers(out["url"])
    tls_keys = [k for k in ("tls_ca", "tls_cert", "tls_key", "tls_server_name") if out[k]]
    use_tls = out["tls"] or any(s.tls for s in servers)
    if tls_keys and not use_tls:
        raise SinkError(f"{where}: option '{tls_keys[0]}' has no effect without TLS; set "
                        "tls = true (or use tls:// URLs) or remove it")
    if out["tls_key"] and not out["tls_cert"]:
        raise SinkError(f"{where}: option 'tls_key' needs 'tls_cert' (the certificate of that "
                        "key); set tls_cert")
    methods = [k for k in ("token", "user", "nkey_seed", "creds") if out[k]]
    if len(methods) > 1:
        raise SinkError(f"{where}: options {methods[0]!r} and {methods[1]!r} are two ways to "
                        "log in; keep one")
    if bool(out["user"]) != bool(out["password"]):
        raise SinkError(f"{where}: options 'user' and 'password' go together; set both or "
                        "neither")


def connect_kwargs(where: str, config: dict[str, Any]) -> dict[str, Any]:
    """nats.connect's keyword arguments for these (validated) options, files read now."""
    servers = parse_servers(config["url"])
    kw: dict[str, Any] = {
        "servers": [s.url for s in servers],
        "connect_timeout": config["connect_timeout"],
        # The sink reconnects itself, with its own backoff, on a new connection: the client's
        # own reconnection would replay buffered publishes in an order the sink cannot see.
        "allow_reconnect": False,
        # With reconnection off, the client tries each server twice (its attempt counter
        # must exceed this); no pause between the two.
        "max_reconnect_attempts": 1,
        "reconnect_time_wait": 0,
        "dont_randomize": False,
    }
    if config["tls"] or any(s.tls for s in servers):
        kw["tls"] = tls_context(where, config)
        if config["tls_server_name"]:
            kw["tls_hostname"] = config["tls_server_name"]
    if config["token"]:
        kw["token"] = config["token"]
    if config["user"]:
        kw["user"], kw["password"] = config["user"], config["password"]
    if config["nkey_seed"]:
        kw["nkeys_seed_str"] = read_checked(where, "nkey_seed", config["nkey_seed"],
                                            secret=True).strip()
    if config["creds"]:
        text = read_checked(where, "creds", config["creds"], secret=True)
        if "BEGIN NATS USER JWT" not in text or "BEGIN USER NKEY SEED" not in text:
            raise SinkError(f"{where}: option 'creds' {config['creds']}: not a NATS creds file "
                            "(a user JWT and its NKey seed); give the file nsc generated")
        kw["user_credentials"] = _RawCreds(text)
    return kw


class _RawCreds(UserString):
    """The client reads a creds file's contents from a UserString instead of a path."""


def why(e: BaseException) -> str:
    """One clause for a failed connection or request."""
    import nats.errors

    if isinstance(e, nats.errors.AuthorizationError) or "authorization" in str(e).lower():
        return "the server refused the credentials (authorization violation)"
    if isinstance(e, TlsClosed):
        return str(e)
    if isinstance(e, ssl.SSLCertVerificationError):
        return f"its TLS certificate was refused: {e.verify_message}"
    if isinstance(e, ssl.SSLError):
        text = _reason(e)
        if "certificate required" in text:
            return "the server asks for a client certificate (TLS: certificate required)"
        return f"TLS: {text}"
    if isinstance(e, (TimeoutError, nats.errors.TimeoutError)):
        return "timed out"
    if isinstance(e, socket.gaierror) and e.strerror:
        return f"cannot resolve the host: {e.strerror}"
    if isinstance(e, OSError) and e.errno and e.errno > 0:
        return os.strerror(e.errno)
    text = str(e).strip() or type(e).__name__
    return " ".join(text.removeprefix("nats: ").split())


def fix_for(e: BaseException, flag: str) -> str:
    import nats.errors

    if isinstance(e, nats.errors.AuthorizationError) or "authorization" in str(e).lower():
        return "fix token, user/password, nkey_seed or creds in [sink.nats]"
    if isinstance(e, (ssl.SSLError, TlsClosed)):
        return ("check tls_ca, tls_server_name, and tls_cert/tls_key if the server asks for a "
                "client certificate")
    return f"start nats-server (with -js) or fix {flag}"


def _not_eof_warning(record: logging.LogRecord) -> bool:
    # The client's protocol answers a TLS peer's EOF as a plain socket's, which asyncio's
    # TLS layer notes with a warning; it means nothing for the connection or its user.
    return not str(record.msg).startswith("returning true from eof_received()")


async def connect(config: dict[str, Any], kwargs: dict[str, Any], **callbacks: Any) -> Any:
    """One connection attempt over the server list; raises the underlying error (the last
    server's) rather than the client's generic "no servers"."""
    import nats
    import nats.errors

    asyncio_log = logging.getLogger("asyncio")
    if _not_eof_warning not in asyncio_log.filters:
        asyncio_log.addFilter(_not_eof_warning)
    errors: list[BaseException] = []

    async def on_error(e: Exception) -> None:
        errors.append(e)

    user_error = callbacks.pop("error_cb", None)

    async def error_cb(e: Exception) -> None:
        await on_error(e)
        if user_error is not None:
            await user_error(e)

    try:
        try:
            return await nats.connect(**kwargs, error_cb=error_cb, **callbacks)
        except nats.errors.NoServersError:
            real = [e for e in errors if not isinstance(e, nats.errors.NoServersError)]
            if real:
                # an authorization refusal says more than the reset that followed it
                auth = [e for e in real if isinstance(e, nats.errors.AuthorizationError)]
                raise (auth or real)[-1] from None
            raise
    except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError, ssl.SSLEOFError):
        if "tls" not in kwargs:
            raise
        # The server ends the connection during the TLS set-up without a reason the client
        # can read (its alert is lost with the connection; whether the client then sees a
        # reset, a broken pipe or an EOF depends on which of its writes or reads comes
        # first): the usual cause is a client certificate it requires and did not get, or
        # does not trust.
        if not config["tls_cert"]:
            raise TlsClosed("the server closed the connection during TLS set-up: it asks for "
                            "a client certificate") from None
        raise TlsClosed("the server closed the connection during TLS set-up: it does not "
                        "accept the client certificate") from None


class TlsClosed(ConnectionError):
    """The server hung up during the TLS set-up; str() says the likely reason."""

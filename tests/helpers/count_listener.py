"""A listener for the sink tests, run as root or planted by an unprivileged user: counts
connections, bytes and whole lines it receives (after TLS, with --cert), and keeps the lines
in --lines-file. On SIGTERM it stops accepting, sends FIN (close_notify under TLS) on every
connection, reads each to EOF, removes its unix socket, writes "CONNS BYTES LINES PARTIAL" to
--count-file (PARTIAL: connections that ended inside a line) and exits. Standard library
only: it runs under the system python as nobody."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import ssl


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--unix")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--client-ca", help="require a client certificate from this CA")
    ap.add_argument("--count-file", required=True)
    ap.add_argument("--lines-file")
    ap.add_argument("--ready-file", required=True)
    args = ap.parse_args()
    ctx = None
    if args.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.cert, args.key)
        if args.client_ca:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(args.client_ca)
    conns = 0
    nbytes = 0
    partial = 0
    lines: list[bytes] = []
    tasks: set[asyncio.Task[None]] = set()
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal conns, nbytes, partial
        conns += 1
        writers.append(writer)
        tail = b""
        try:
            while chunk := await reader.read(1 << 16):
                nbytes += len(chunk)
                tail += chunk
                cut = tail.rfind(b"\n") + 1
                lines.extend(tail[:cut].splitlines(keepends=True))
                tail = tail[cut:]
        except (OSError, ssl.SSLError):
            pass
        partial += bool(tail)
        writer.close()

    def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        t = asyncio.ensure_future(handle(r, w))
        tasks.add(t)
        t.add_done_callback(tasks.discard)

    if args.unix:
        server = await asyncio.start_unix_server(on_conn, path=args.unix, ssl=ctx)
    else:
        server = await asyncio.start_server(on_conn, "127.0.0.1", args.port, ssl=ctx)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    with open(args.ready_file, "w") as f:
        f.write("ready")
    await stop.wait()
    server.close()
    for w in writers:
        if w.can_write_eof():
            w.write_eof()
        elif not w.is_closing():
            w.close()  # TLS: close_notify
    if tasks:
        await asyncio.wait(tasks, timeout=10)
    if args.unix:
        os.unlink(args.unix)
    if args.lines_file:
        with open(args.lines_file, "wb") as f:
            f.write(b"".join(lines))
    with open(args.count_file, "w") as f:
        f.write(f"{conns} {nbytes} {len(lines)} {partial}")


asyncio.run(main())

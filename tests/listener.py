"""A JSON-lines listener for tests: counts the lines it receives. On SIGTERM it
shuts down gracefully: stops accepting, half-closes each connection (FIN) and
reads it to EOF, then writes its count to --count-file and exits."""

from __future__ import annotations

import argparse
import asyncio
import signal


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--unix")
    ap.add_argument("--count-file", required=True)
    ap.add_argument("--ready-file", required=True)
    args = ap.parse_args()
    lines = 0
    partial = 0
    conns: set[asyncio.Task[None]] = set()
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal lines, partial
        writers.append(writer)
        tail = b""
        while True:
            chunk = await reader.read(1 << 16)
            if not chunk:
                break
            tail += chunk
            n = tail.count(b"\n")
            lines += n
            tail = tail[tail.rfind(b"\n") + 1:] if n else tail
        partial += bool(tail)
        writer.close()

    def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        t = asyncio.ensure_future(handle(r, w))
        conns.add(t)
        t.add_done_callback(conns.discard)

    if args.unix:
        server = await asyncio.start_unix_server(on_conn, path=args.unix)
    else:
        server = await asyncio.start_server(on_conn, "127.0.0.1", args.port)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    with open(args.ready_file, "w") as f:
        f.write("ready")
    await stop.wait()
    server.close()
    for w in writers:
        if w.can_write_eof():
            w.write_eof()  # FIN: the sender stops and closes its side
    if conns:
        await asyncio.wait(conns, timeout=10)
    with open(args.count_file, "w") as f:
        f.write(f"{lines} {partial}")


asyncio.run(main())

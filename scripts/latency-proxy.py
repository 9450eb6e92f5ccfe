#!/usr/bin/env python3
"""A TCP proxy that adds a round-trip time, for benchmarks against a store (or a server) that
answers from the same machine as fast as a remote one would not.

    scripts/latency-proxy.py [--rtt-ms 20] [--quiet] LISTEN_PORT HOST:PORT

Listens on 127.0.0.1:LISTEN_PORT and forwards every connection to HOST:PORT. Each chunk read
from either side is written to the other half the round trip later (--rtt-ms / 2 in each
direction), so a request and its answer take one round trip more than without the proxy,
whatever their size; bandwidth is not limited. The TCP handshake with the proxy itself is not
delayed (clients that keep connections open, as object store clients do, pay it once anyway). Order is kept per connection and direction, and
a half-close (EOF) is passed on once the data before it is delivered. LISTEN_PORT 0 takes a
free port. Once listening it prints "listening on 127.0.0.1:<port>" on stdout (scripts wait for
that line); errors go to stderr.

Used by scripts/bench-restore.sh (section latency) between `pitr` and Garage (S3) to stand for
an object store in the same region (20 ms round trip); it works for Redis connections too
(`--target` through the proxy). Python 3.8+, standard library only.

SIGTERM or SIGINT: stops listening, closes every connection, exits 0.
"""

import argparse
import asyncio
import signal
import sys

CHUNK = 64 * 1024
# Chunks waiting in one direction before the reader stops reading (backpressure): at most
# 16 MiB per direction and connection.
QUEUED = 256


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="latency-proxy.py",
        usage="%(prog)s [--rtt-ms 20] [--quiet] LISTEN_PORT HOST:PORT",
        description="TCP proxy on 127.0.0.1 adding a round-trip time (half in each direction).",
    )
    p.add_argument("--rtt-ms", type=float, default=20.0, help="round trip added (ms, default 20)")
    p.add_argument("--quiet", action="store_true", help="do not log connections on stderr")
    p.add_argument("listen_port", type=int, metavar="LISTEN_PORT")
    p.add_argument("upstream", metavar="HOST:PORT")
    a = p.parse_args(argv)
    host, sep, port = a.upstream.rpartition(":")
    if not sep or not host or not port.isdigit():
        p.error(f"HOST:PORT expected, got {a.upstream!r}")
    if a.rtt_ms < 0:
        p.error("--rtt-ms must not be negative")
    if not 0 <= a.listen_port <= 65535:
        p.error(f"LISTEN_PORT out of range: {a.listen_port}")
    a.host, a.port = host.strip("[]"), int(port)
    return a


async def pump(reader, writer, delay, loop):
    """Copies reader to writer, each chunk `delay` seconds after it was read, in order."""
    queue = asyncio.Queue(QUEUED)

    async def read():
        try:
            while True:
                data = await reader.read(CHUNK)
                await queue.put((loop.time() + delay, data))
                if not data:
                    return
        except (ConnectionError, OSError):
            await queue.put((loop.time() + delay, b""))

    async def write():
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    reading = asyncio.ensure_future(read())
    try:
        await write()
    finally:
        reading.cancel()


async def handle(client_r, client_w, args, conns, log):
    loop = asyncio.get_running_loop()
    delay = args.rtt_ms / 2000.0
    peer = client_w.get_extra_info("peername")
    task = asyncio.current_task()
    conns.add(task)
    up_w = None
    try:
        try:
            up_r, up_w = await asyncio.wait_for(
                asyncio.open_connection(args.host, args.port), timeout=10
            )
        except (OSError, asyncio.TimeoutError) as e:
            log(f"{peer}: cannot connect to {args.host}:{args.port}: {e}")
            return
        ups = asyncio.gather(
            pump(client_r, up_w, delay, loop), pump(up_r, client_w, delay, loop)
        )
        try:
            await ups
        except (ConnectionError, OSError) as e:
            log(f"{peer}: {e}")
    except asyncio.CancelledError:
        pass
    finally:
        for w in (client_w, up_w):
            if w is not None:
                w.close()
        conns.discard(task)


async def main(args):
    log = (lambda _m: None) if args.quiet else (lambda m: print(f"latency-proxy: {m}", file=sys.stderr))
    conns = set()
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, args, conns, log), "127.0.0.1", args.listen_port
    )
    port = server.sockets[0].getsockname()[1]
    print(f"listening on 127.0.0.1:{port}", flush=True)
    log(f"127.0.0.1:{port} -> {args.host}:{args.port}, {args.rtt_ms:g} ms round trip added")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    for t in list(conns):
        t.cancel()
    if conns:
        await asyncio.wait(list(conns), timeout=5)
    # (Since Python 3.12 this also waits for the connections, closed above.)
    await server.wait_closed()
    log("stopped")


if __name__ == "__main__":
    try:
        asyncio.run(main(parse_args(sys.argv[1:])))
    except OSError as e:
        print(f"latency-proxy: {e}", file=sys.stderr)
        sys.exit(1)

"""Userspace latency proxy: adds a fixed one-way delay in each direction (the kernel here has no netem).

``python bench/delay_proxy.py LISTEN_PORT UPSTREAM_HOST UPSTREAM_PORT RTT_MS [SECONDS]`` — a new connection
also waits one RTT before its first byte moves, like a TCP handshake over that path. Loopback only; it exits
by itself after SECONDS (default 600) so that a crashed benchmark never leaves it behind.
"""

from __future__ import annotations

import asyncio
import sys


async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, delay: float) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue()

    async def reader() -> None:
        try:
            while data := await src.read(262144):
                queue.put_nowait((loop.time() + delay, data))
        except OSError:
            pass
        queue.put_nowait((loop.time() + delay, None))

    async def writer() -> None:
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if data is None:
                try:
                    dst.write_eof()
                except OSError:
                    pass
                return
            dst.write(data)
            await dst.drain()

    await asyncio.gather(reader(), writer(), return_exceptions=True)


async def main(listen: int, host: str, port: int, rtt_ms: float, lifetime: float) -> None:
    delay = rtt_ms / 2000.0

    async def handle(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        await asyncio.sleep(2 * delay)  # the handshake's round trip
        try:
            ur, uw = await asyncio.open_connection(host, port)
        except OSError:
            cw.close()
            return
        await asyncio.gather(pipe(cr, uw, delay), pipe(ur, cw, delay), return_exceptions=True)
        for w in (cw, uw):
            w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", listen, backlog=1024)
    print("ready", flush=True)
    async with server:
        await asyncio.sleep(lifetime)


if __name__ == "__main__":
    a = sys.argv[1:]
    asyncio.run(main(int(a[0]), a[1], int(a[2]), float(a[3]), float(a[4]) if len(a) > 4 else 600.0))

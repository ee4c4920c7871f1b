"""An open-loop HTTP/1.1 load generator (standard library + uvloop when installed).

    python benchmarks/_open_loop.py --url http://127.0.0.1:3000/score --bodies bodies.jsonl \\
        --rate 300 --duration 20 [--closed N] [--bucket-s 60]

Open loop: request i is due at ``start + i / rate`` whatever happened to earlier ones; its
latency runs from that scheduled time to the last byte of the answer, so a server (or this
generator) that falls behind shows up as latency instead of silently lowering the offered rate.
Each due request takes an idle keep-alive connection or opens a new one. ``send_lag`` (actual
write time minus scheduled time) is this generator's own delay, reported separately.

``--closed N``: N connections each send the next request as soon as the previous one is
answered, for ``--duration`` seconds: the saturation throughput (capacity).

Prints one JSON object. Kept to the standard library so it starts fast in its own process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections import deque
from urllib.parse import urlsplit

TIMEOUT_S = 10.0
MAX_CONNECTIONS = 4_000
# uvicorn closes a keep-alive connection idle for 5 s; one idle longer than this is not reused
# (else a request written as the server closes it fails: the client's race, not the server's)
IDLE_REUSE_S = 2.0
SHED_STATUSES = (429, 503)
# uvloop's loop.time() moves in whole milliseconds: every timestamp here is perf_counter's
now = time.perf_counter


def _percentile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    rank = max(1, -(-len(ordered) * q // 100))
    return round(ordered[int(rank) - 1] * 1000, 3)


class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.used = time.perf_counter()

    async def exchange(self, request: bytes) -> tuple[int, bool]:
        """Send ``request``, read the whole answer: (status, connection still usable)."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length, chunked, keep = 0, False, True
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and b"close" in value.lower():
                keep = False
        if chunked:
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        elif length:
            await self.reader.readexactly(length)
        return status, keep

    def close(self) -> None:
        self.writer.close()


class Generator:
    def __init__(self, url: str, bodies: list[bytes]) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        path = parts.path or "/"
        self.requests = [
            (
                f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body
            for body in bodies
        ]
        self.idle: deque[Conn] = deque()
        self.open = 0
        # (scheduled offset, latency s, status, latency from the actual send s)
        self.results: list[tuple[float, float, int, float]] = []
        self.send_lag: list[float] = []
        self.connect_errors = 0

    async def _conn(self) -> Conn | None:
        while self.idle:
            conn = self.idle.pop()  # the most recently used first
            if now() - conn.used < IDLE_REUSE_S:
                return conn
            conn.close()
            self.open -= 1
        if self.open >= MAX_CONNECTIONS:
            return None
        self.open += 1
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        except OSError:
            self.open -= 1
            self.connect_errors += 1
            return None
        return Conn(reader, writer)

    async def fire(self, index: int, due: float, start: float) -> None:
        status = -1  # transport error
        conn = await self._conn()
        sent = now()
        if conn is not None:
            self.send_lag.append(sent - due)
            keep = False
            try:
                async with asyncio.timeout(TIMEOUT_S - (now() - due)):
                    status, keep = await conn.exchange(self.requests[index % len(self.requests)])
            except TimeoutError:
                status = -2
            except (OSError, asyncio.IncompleteReadError, ValueError):
                status = -1
            if keep:
                conn.used = now()
                self.idle.append(conn)
            else:
                conn.close()
                self.open -= 1
        done = now()
        self.results.append((due - start, done - due, status, done - sent))

    async def open_loop(self, rate: float, duration: float) -> float:
        total = int(rate * duration)
        start = now() + 0.05
        tasks = set()
        for i in range(total):
            due = start + i / rate
            delay = due - now()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(self.fire(i, due, start))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks)
        return duration

    async def closed_loop(self, connections: int, duration: float) -> float:
        start = now()
        stop = start + duration
        counter = iter(range(10**9))

        async def worker() -> None:
            while now() < stop:
                await self.fire(next(counter), now(), start)

        await asyncio.gather(*(worker() for _ in range(connections)))
        return now() - start

    def summary(self, elapsed: float, bucket_s: float | None) -> dict:
        ok = sorted(lat for _, lat, status, _ in self.results if status == 200)
        ok_from_send = sorted(lat for _, _, status, lat in self.results if status == 200)
        shed = sum(1 for _, _, status, _ in self.results if status in SHED_STATUSES)
        statuses: dict[str, int] = {}
        for _, _, status, _ in self.results:
            statuses[str(status)] = statuses.get(str(status), 0) + 1
        lag = sorted(self.send_lag)
        out = {
            "sent": len(self.results),
            "ok": len(ok),
            "shed": shed,
            "errors": len(self.results) - len(ok) - shed,
            "statuses": statuses,
            "seconds": round(elapsed, 2),
            "goodput_rps": round(len(ok) / elapsed, 1) if elapsed else None,
            "p50_ms": round(statistics.median(ok) * 1000, 3) if ok else None,
            "p90_ms": _percentile(ok, 90),
            "p99_ms": _percentile(ok, 99),
            "p999_ms": _percentile(ok, 99.9),
            # from the actual send: without this generator's own delay (send_lag)
            "p99_from_send_ms": _percentile(ok_from_send, 99),
            "max_ms": round(ok[-1] * 1000, 3) if ok else None,
            "send_lag_p50_ms": round(statistics.median(lag) * 1000, 3) if lag else None,
            "send_lag_p99_ms": _percentile(lag, 99),
            "connections": self.open,
        }
        if bucket_s:
            buckets: dict[int, list[float]] = {}
            for offset, lat, status, _ in self.results:
                if status == 200:
                    buckets.setdefault(int(offset // bucket_s), []).append(lat)
            out["p99_ms_per_bucket"] = [
                _percentile(sorted(buckets[b]), 99) for b in sorted(buckets)
            ]
        return out


async def _main(args: argparse.Namespace) -> dict:
    with open(args.bodies, "rb") as handle:
        bodies = [line.rstrip(b"\n") for line in handle if line.strip()]
    generator = Generator(args.url, bodies)
    if args.closed:
        elapsed = await generator.closed_loop(args.closed, args.duration)
    else:
        elapsed = await generator.open_loop(args.rate, args.duration)
    for conn in generator.idle:
        conn.close()
    return generator.summary(elapsed, args.bucket_s)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--bodies", required=True, help="one JSON request body per line")
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--closed", type=int, default=0)
    parser.add_argument("--bucket-s", type=float, default=None)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    started = time.perf_counter()
    result = asyncio.run(_main(args))
    result["wall_s"] = round(time.perf_counter() - started, 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""An open-loop HTTP/1.1 load generator (standard library + uvloop when installed).

    python benchmarks/_open_loop.py --url http://127.0.0.1:3000/score --bodies bodies.jsonl \\
        --rate 300 --duration 20 [--closed N] [--bucket-s 60]

Open loop: request i is due at ``start + i / rate`` whatever happened to earlier ones; its
latency runs from that scheduled time to the last byte of the answer, so a server (or this
generator) that falls behind shows up as latency instead of silently lowering the offered rate.
Each due request takes an idle keep-alive connection or opens a new one. ``send_lag`` (actual
write time minus scheduled time) is this generator's own delay, reported separately.

``--closed N``: N connections each send the next request as soon as the previous one is
answered (20 ms after a 503/429), for ``--duration`` seconds: the saturation throughput
(capacity).

Prints one JSON object. Kept to the standard library so it starts fast in its own process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
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
# closed loop: a refused request is sent again after this long, not at once (at once, the loop
# measured how fast the server refuses its own retries)
CLOSED_RETRY_S = 0.02
# The generator shares the cores with the server it loads: at a lower niceness it is scheduled
# first, so a send is late only when the generator itself is out of CPU (send_lag says so).
NICE = -10
# uvloop's loop.time() moves in whole milliseconds: every timestamp here is perf_counter's
now = time.perf_counter


def _percentile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    rank = max(1, -(-len(ordered) * q // 100))
    return round(ordered[int(rank) - 1] * 1000, 3)


class Conn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request at a time. Callbacks only: no stream
    objects, no task or timeout context per request (they were most of this generator's CPU,
    which the server then lacked)."""

    def __init__(self, generator: Generator) -> None:
        self.generator = generator
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.pending: tuple[int, float, float] | None = None  # (index, due, sent)
        self.used = now()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, request: bytes, index: int, due: float) -> None:
        sent = now()
        self.pending = (index, due, sent)
        self.generator.send_lag.append(sent - due)
        self.transport.write(request)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or self.pending is None:
            return
        lines = bytes(self.buffer[:end]).split(b"\r\n")
        length, keep = 0, True
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                raise ValueError("chunked answers are not supported by this generator")
            elif name == b"connection" and b"close" in value.lower():
                keep = False
        if len(self.buffer) < end + 4 + length:
            return
        del self.buffer[: end + 4 + length]
        pending, self.pending = self.pending, None
        self.generator.answered(self, pending, int(lines[0].split(b" ", 2)[1]), keep)

    def connection_lost(self, exc: Exception | None) -> None:
        pending, self.pending = self.pending, None
        if pending is not None:
            self.generator.answered(self, pending, -1, False)
        self.generator.lost(self)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


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
        self.busy: set[Conn] = set()
        self.open = 0
        # (scheduled offset, latency s, status, latency from the actual send s)
        self.results: list[tuple[float, float, int, float]] = []
        self.send_lag: list[float] = []
        self.connect_errors = 0
        self.start = 0.0
        self.outstanding = 0
        self.closed_until = 0.0  # closed loop: send again on an answer until then
        self.finished: asyncio.Future[None] | None = None
        self.scheduled_all = False
        self.sent_closed = 0

    def fire(self, index: int, due: float) -> None:
        """Send request ``index`` (due at ``due``) on an idle connection, else a new one."""
        self.outstanding += 1
        while self.idle:
            conn = self.idle.pop()  # the most recently used first
            if now() - conn.used < IDLE_REUSE_S:
                self.busy.add(conn)
                conn.send(self.requests[index % len(self.requests)], index, due)
                return
            conn.close()
        asyncio.get_running_loop().create_task(self._fire_new(index, due))

    async def _fire_new(self, index: int, due: float) -> None:
        if self.open >= MAX_CONNECTIONS:
            self._record(due, now(), -1, now())
            return
        self.open += 1
        try:
            _, conn = await asyncio.get_running_loop().create_connection(
                lambda: Conn(self), self.host, self.port
            )
        except OSError:
            self.open -= 1
            self.connect_errors += 1
            self._record(due, now(), -1, now())
            return
        self.busy.add(conn)
        conn.send(self.requests[index % len(self.requests)], index, due)

    def answered(self, conn: Conn, pending: tuple[int, float, float], status: int, keep: bool):
        index, due, sent = pending
        self.busy.discard(conn)
        self._record(due, sent, status, now())
        if keep:
            conn.used = now()
            self.idle.append(conn)
        else:
            conn.close()
        if self.closed_until and now() < self.closed_until:
            if status in SHED_STATUSES:  # as a client honouring Retry-After would, briefly
                asyncio.get_running_loop().call_later(CLOSED_RETRY_S, self._fire_closed)
            else:
                self._fire_closed()

    def _fire_closed(self) -> None:
        self.fire(self.sent_closed, now())
        self.sent_closed += 1

    def lost(self, conn: Conn) -> None:
        self.open -= 1
        self.busy.discard(conn)
        with contextlib.suppress(ValueError):
            self.idle.remove(conn)

    def _record(self, due: float, sent: float, status: int, done: float) -> None:
        self.results.append((due - self.start, done - due, status, done - sent))
        self.outstanding -= 1
        if self.scheduled_all and self.outstanding == 0 and self.finished is not None:
            if not self.finished.done():
                self.finished.set_result(None)

    def _expire(self) -> None:
        """Answers overdue by TIMEOUT_S: recorded as timeouts, their connections dropped."""
        limit = now() - TIMEOUT_S
        for conn in [c for c in self.busy if c.pending is not None and c.pending[1] < limit]:
            pending, conn.pending = conn.pending, None
            self.busy.discard(conn)
            self._record(pending[1], pending[2], -2, now())
            conn.close()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            self._expire()

    async def _until_answered(self) -> None:
        self.finished = asyncio.get_running_loop().create_future()
        self.scheduled_all = True
        if self.outstanding:
            await self.finished

    @staticmethod
    async def _until(due: float) -> None:
        """Return at ``due``: uvloop's timers have a 1 ms resolution and a shorter sleep
        returns at once, so waiting for a send under 1 ms away spun the loop (most of this
        generator's CPU at 600 req/s). The last stretch is slept off precisely, after the loop
        has read what arrived; an answer arriving meanwhile is read up to that much later
        (latency overstated, never understated)."""
        if due - now() > 0.0015:
            await asyncio.sleep(due - now() - 0.001)
        await asyncio.sleep(0)
        left = due - now()
        if left > 0:
            time.sleep(left)

    async def open_loop(self, rate: float, duration: float) -> float:
        total = int(rate * duration)
        self.start = start = now() + 0.05
        sweeper = asyncio.get_running_loop().create_task(self._sweep())
        i = 0
        while i < total:
            current = now()
            while i < total and start + i / rate <= current:  # everything due by now
                self.fire(i, start + i / rate)
                i += 1
            if i < total:
                await self._until(start + i / rate)
        await self._until_answered()
        sweeper.cancel()
        return duration

    async def closed_loop(self, connections: int, duration: float) -> float:
        self.start = start = now()
        self.closed_until = start + duration
        sweeper = asyncio.get_running_loop().create_task(self._sweep())
        for _ in range(connections):
            self._fire_closed()
        await asyncio.sleep(duration)
        await self._until_answered()
        sweeper.cancel()
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
            "p50_from_send_ms": _percentile(ok_from_send, 50),
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
    summary = generator.summary(elapsed, args.bucket_s)
    if args.latencies_out:  # every answered request's latency (ms), for pooling across runs
        with open(args.latencies_out, "w") as out:
            out.writelines(
                f"{lat * 1000:.4f}\n" for _, lat, status, _ in generator.results if status == 200
            )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--bodies", required=True, help="one JSON request body per line")
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--closed", type=int, default=0)
    parser.add_argument("--bucket-s", type=float, default=None)
    parser.add_argument(
        "--latencies-out", help="file to write every answered request's latency to (ms a line)"
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=NICE,
        help="niceness to run at (default %(default)s: ahead of the server it loads, so its "
        "send times hold; kept as is when not permitted)",
    )
    args = parser.parse_args()
    nice = os.getpriority(os.PRIO_PROCESS, 0)
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)
        nice = args.nice
    # With autogroup scheduling (Linux's default for sessions) a niceness only orders the
    # threads of one session: in a session of its own, the whole group gets it, so the
    # generator goes ahead of the server's session and of the neighbours'.
    with contextlib.suppress(OSError):
        os.setsid()
        with open("/proc/self/autogroup", "w") as group:
            group.write(str(args.nice))
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    started = time.perf_counter()
    result = asyncio.run(_main(args))
    result["wall_s"] = round(time.perf_counter() - started, 2)
    result["nice"] = nice
    with contextlib.suppress(OSError), open("/proc/self/autogroup") as group:
        result["autogroup"] = group.read().strip()
    result["cpu_ms_per_req"] = round(1000 * sum(os.times()[:2]) / max(result["sent"], 1), 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

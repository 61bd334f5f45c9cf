"""The grader's load generator: trusted code outside the sandbox, over the service's Unix socket.

aiohttp's client with a ``UnixConnector`` keeps connections alive and stays far faster than the
services it measures (``benchmarks/loadgen_ceiling.py`` checks the ratio), so the generator is
never the bottleneck. Each response is parsed and checked against the protocol and the expected
answer; failures are counted by kind, never raised.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np
from pydantic import ValidationError

from grader.contracts.service import HEALTH_PATH, PROCESS_PATH, ProcessResponse
from grader.grading.corpus import Item

MAX_RESPONSE_BYTES = 64 * 1024


@dataclass
class LevelStats:
    """One concurrency level: counts by outcome and the latencies of completed requests."""

    concurrency: int
    duration_s: float = 0.0
    ok: int = 0
    wrong: int = 0
    malformed: int = 0
    http_errors: int = 0
    failed: int = 0  # connection errors and timeouts
    correct_labels: int = 0
    labelled: int = 0
    latencies_s: list[float] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return self.ok + self.wrong + self.malformed + self.http_errors + self.failed

    @property
    def answered(self) -> int:
        return self.ok + self.wrong

    @property
    def throughput(self) -> float:
        """Correct answers per second: wrong or failed requests do not count as work done."""
        return self.ok / self.duration_s if self.duration_s else 0.0

    @property
    def error_rate(self) -> float:
        return (self.requests - self.answered) / self.requests if self.requests else 1.0

    @property
    def agreement(self) -> float | None:
        return self.ok / self.answered if self.answered else None

    @classmethod
    def combined(cls, parts: list[LevelStats]) -> LevelStats:
        """Slices of one level (measured interleaved with another service) as one level."""
        total = cls(parts[0].concurrency)
        for part in parts:
            for name in (
                "duration_s",
                "ok",
                "wrong",
                "malformed",
                "http_errors",
                "failed",
                "correct_labels",
                "labelled",
            ):
                setattr(total, name, getattr(total, name) + getattr(part, name))
            total.latencies_s.extend(part.latencies_s)
        return total

    def percentile_ms(self, q: float) -> float | None:
        return float(np.percentile(self.latencies_s, q) * 1e3) if self.latencies_s else None


def _connector(socket_path: Path) -> aiohttp.UnixConnector:
    return aiohttp.UnixConnector(path=str(socket_path), limit=0)


async def _one(session: aiohttp.ClientSession, item: Item, stats: LevelStats, timeout: aiohttp.ClientTimeout) -> None:
    started = time.perf_counter()
    try:
        async with session.post(
            f"http://service{PROCESS_PATH}",
            data=item.body,
            timeout=timeout,
            headers={"Content-Type": "application/json"},
        ) as response:
            raw = await response.content.read(MAX_RESPONSE_BYTES + 1)
            status = response.status
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
        stats.failed += 1
        return
    stats.latencies_s.append(time.perf_counter() - started)
    if status != 200:
        stats.http_errors += 1
        return
    try:
        if len(raw) > MAX_RESPONSE_BYTES:
            raise ValueError("response too large")
        answer = ProcessResponse.model_validate_json(raw)
    except (ValidationError, ValueError):
        stats.malformed += 1
        return
    if answer.id != item.id:
        stats.malformed += 1
        return
    if answer.label == item.expected:
        stats.ok += 1
    else:
        stats.wrong += 1
    if item.label is not None:
        stats.labelled += 1
        stats.correct_labels += int(answer.label == item.label)


async def _drive(
    socket_path: Path, corpus: list[Item], concurrency: int, duration_s: float, request_timeout_s: float
) -> LevelStats:
    stats = LevelStats(concurrency)
    items = itertools.cycle(corpus)
    timeout = aiohttp.ClientTimeout(total=request_timeout_s)
    deadline = time.perf_counter() + duration_s
    async with aiohttp.ClientSession(connector=_connector(socket_path)) as session:

        async def user() -> None:
            while time.perf_counter() < deadline:
                await _one(session, next(items), stats, timeout)

        started = time.perf_counter()
        await asyncio.gather(*(user() for _ in range(concurrency)))
        stats.duration_s = time.perf_counter() - started
    return stats


def run_level(
    socket_path: Path, corpus: list[Item], concurrency: int, duration_s: float, request_timeout_s: float = 5.0
) -> LevelStats:
    """Closed-loop load: ``concurrency`` users each sending the next request when the last returns."""
    return asyncio.run(_drive(socket_path, corpus, concurrency, duration_s, request_timeout_s))


async def _healthy(socket_path: Path) -> bool:
    if not socket_path.exists():
        return False
    try:
        async with aiohttp.ClientSession(connector=_connector(socket_path)) as session:
            async with session.get(f"http://service{HEALTH_PATH}", timeout=aiohttp.ClientTimeout(total=2)) as r:
                return r.status == 200
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
        return False


def wait_healthy(socket_path: Path, timeout_s: float, still_running) -> float | None:  # noqa: ANN001
    """Seconds until ``GET /health`` answered 200, or None if it never did (or the service died)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if not still_running():
            return None
        if asyncio.run(_healthy(socket_path)):
            return time.monotonic() - started
        time.sleep(0.2)
    return None

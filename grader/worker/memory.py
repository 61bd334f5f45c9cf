"""Each model's peak memory, measured in a fresh copy of the worker.

Measured in the worker itself, the second model reads almost nothing: the allocator hands it the
memory the first one freed. So before any model is loaded for real, the worker forks once per
model; the child (a copy of the worker as it is then, with the runtimes imported and nothing
loaded) resets its high-water mark, loads the model, runs one batch and reports how far its
resident memory rose. Every model is measured from the same state, whatever the order.
"""

from __future__ import annotations

import json
import os
import select
import signal
import time
from collections.abc import Callable

from grader.worker.measure import peak_rss_mb, reset_peak_rss, rss_mb

TIMEOUT_S = 300.0


def peak_memory_mb(load_and_run: Callable[[], object], timeout_s: float = TIMEOUT_S) -> float | None:
    """How many MiB ``load_and_run`` adds at its peak, in a forked child; ``None`` where the
    child fails or the platform cannot fork (the caller then measures in-process)."""
    if not hasattr(os, "fork"):
        return None
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: measure, report one number, leave without running any cleanup
        os.close(read)
        try:
            reset_peak_rss()
            before = rss_mb()
            load_and_run()
            os.write(write, json.dumps(max(peak_rss_mb() - before, 0.0)).encode())
        except BaseException:  # noqa: BLE001 - the in-process load reports the failure properly
            pass
        os._exit(0)
    os.close(write)
    try:
        return _read_answer(read, pid, timeout_s)
    finally:
        os.close(read)


def _read_answer(read: int, pid: int, timeout_s: float) -> float | None:
    deadline = time.monotonic() + timeout_s
    data = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            os.kill(pid, signal.SIGKILL)  # a model that hangs: the in-process load meets the time limit
            break
        ready, _, _ = select.select([read], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(read, 64)
        if not chunk:
            break
        data += chunk
    os.waitpid(pid, 0)
    try:
        return float(json.loads(data)) if data else None
    except ValueError:
        return None

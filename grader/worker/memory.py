"""Each model's peak memory, measured in a fresh copy of the worker, and its untimed answers.

Measured in the worker itself, the second model reads almost nothing: the allocator hands it the
memory the first one freed. So before any model is loaded for real, the worker forks once per
model; the child (a copy of the worker as it is then, with the runtimes imported and nothing
loaded) resets its high-water mark, loads the model, runs the first batch and notes how far its
resident memory rose. Every model is measured from the same state, whatever the order.

The child then runs the rest of the inputs and sends its answers back with the peak, so the
worker does not run every input a second time (on hw2's reference that was a third of the
loading phase). The peak is read after the first batch, as before, so holding the answers does
not count against the model. A child that fails, or whose answers cannot be sent as plain
arrays, sends none: the worker then runs the inputs itself, and reports any failure properly.
"""

from __future__ import annotations

import io
import json
import os
import select
import signal
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from grader.worker.measure import peak_rss_mb, reset_peak_rss, rss_mb

TIMEOUT_S = 300.0
HEADER = struct.Struct("<Q")  # the length of the JSON header that comes first on the pipe
READ_BYTES = 1 << 20

# ``load_and_run(first_batch_done)``: load, run every input (calling ``first_batch_done`` once the
# first batch has run) and return the outputs, one array per model output
LoadAndRun = Callable[[Callable[[], None]], list[np.ndarray]]


@dataclass(frozen=True)
class Forked:
    """What the child measured: the peak in MiB, and the outputs where it could send them."""

    peak_mb: float | None
    outputs: list[np.ndarray] | None = None


NOT_FORKED = Forked(None)  # nothing measured in a child: all is measured in-process


def measure_in_fork(load_and_run: LoadAndRun, timeout_s: float = TIMEOUT_S) -> Forked:
    """The MiB ``load_and_run`` adds at its peak (up to its first batch), in a forked child, and
    the outputs it gave; ``Forked(None)`` where the child fails or the platform cannot fork (the
    caller then measures and runs in-process)."""
    if not hasattr(os, "fork"):
        return NOT_FORKED
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: measure, report, leave without running any cleanup
        os.close(read)
        _child(load_and_run, write)
        os._exit(0)
    os.close(write)
    try:
        return parse_answer(_read_answer(read, pid, timeout_s))
    finally:
        os.close(read)


def _child(load_and_run: LoadAndRun, write: int) -> None:
    peak: list[float] = []

    def first_batch_done() -> None:
        if not peak:
            peak.append(max(peak_rss_mb() - before, 0.0))

    try:
        reset_peak_rss()
        before = rss_mb()
        outputs = load_and_run(first_batch_done)
    except BaseException:  # noqa: BLE001 - the in-process load reports the failure properly
        return
    if not peak:
        return
    sendable = all(isinstance(o, np.ndarray) and not o.dtype.hasobject for o in outputs)
    header = json.dumps({"peak_mb": peak[0], "outputs": len(outputs) if sendable else None}).encode()
    try:
        with os.fdopen(write, "wb", closefd=False) as channel:
            channel.write(HEADER.pack(len(header)) + header)
            for output in outputs if sendable else []:
                np.lib.format.write_array(_Writes(channel), output, allow_pickle=False)
    except BaseException:  # noqa: BLE001 - a broken pipe: the parent parses what it has, or nothing
        return


class _Writes:
    """Only ``write``: numpy then streams an array in chunks, where on a real file object it would
    ``tofile`` through the descriptor, which a pipe refuses (it cannot seek)."""

    def __init__(self, channel: io.BufferedWriter) -> None:
        self.write = channel.write


def parse_answer(data: bytes) -> Forked:
    """The child's answer: a header with the peak and the number of outputs, then the arrays. A
    truncated or malformed answer keeps what can be trusted (the peak), never half the outputs."""
    if len(data) < HEADER.size:
        return Forked(None)
    (length,) = HEADER.unpack_from(data)
    try:
        header = json.loads(data[HEADER.size : HEADER.size + length])
        peak = float(header["peak_mb"])
        count = header["outputs"]
    except (ValueError, KeyError, TypeError):
        return Forked(None)
    if not isinstance(count, int) or count <= 0:
        return Forked(peak)
    stream = io.BytesIO(data)
    stream.seek(HEADER.size + length)
    try:
        outputs = [np.lib.format.read_array(stream, allow_pickle=False) for _ in range(count)]
    except (ValueError, OSError, EOFError):
        return Forked(peak)
    return Forked(peak, outputs if stream.tell() == len(data) else None)


def _read_answer(read: int, pid: int, timeout_s: float) -> bytes:
    deadline = time.monotonic() + timeout_s
    chunks: list[bytes] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            os.kill(pid, signal.SIGKILL)  # a model that hangs: the in-process load meets the time limit
            chunks = []
            break
        ready, _, _ = select.select([read], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(read, READ_BYTES)
        if not chunk:
            break
        chunks.append(chunk)
    os.waitpid(pid, 0)
    return b"".join(chunks)

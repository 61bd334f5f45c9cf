"""Each model's peak memory, measured in a fresh copy of the worker, and its untimed answers.

Measured in the worker itself, the second model reads almost nothing: the allocator hands it the
memory the first one freed. So before any model is loaded for real, the worker forks once per
model; the child (a copy of the worker as it is then, with the runtimes imported and nothing
loaded) resets its high-water mark, loads the model, runs the first batch and notes how far its
resident memory rose. Every model is measured from the same state, whatever the order.

The child then runs the rest of the inputs and sends its answers back, so the worker does not run
every input a second time (on hw2's reference that was a third of the loading phase). The pipe
carries length-prefixed JSON messages: the peak, sent as soon as the first batch has run, then
either the answers (a count, then that many ``.npy`` arrays) or the problem a later batch raised
(the worker reports it as its own, without running the model again). Answers the caller will not
take (``send_if`` on the first batch: arrays of Python objects, or too large to be worth a copy)
are not computed at all. Whatever the child fails to send, the worker measures or runs itself.
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

from grader.contracts.problem import Problem
from grader.errors import SubmissionError
from grader.worker.measure import peak_rss_mb, reset_peak_rss, rss_mb

TIMEOUT_S = 300.0
HEADER = struct.Struct("<Q")  # the length of each JSON message on the pipe
READ_BYTES = 1 << 20

# ``load_and_run(first_batch_done)``: load, run every input (calling ``first_batch_done`` with the
# first batch's outputs once it has run) and return the outputs, one array per model output
FirstBatchDone = Callable[[list[np.ndarray]], None]
LoadAndRun = Callable[[FirstBatchDone], list[np.ndarray]]


@dataclass(frozen=True)
class Forked:
    """What the child measured: the peak in MiB, the outputs where it sent them, and the problem a
    later batch raised where one did."""

    peak_mb: float | None
    outputs: list[np.ndarray] | None = None
    problem: Problem | None = None


NOT_FORKED = Forked(None)  # nothing measured in a child: all is measured in-process


class _Unsent(Exception):
    """The first batch says the answers are not to be sent: stop the child there."""


def measure_in_fork(
    load_and_run: LoadAndRun, send_if: Callable[[list[np.ndarray]], bool], timeout_s: float = TIMEOUT_S
) -> Forked:
    """The MiB ``load_and_run`` adds at its peak (up to its first batch), in a forked child, and
    the outputs it gave where ``send_if`` takes the first batch's; ``NOT_FORKED`` where the child
    fails before its first batch or the platform cannot fork (the caller then does it all)."""
    return measure_in_forks([(load_and_run, send_if)], timeout_s)[0]


def measure_in_forks(
    work: list[tuple[LoadAndRun, Callable[[list[np.ndarray]], bool]]], timeout_s: float = TIMEOUT_S
) -> list[Forked]:
    """``measure_in_fork`` for several models at once, one child each, all forked before any runs
    (so each starts from the same state) and running side by side: a child's high-water mark is
    its own, so its peak is the same whatever runs next to it; only the time differs."""
    if not hasattr(os, "fork"):
        return [NOT_FORKED for _ in work]
    started: list[tuple[int, int]] = []
    try:
        for load_and_run, send_if in work:
            started.append(_fork(load_and_run, send_if))
    except BaseException:
        for read, pid in started:
            _end(read, pid)
        raise
    return [parse_answer(answer) for answer in _read_answers(started, timeout_s)]


def _fork(load_and_run: LoadAndRun, send_if: Callable[[list[np.ndarray]], bool]) -> tuple[int, int]:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: measure, report, leave without running any cleanup
        try:
            os.close(read)
            _child(load_and_run, send_if, write)
        finally:  # whatever escapes (a broken pipe at the last flush), never the worker's own code
            os._exit(0)
    os.close(write)
    return read, pid


def _end(read: int, pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    os.close(read)


def _child(load_and_run: LoadAndRun, send_if: Callable[[list[np.ndarray]], bool], write: int) -> None:
    with os.fdopen(write, "wb", closefd=False) as channel:

        def first_batch_done(first: list[np.ndarray]) -> None:
            _message(channel, {"peak_mb": max(peak_rss_mb() - before, 0.0)})
            channel.flush()  # the peak is the parent's even if a later batch kills this child
            if not (all(isinstance(o, np.ndarray) and not o.dtype.hasobject for o in first) and send_if(first)):
                raise _Unsent

        try:
            reset_peak_rss()
            before = rss_mb()
            outputs = load_and_run(first_batch_done)
            _message(channel, {"outputs": len(outputs)})
            for output in outputs:
                np.lib.format.write_array(_Writes(channel), output, allow_pickle=False)
        except SubmissionError as error:  # a later batch failed: the parent need not run it again
            _message(channel, {"problem": error.problem.model_dump(mode="json")})
        except BaseException:  # noqa: BLE001 - not sent, or a load that failed: the parent does it itself
            return


def _message(channel: io.BufferedWriter, value: dict) -> None:
    data = json.dumps(value).encode()
    channel.write(HEADER.pack(len(data)) + data)


class _Writes:
    """Only ``write``: numpy then streams an array in chunks, where on a real file object it would
    ``tofile`` through the descriptor, which a pipe refuses (it cannot seek)."""

    def __init__(self, channel: io.BufferedWriter) -> None:
        self.write = channel.write


def _read_message(stream: io.BytesIO) -> dict | None:
    raw = stream.read(HEADER.size)
    if len(raw) < HEADER.size:
        return None
    (length,) = HEADER.unpack(raw)
    body = stream.read(length)
    try:
        value = json.loads(body) if len(body) == length else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def parse_answer(data: bytes) -> Forked:
    """The child's answer: the peak, then the outputs or a problem. A truncated or malformed answer
    keeps what can be trusted (the peak), never half the outputs."""
    stream = io.BytesIO(data)
    first = _read_message(stream)
    try:
        peak = float(first["peak_mb"]) if first is not None else None
    except (KeyError, TypeError, ValueError):
        peak = None
    if peak is None:
        return NOT_FORKED
    second = _read_message(stream)
    if second is not None and "problem" in second:
        try:
            return Forked(peak, problem=Problem.model_validate(second["problem"]))
        except ValueError:
            return Forked(peak)
    count = second.get("outputs") if second is not None else None
    if not isinstance(count, int) or isinstance(count, bool) or count <= 0:
        return Forked(peak)
    try:
        outputs = [np.lib.format.read_array(stream, allow_pickle=False) for _ in range(count)]
    except (ValueError, OSError, EOFError):
        return Forked(peak)
    return Forked(peak, outputs if stream.tell() == len(data) else None)


def _read_answers(started: list[tuple[int, int]], timeout_s: float) -> list[bytes]:
    """Every child's answer, read as they come (a pipe left unread would stall its child); each
    child reaped. A child still running at the deadline (a model that hangs) is killed with what
    it sent so far (the peak, if it came; never half the outputs: ``parse_answer``)."""
    deadline = time.monotonic() + timeout_s
    chunks: dict[int, list[bytes]] = {read: [] for read, _ in started}
    open_reads = set(chunks)
    try:
        while open_reads:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            ready, _, _ = select.select(sorted(open_reads), [], [], remaining)
            for read in ready:
                chunk = os.read(read, READ_BYTES)
                if chunk:
                    chunks[read].append(chunk)
                else:
                    open_reads.discard(read)
    except BaseException:
        for read, pid in started:  # the parent itself ran out (of memory): never leave a child running
            _end(read, pid)
        raise
    for read, pid in started:
        if read in open_reads:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(read)
    return [b"".join(chunks[read]) for read, _ in started]

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
import math
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
    work: list[tuple[LoadAndRun, Callable[[list[np.ndarray]], bool]]],
    timeout_s: float = TIMEOUT_S,
    overlap_mb: float = 0.0,
) -> list[Forked]:
    """``measure_in_fork`` for several models, one child each, every one forked from the worker as
    it is before any model is loaded. A child whose peak (sent after its first batch) is at most
    ``overlap_mb`` lets the next one start while it runs its remaining batches: a child's
    high-water mark is its own, so the peaks read the same either way, and the sandbox's memory
    limit, which counts the children together, meets at most that much more than one at a time
    (and the answers that child holds until it has sent them, under the caller's ``send_if``).
    A larger peak, or none, and the next child waits until this one has ended."""
    if not hasattr(os, "fork"):
        return [NOT_FORKED for _ in work]
    children: list[_Child] = []
    try:
        for number, (load_and_run, send_if) in enumerate(work):
            if number:  # the next child starts once the one before has ended or peaked low enough
                _read_until(children, lambda newest=children[-1]: newest.done or newest.peak_at_most(overlap_mb))
            children.append(_Child(*_fork(load_and_run, send_if, [c.read for c in children]), timeout_s))
        _read_until(children, lambda: all(c.done for c in children))
    except BaseException:
        for child in children:  # the worker itself ran out (of memory): never leave a child running
            child.end(kill=True)
        raise
    for child in children:
        child.end(kill=not child.closed)  # one still running at its deadline (a model that hangs)
    return [parse_answer(child.data()) for child in children]


class _Child:
    """A forked child as the worker reads it: its pipe, what came so far, its own deadline."""

    def __init__(self, read: int, pid: int, timeout_s: float) -> None:
        self.read, self.pid = read, pid
        self.deadline = time.monotonic() + timeout_s
        self.chunks: list[bytes] = []
        self.done = False  # its pipe closed, or its deadline passed
        self.closed = False  # its pipe closed: it ended by itself
        self.peak: float | None = None
        self.ended = False

    def data(self) -> bytes:
        return b"".join(self.chunks)

    def peak_at_most(self, mb: float) -> bool:
        """Whether its first message (the peak) has come, and says at most ``mb``."""
        if self.peak is None and sum(len(c) for c in self.chunks[:4]) >= HEADER.size:
            first = _read_message(io.BytesIO(b"".join(self.chunks[:4])))  # one message: a few bytes
            try:
                self.peak = float(first["peak_mb"]) if first is not None else None
            except (KeyError, TypeError, ValueError):
                self.peak = math.inf  # not a peak: the next child waits for this one to end
        return mb > 0 and self.peak is not None and self.peak <= mb

    def end(self, kill: bool) -> None:
        if self.ended:
            return
        self.ended = True
        if kill:
            os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        os.close(self.read)


def _read_until(children: list[_Child], enough: Callable[[], bool]) -> None:
    """Read every open child's pipe as it comes (a pipe left unread would stall its child) until
    ``enough`` holds or none is open; a child past its deadline counts as done with what it sent
    (the peak, if it came; never half the outputs: ``parse_answer``)."""
    while not enough():
        now = time.monotonic()
        for child in children:
            if not child.done and now >= child.deadline:
                child.done = True
        running = [c for c in children if not c.done]
        if not running:
            return
        wait = min(c.deadline for c in running) - now
        ready, _, _ = select.select([c.read for c in running], [], [], max(wait, 0.0))
        for child in running:
            if child.read in ready:
                chunk = os.read(child.read, READ_BYTES)
                if chunk:
                    child.chunks.append(chunk)
                else:
                    child.done = child.closed = True


def _fork(
    load_and_run: LoadAndRun, send_if: Callable[[list[np.ndarray]], bool], siblings: list[int]
) -> tuple[int, int]:
    """A child started on ``load_and_run``; ``siblings`` are the read ends of the children still
    running, which this one closes (they are not its to hold open)."""
    read, write = os.pipe()
    try:
        pid = os.fork()
    except BaseException:
        os.close(read)
        os.close(write)
        raise
    if pid == 0:  # the child: measure, report, leave without running any cleanup
        try:
            os.close(read)
            for sibling in siblings:
                os.close(sibling)
            _child(load_and_run, send_if, write)
        finally:  # whatever escapes (a broken pipe at the last flush), never the worker's own code
            os._exit(0)
    os.close(write)
    return read, pid


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

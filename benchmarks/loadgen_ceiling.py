"""Benchmark: the load generator's own ceiling against a trivial endpoint, versus the reference
service's throughput, measured in one run on this machine (target: ceiling >= 5x the service).

The trivial endpoint is a bare asyncio server answering every request with fixed bytes, in its
own process, so what limits the rate is the generator, not the server.

Run: .venv/bin/python benchmarks/loadgen_ceiling.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from grader.config.assignment import Limits, load_assignment  # noqa: E402
from grader.grading.corpus import load_corpus  # noqa: E402
from grader.grading.loadgen import run_level, wait_healthy  # noqa: E402
from grader.grading.service import expected_answers  # noqa: E402
from grader.sandbox.service_local import running_service  # noqa: E402
from reference.build import ensure_built  # noqa: E402


def _trivial_server(socket_path: str) -> None:
    body = b'{"id":"x","label":0}'
    reply = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if length:
                    await reader.readexactly(length)
                writer.write(reply)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server = await asyncio.start_unix_server(handle, path=socket_path)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def ceiling(corpus, seconds: float, concurrency: int) -> float:  # noqa: ANN001
    with tempfile.TemporaryDirectory() as work:
        socket_path = Path(work) / "trivial.sock"
        server = multiprocessing.Process(target=_trivial_server, args=(str(socket_path),), daemon=True)
        server.start()
        while not socket_path.exists():
            time.sleep(0.05)
        stats = run_level(socket_path, corpus, concurrency, seconds)
        server.terminate()
    return stats.requests / stats.duration_s


def reference_throughput(corpus, seconds: float) -> tuple[float, int]:  # noqa: ANN001
    spec = load_assignment("final-service").service
    with (
        tempfile.TemporaryDirectory() as work,
        running_service(
            spec.reference_command, ROOT / spec.reference_folder, Limits(wall_time_s=600), Path(work), 1, "reference"
        ) as service,
    ):
        if wait_healthy(service.socket, 60, service.alive) is None:
            raise SystemExit(f"reference service did not start: {service.log_tail()}")
        run_level(service.socket, corpus, 1, 1.0)
        best = max((run_level(service.socket, corpus, c, seconds) for c in spec.levels), key=lambda s: s.throughput)
    return best.throughput, best.concurrency


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    ensure_built()
    spec = load_assignment("final-service").service
    corpus_path = ROOT / spec.corpus
    corpus = load_corpus(corpus_path, expected_answers(spec, corpus_path))
    service, level = reference_throughput(corpus, args.seconds)
    generator = max(ceiling(corpus, args.seconds, c) for c in (16, 64))
    rows = [
        (f"reference service, best level (concurrency {level})", f"{service:,.0f} req/s", ""),
        ("load generator ceiling (trivial endpoint)", f"{generator:,.0f} req/s", ""),
        ("ceiling / reference service", f"{generator / service:.1f}x", ">= 5x"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'figure':<{width}}  {'measured':<14}  target\n" + "-" * (width + 26))
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:<14}  {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

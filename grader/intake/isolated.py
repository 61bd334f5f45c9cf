"""Host-side vetting of a submission's files, in a child process with memory, CPU-time and
file-size limits.

Vetting parses untrusted files on the host (ONNX protobufs, zip central directories, a
``.pt2``'s program JSON): a crafted 30 MB file can expand to gigabytes in a parser. So the
pipeline never parses them in its own process: ``vet_isolated`` runs ``vet_submission`` in
``python -m grader.intake.isolated`` under rlimits and a wall-time limit, and reads back only a
small JSON answer (the vetted artifacts, or the problems to fix). Nothing of the student's runs
here: the child runs the grader's own parsing code, and the limits only bound what a file can
make it spend. A file that makes it run out of them is the student's to fix.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from grader.config.assignment import Assignment
from grader.contracts.problem import Problem
from grader.errors import SubmissionError, WorkerError
from grader.intake.artifacts import Artifact

MAX_ANSWER_BYTES = 4 * 1024 * 1024
CPU_SECONDS = 120
WALL_SECONDS = 240
MIN_MEMORY_MB = 2048


def memory_limit_mb(assignment: Assignment) -> int:
    """Room to parse the largest model the assignment accepts (protobuf holds it about twice)."""
    return max(MIN_MEMORY_MB, 3 * assignment.limits.model_file_mb + 1024)


@dataclass(frozen=True)
class Vetted:
    """What the child found: the vetted files, and the labels of the team's inputs (the host scores
    the worker's predictions with them; ``None`` where the inputs have none)."""

    artifacts: list[Artifact]
    labels: list[int] | None


def vet_isolated(folder: Path, root: Path, assignment: Assignment, vetted: Path) -> Vetted:
    """The submission's vetted artifacts, parsed in the limited child; ``SubmissionError`` names
    what to fix, ``WorkerError`` is a failure of the grader's own."""
    request = json.dumps({"folder": str(folder), "root": str(root), "assignment": assignment.id, "vetted": str(vetted)})
    memory = memory_limit_mb(assignment)
    file_limit = (assignment.limits.model_file_mb + 1) * 2**20
    try:
        done = subprocess.run(
            [sys.executable, "-m", "grader.intake.isolated"],
            input=request.encode(),
            capture_output=True,
            timeout=WALL_SECONDS,
            preexec_fn=lambda: _limits(memory, file_limit),
        )
    except subprocess.TimeoutExpired:
        raise _too_much("time") from None
    answer = _answer(done.stdout)
    if answer is None:
        if done.returncode < 0 or b"MemoryError" in done.stderr:
            raise _too_much("memory or CPU time")
        raise WorkerError(
            f"vetting the submission failed (exit {done.returncode}): {done.stderr.decode('utf-8', 'replace')[-1500:]}"
        )
    if "resource" in answer:
        raise _too_much(str(answer["resource"]))
    if answer.get("problems"):
        raise SubmissionError.of([Problem.model_validate(p) for p in answer["problems"]])
    labels = answer.get("labels")
    if labels is not None and not (isinstance(labels, list) and all(type(y) is int for y in labels)):
        raise WorkerError("vetting answered with malformed labels")
    return Vetted([Artifact.from_json(item) for item in answer["artifacts"]], labels)


def _limits(memory_mb: int, file_bytes: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_mb * 2**20, memory_mb * 2**20))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS))
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_bytes, file_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _answer(raw: bytes) -> dict | None:
    if not raw or len(raw) > MAX_ANSWER_BYTES:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _too_much(what: str) -> SubmissionError:
    return SubmissionError(
        f"the submission's files could not be read within the grader's limits ({what}): a model file that "
        "takes gigabytes to parse, or an archive of a great many entries, cannot be graded.",
        "Export the model again with the framework's own exporter (torch.onnx.export, torch.export.save) "
        "and keep it to what the model needs.",
        kind="size",
    )


def read_labels(path: Path, limit: int) -> list[int] | None:
    """The ``labels`` array of an inputs.npz as whole numbers (one per sample, or a column of them);
    ``None`` when there is none or it is not a label per sample."""
    import numpy as np

    with np.load(path, allow_pickle=False) as archive:
        if "labels" not in archive.files:
            return None
        labels = archive["labels"]
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.number) or not np.all(np.isfinite(labels)):
        return None
    labels = labels[:limit]
    if not np.all(labels == np.round(labels)):
        return None
    return [int(y) for y in labels]


def unreadable(exc: BaseException) -> Problem:
    """A file the readers choke on (a zip with a broken directory, an unknown compression, a
    field of the wrong type): the student's to fix, named as precisely as the reader said."""
    detail = " ".join(str(exc).split())[:300]
    return Problem(
        kind="format",
        message=f"a submitted file could not be read ({type(exc).__name__}: {detail}).",
        hint="Save it again with the tool that made it (torch.onnx.export, torch.export.save, numpy.savez) "
        "and check that it loads on your machine; do not edit model archives by hand.",
    )


def main() -> int:
    """The child: read the request on stdin, vet, answer on stdout (JSON only)."""
    from grader.config.assignment import load_assignment
    from grader.intake.manifest import load_manifest
    from grader.intake.submission import vet_submission

    request = json.loads(sys.stdin.buffer.read())
    folder = Path(request["folder"])
    assignment = load_assignment(request["assignment"], Path(request["root"]))  # staff's: its errors are ours
    try:
        artifacts = vet_submission(folder, load_manifest(folder), assignment, Path(request["vetted"]))
        inputs = next((a for a in artifacts if a.role == "inputs"), None)
        labels = read_labels(inputs.path, assignment.measure.max_samples) if inputs is not None else None
        answer: dict = {"artifacts": [a.to_json() for a in artifacts], "labels": labels}
    except SubmissionError as exc:
        answer = {"problems": [p.model_dump() for p in exc.problems]}
    except MemoryError:
        answer = {"resource": "memory"}
    except RecursionError:
        answer = {
            "problems": [
                Problem(
                    kind="format",
                    message="a submitted file is nested too deeply to be read.",
                    hint="Export the model again with the framework's own exporter.",
                ).model_dump()
            ]
        }
    except Exception as exc:  # noqa: BLE001 - only the student's files are read here: whatever breaks is theirs
        answer = {"problems": [unreadable(exc).model_dump()]}
    sys.stdout.write(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())

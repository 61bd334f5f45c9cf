"""``grader regrade``: grade stored submissions again, at their graded commit, with today's config.

Each submission is taken from git at the SHA it was graded at (``git archive``), never from the
working tree, and graded with the same pipeline as ``grader check``, keeping its PR, SHA and
GitHub event time, so lateness is unchanged and the new grading replaces the old one in the
gradebook (same commit graded again). Gradings run in a process pool; a regrade that ends in
``status: error`` (the grader's own fault) is reported and never stored, so it cannot take a
grade away. For a class too large for one machine, ``grader.gradebook.tasks`` writes the work as
shards for a ``workflow_dispatch`` matrix (``.github/workflows/regrade.yml``); each runner first
fetches its shard's commits (``fetch_commits``, the only step with a token), then grades them
without the store, the network or a token.
"""

from __future__ import annotations

import base64
import hashlib
import io
import multiprocessing
import multiprocessing.queues
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from grader.contracts.lfs import MAX_POINTER_BYTES, parse_pointer
from grader.contracts.result import Result
from grader.gradebook.tasks import Task
from grader.records.filing import keyed_to_folder
from grader.sandbox.base import Sandboxes

SUBMISSIONS = "submissions"


@dataclass
class Outcome:
    task: Task
    result_json: str | None  # None when the submission could not be checked out
    problem: str = ""

    @property
    def result(self) -> Result | None:
        return Result.model_validate_json(self.result_json) if self.result_json else None


def select_tasks(
    runs: pd.DataFrame, assignment: str | None = None, team: str | None = None
) -> tuple[list[Task], list[str]]:
    """The current gradings to redo (from ``Gradebook.runs``), and why others cannot be."""
    chosen = runs[runs["current"]]
    if assignment:
        chosen = chosen[chosen["assignment"] == assignment]
    if team:
        chosen = chosen[chosen["team"] == team]
    tasks, skipped = [], []
    for row in chosen.itertuples(index=False):
        if not isinstance(row.head_sha, str):
            skipped.append(f"run {row.id} ({row.team}, {row.assignment}): no commit SHA recorded")
            continue
        tasks.append(
            Task(
                run_id=int(row.id),
                team=row.team,
                assignment=row.assignment,
                head_sha=row.head_sha,
                repository=row.repository if isinstance(row.repository, str) else None,
                pr_number=int(row.pr_number) if pd.notna(row.pr_number) else None,
                event_time=row.event_time if isinstance(row.event_time, str) else None,
                old_status=row.status,
                old_score=float(row.score),
            )
        )
    return tasks, skipped


def _git(repo: Path, *args: str, data: bool = False, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, timeout=300, text=not data, env=env)


def _have_commit(repo: Path, sha: str) -> bool:
    return _git(repo, "cat-file", "-e", f"{sha}^{{commit}}").returncode == 0


def ensure_commit(repo: Path, task: Task, env: dict[str, str] | None = None) -> None:
    """Make the commit available locally: a PR head from a fork is fetched by its PR ref.
    ``env`` is the environment of the ``git fetch`` calls (default: no token, never a prompt)."""
    if _have_commit(repo, task.head_sha):
        return
    env = env or fetch_environment(repo, None)
    refs = ([f"pull/{task.pr_number}/head"] if task.pr_number else []) + [task.head_sha]
    for ref in refs:
        _git(repo, "fetch", "--quiet", "origin", ref, env=env)
        if _have_commit(repo, task.head_sha):
            return
    raise LookupError(f"commit {task.head_sha} is not in {repo} and could not be fetched from origin")


def fetch_environment(repo: Path, token: str | None) -> dict[str, str]:
    """The environment for ``git fetch origin``: never a prompt, never a trace of the traffic, and
    with a token, an ``Authorization`` header for the origin URL only.

    The header reaches git through ``GIT_CONFIG_COUNT`` / ``GIT_CONFIG_KEY_0`` /
    ``GIT_CONFIG_VALUE_0``: not written to ``.git/config`` (as ``git config`` or actions/checkout's
    persisted credentials would), not on any command line (as ``git -c`` would be, visible in the
    process list), and gone with the process. Basic auth as ``x-access-token`` is how GitHub takes
    an Actions token over HTTPS.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_CONFIG_", "GIT_TRACE", "GIT_CURL_VERBOSE"))}
    env["GIT_TERMINAL_PROMPT"] = "0"
    if token:
        url = _git(repo, "remote", "get-url", "origin").stdout.strip()
        if not url.startswith(("https://", "http://")):
            raise ValueError(f"origin is {url or 'not set'}: a token can only be sent to an http(s) remote")
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        env.update(
            {
                "GIT_CONFIG_COUNT": "1",
                "GIT_CONFIG_KEY_0": f"http.{url}.extraheader",
                "GIT_CONFIG_VALUE_0": f"Authorization: basic {basic}",
            }
        )
    return env


@dataclass
class Fetched:
    """What ``fetch_commits`` found: commits already there, fetched, and missing (with why)."""

    present: list[str] = field(default_factory=list)
    fetched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def fetch_commits(repo: Path, tasks: Iterable[Task], token: str | None) -> Fetched:
    """Fetch every task's commit that the clone lacks, before any grading (a separate step that
    holds the token; the grading step then needs no network and no token)."""
    tasks = list(tasks)
    env = fetch_environment(repo, token)
    done = Fetched()
    first: dict[str, Task] = {}  # one task per commit
    for task in tasks:
        first.setdefault(task.head_sha, task)
    absent = []
    for sha, task in first.items():
        if _have_commit(repo, sha):
            done.present.append(sha)
        else:
            absent.append(task)
    for task in absent:
        try:
            ensure_commit(repo, task, env)  # returns at once if an earlier PR ref fetch brought the commit
            done.fetched.append(task.head_sha)
        except (LookupError, subprocess.SubprocessError) as exc:
            done.missing.append(f"{task.head_sha} (run {task.run_id}, {task.team}, {task.assignment}): {exc}")
    for task in tasks:
        if _have_commit(repo, task.head_sha):
            try:
                fetch_lfs_objects(repo, task, env)
            except (LookupError, subprocess.SubprocessError) as exc:
                done.missing.append(f"{task.head_sha} (run {task.run_id}, {task.team}, {task.assignment}): {exc}")
    return done


def checkout_submission(repo: Path, task: Task, dest: Path) -> Path:
    """Extract ``submissions/<team>/<assignment>`` as it was at the graded commit into ``dest``,
    Git LFS files as the files themselves (see ``restore_lfs_files``)."""
    ensure_commit(repo, task)
    inner = f"{SUBMISSIONS}/{task.team}/{task.assignment}"
    plain = {**os.environ, "GIT_LFS_SKIP_SMUDGE": "1"}  # pointers out, whatever the filter config; restored below
    archived = _git(repo, "archive", "--format=tar", task.head_sha, "--", inner, data=True, env=plain)
    if archived.returncode != 0:
        raise LookupError(f"{inner} does not exist at commit {task.head_sha[:12]}")
    with tarfile.open(fileobj=io.BytesIO(archived.stdout)) as archive:
        archive.extractall(dest, filter="data")  # refuses links out of dest, absolute paths, devices
    restore_lfs_files(repo, dest / inner)
    return dest / inner


def restore_lfs_files(repo: Path, folder: Path) -> int:
    """Replace each Git LFS pointer under ``folder`` by its object from the clone's LFS store.

    ``git archive`` writes pointers; graded as they are, an honest LFS submission would be
    rejected ("a Git LFS pointer, not the file"). The object must be in ``.git/lfs/objects``
    (``fetch_lfs_objects`` puts it there in the fetch step) and match the pointer's SHA-256 and
    size; otherwise the regrade of this task is the grader's error, never a grade.
    """
    store = Path(_git(repo, "rev-parse", "--path-format=absolute", "--git-common-dir").stdout.strip()) / "lfs/objects"
    restored = 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.stat().st_size < MAX_POINTER_BYTES):
        pointer = parse_pointer(path.read_bytes())
        if pointer is None:
            continue
        source = store / pointer.object_path
        if not source.is_file() or source.stat().st_size != pointer.size or _sha256(source) != pointer.oid:
            raise LookupError(
                f"{path.relative_to(folder)} is stored with Git LFS and its object ({pointer.oid[:12]}, "
                f"{pointer.size} bytes) is not in this clone: fetch it first (grader regrade --fetch-only, "
                "with git-lfs installed)"
            )
        shutil.copyfile(source, path)
        restored += 1
    return restored


def fetch_lfs_objects(repo: Path, task: Task, env: dict[str, str]) -> None:
    """``git lfs fetch`` the objects of the task's folder at its commit, where the folder has LFS files."""
    inner = f"{SUBMISSIONS}/{task.team}/{task.assignment}"
    listed = _git(repo, "ls-tree", "-r", "-l", task.head_sha, "--", inner).stdout.splitlines()
    small = [line.split(maxsplit=4) for line in listed]
    if not any(
        len(p) == 5 and p[3].isdigit() and int(p[3]) < MAX_POINTER_BYTES and _is_pointer(repo, p[2]) for p in small
    ):
        return
    if shutil.which("git-lfs") is None:
        raise LookupError(f"{inner} at {task.head_sha[:12]} has Git LFS files and git-lfs is not installed")
    done = _git(repo, "lfs", "fetch", "origin", task.head_sha, "--include", f"{inner}/**", env=env)
    if done.returncode != 0:
        raise LookupError(f"git lfs fetch failed for {inner} at {task.head_sha[:12]}: {done.stderr.strip()[-300:]}")


def _is_pointer(repo: Path, blob: str) -> bool:
    return parse_pointer(_git(repo, "cat-file", "blob", blob, data=True).stdout) is not None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(2**20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def regrade_one(task: Task, repo: Path, assignments: Path | None, sandboxes: Callable[[], Sandboxes]) -> Outcome:
    """Check the submission out into a temporary folder and grade it there (runs in a worker process),
    in the sandboxes ``sandboxes()`` makes (course.yaml's choice, made by ``grader.commands``: in CI
    the same container as the grade job). A factory, not the sandboxes: it travels to the pool."""
    from grader.grading.pipeline import grade

    with tempfile.TemporaryDirectory(prefix="grader-regrade-") as work:
        try:
            folder = checkout_submission(repo, task, Path(work))
        except (LookupError, tarfile.TarError, OSError, subprocess.SubprocessError) as exc:
            return Outcome(task, None, str(exc))
        result = grade(folder, sandboxes(), assignments, task.context()).result
    filed = keyed_to_folder(result, task.team, task.assignment)
    moved = filed.submission.model_copy(update={"path": f"{SUBMISSIONS}/{task.team}/{task.assignment}"})
    return Outcome(task, filed.model_copy(update={"submission": moved}).to_json())


def default_workers() -> int:
    """One grading per core: each grading times its models on one thread (assignment ``threads``)."""
    return max(1, len(os.sched_getaffinity(0)) or os.cpu_count() or 1)


def core_slices(workers: int, cores: list[int] | None = None) -> list[list[int]]:
    """Each parallel grading's own cores: the usable cores split into ``workers`` disjoint runs
    (more workers than cores share them round-robin, one core each)."""
    cores = sorted(cores if cores is not None else os.sched_getaffinity(0))
    if workers >= len(cores):
        return [[cores[i % len(cores)]] for i in range(workers)]
    return [cores[i * len(cores) // workers : (i + 1) * len(cores) // workers] for i in range(workers)]


def _pin(slices: multiprocessing.queues.Queue) -> None:  # type: ignore[name-defined]
    """Pool initializer: this process (and the sandboxes it starts) runs on its slice alone."""
    os.sched_setaffinity(0, slices.get())


def pinned_pool(workers: int) -> ProcessPoolExecutor:
    """A process pool whose processes each run on their own cores, so that parallel gradings do
    not time each other's noise: a grading's interleaved timing then only shares its cores with
    its own sandbox. ``spawn``, not fork: the parent runs rich's refresh thread, and forking a
    threaded process can deadlock."""
    context = multiprocessing.get_context("spawn")
    slices = context.Queue()
    for cores in core_slices(workers):
        slices.put(cores)
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_pin, initargs=(slices,))


def run_tasks(
    tasks: list[Task],
    repo: Path,
    assignments: Path | None,
    workers: int,
    sandboxes: Callable[[], Sandboxes],
    advance: Callable[[Outcome], None] = lambda _: None,
) -> list[Outcome]:
    """Grade every task in a process pool; ``advance`` is called as each one finishes."""
    outcomes: list[Outcome] = []
    if not tasks:
        return outcomes
    with pinned_pool(min(workers, len(tasks))) as pool:
        futures = [pool.submit(regrade_one, task, repo, assignments, sandboxes) for task in tasks]
        for future in as_completed(futures):
            outcome = future.result()
            outcomes.append(outcome)
            advance(outcome)
    return sorted(outcomes, key=lambda o: o.task.run_id)


def storable(outcomes: Iterable[Outcome]) -> list[Result]:
    """New gradings worth storing: never an error (which would replace a real grade)."""
    return [o.result for o in outcomes if o.result_json and o.result.status != "error"]


def write_outcomes(outcomes: list[Outcome], out_dir: Path) -> list[Path]:
    """``<out>/<run_id>/result.json`` per storable regrade, for ``grader results import``."""
    written = []
    for outcome in outcomes:
        if outcome.result_json and outcome.result.status != "error":
            path = out_dir / str(outcome.task.run_id) / "result.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(outcome.result_json, encoding="utf-8")
            written.append(path)
    return written

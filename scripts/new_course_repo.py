"""``python scripts/new_course_repo.py DEST``: a new course repository, as docs/admins.md's set-up steps describe it.

Copies the files a course repository runs on (the grader, the assignments, the reference build,
the roster, the three workflows and their light requirements), as this checkout has them
committed, into DEST, writes the grading image's digest into both grading workflows where
``--image`` gives it, and makes the first commit. What is left is on GitHub's side (docs/admins.md
"Set up a course repository", steps 4 to 8): push it, register the runner, set the permissions.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# docs/admins.md, "Set up a course repository", step 1 (tests/test_course_repo.py checks the two agree)
COURSE_FILES = [
    "grader/",
    "assignments/",
    "reference/",
    "pyproject.toml",
    "requirements.lock",
    "run",
    "roster.yaml",
    "submissions/README.md",
    ".github/workflows/grade.yml",
    ".github/workflows/regrade.yml",
    ".github/workflows/runner-cache.yml",
    ".github/grader-ci-requirements.txt",
    ".github/actionlint.yaml",
    "README.md",
]
PLACEHOLDER = re.compile(r"ghcr\.io/your-course/compression-grader@sha256:0{64}")
DIGEST_PINNED = re.compile(r"^[\w.:/-]+@sha256:[0-9a-f]{64}$")
GRADING_WORKFLOWS = (".github/workflows/grade.yml", ".github/workflows/regrade.yml")


def committed(paths: list[str]) -> list[str]:
    """The files under ``paths`` as this checkout has them in git (nothing generated or ignored)."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--", *paths], capture_output=True, check=True)
    return [p for p in listed.stdout.decode().split("\0") if p]


def git(dest: Path, *args: str) -> None:
    identity = ["-c", "user.name=compression-grader", "-c", "user.email=grader@invalid"]
    subprocess.run(["git", "-C", str(dest), *identity, *args], check=True, capture_output=True)


def create(dest: Path, image: str | None = None, roster: Path | None = None) -> list[str]:
    if dest.exists() and any(dest.iterdir()):
        raise SystemExit(f"{dest} exists and is not empty")
    if image and not DIGEST_PINNED.match(image):
        raise SystemExit(f"--image must be pinned by digest (NAME@sha256:<64 hex>), not {image!r}")
    files = committed(COURSE_FILES)
    for relative in files:
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / relative, target)
    if roster is not None:
        shutil.copyfile(roster, dest / "roster.yaml")
    if image:
        for workflow in GRADING_WORKFLOWS:
            path = dest / workflow
            path.write_text(PLACEHOLDER.sub(image, path.read_text()))
    git(dest, "init", "-q", "-b", "main")
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "Course repository from compression-grader")
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dest", type=Path, help="an empty or new folder for the course repository")
    parser.add_argument("--image", help="the grading image, pinned by digest: NAME@sha256:<64 hex>")
    parser.add_argument("--roster", type=Path, help="a roster.yaml to use instead of the example one")
    args = parser.parse_args(argv)
    files = create(args.dest, args.image, args.roster)
    print(f"{args.dest}: {len(files)} files, first commit made")
    if not args.image:
        print("next: replace GRADER_IMAGE's placeholder in grade.yml and regrade.yml with your image's digest")
    print("then: push it to GitHub and follow docs/admins.md, 'Set up a course repository', from step 4")
    return 0


if __name__ == "__main__":
    sys.exit(main())

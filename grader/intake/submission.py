"""A submission folder against its assignment: the models the manifest names for the roles the
assignment expects, in formats it accepts, every file vetted (``grader.intake.artifacts``); and
the course's own reference models, vetted the same way.
"""

from __future__ import annotations

from pathlib import Path

from grader.config.assignment import Assignment
from grader.config.paths import references_root
from grader.errors import ConfigError, SubmissionError
from grader.intake.artifacts import Artifact, sha256_file, vet_inputs, vet_model, vet_search_log
from grader.intake.manifest import MANIFEST_NAME, Submission


def vet_submission(folder: Path, submission: Submission, assignment: Assignment, vetted: Path) -> list[Artifact]:
    """Check the manifest against the assignment, then vet every file it names (``.pt2`` programs are
    rewritten into ``vetted``, where the worker reads them)."""
    missing = [r for r, slot in assignment.models.items() if slot.required and r not in submission.models]
    if missing:
        raise SubmissionError(
            f"submission.yaml names no model for role(s) {missing}.",
            f"This assignment expects models: {', '.join(assignment.models)}.",
            kind="manifest",
        )
    unknown = [r for r in submission.models if r not in assignment.models]
    if unknown:
        raise SubmissionError(
            f"submission.yaml names unknown model role(s) {unknown}.",
            f"This assignment expects models: {', '.join(assignment.models)}.",
            kind="manifest",
        )
    limit = assignment.limits.model_file_mb
    artifacts = [
        vet_model(folder, role, ref.path, ref.architecture, limit, vetted=vetted)
        for role, ref in submission.models.items()
    ]
    for artifact in artifacts:
        _check_format(artifact, assignment)
    if submission.data.inputs:
        artifacts.append(vet_inputs(folder, submission.data.inputs, assignment.limits.inputs_file_mb))
    elif assignment.inputs_required:
        raise SubmissionError("submission.yaml names no inputs.", "Add data: {inputs: inputs.npz}.", kind="manifest")
    if submission.data.search_log:
        artifacts.append(vet_search_log(folder, submission.data.search_log, assignment.limits.search_log_mb))
    elif assignment.search_log_required:
        raise SubmissionError(
            "submission.yaml names no search log.",
            "Add data: {search_log: study.db} (an Optuna SQLite study) or a CSV / JSON export "
            "of study.trials_dataframe(); see the assignment README.",
            kind="manifest",
        )
    return artifacts


FORMAT_NAMES = {
    "onnx": "ONNX",
    "pt2": "a torch.export program (.pt2)",
    "safetensors": "safetensors",
}


def _check_format(artifact: Artifact, assignment: Assignment) -> None:
    allowed = assignment.models[artifact.role].formats
    if allowed and artifact.format not in allowed:
        wanted = " or ".join(FORMAT_NAMES[f] for f in allowed)
        raise SubmissionError(
            f"model '{artifact.role}' ('{artifact.relpath}') is {FORMAT_NAMES.get(artifact.format, artifact.format)}, "
            f"but this assignment needs {wanted} for it.",
            f"Save the '{artifact.role}' model as {wanted}; see the assignment README.",
            kind="format",
        )


def vet_references(assignment: Assignment) -> list[Artifact]:
    """The course's own models this assignment grades against: trusted, but still vetted and hashed."""
    root = references_root()
    artifacts = []
    for role, ref in assignment.references.items():
        try:
            artifacts.append(
                vet_model(root, role, ref.path, ref.architecture, assignment.limits.model_file_mb, folder="references")
            )
        except SubmissionError as exc:  # a missing or broken reference is staff's to fix, not the student's
            raise ConfigError(
                f"reference model '{role}' ({root / ref.path}): {exc}. "
                "Build the references with: python -m reference.build"
            ) from None
    return artifacts


def file_hashes(folder: Path, artifacts: list[Artifact]) -> dict[str, str]:
    hashes = {MANIFEST_NAME: sha256_file(folder / MANIFEST_NAME)}
    for art in artifacts:
        hashes[art.relpath] = art.sha256
        hashes.update(art.extra_files)
    return hashes

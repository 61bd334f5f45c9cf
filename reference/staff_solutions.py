"""Reference solutions for hw1 and hw3-hw6, built from the trained course model by ``reference.build``.

Each builder writes the files its committed ``submission.yaml`` names, checks them with the
grader's own evidence and measurement functions (so a recipe that drifts is caught at build
time, not by a student), and returns the figures for the build summary. Everything is seeded
and single-threaded where order matters, so two builds give byte-identical files.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import shutil
import tempfile
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from reference import compress, gates
from reference.digits_cnn import INPUT_SHAPE, DigitsStudent

Log = Callable[[str], None]
MB = 2**20

HW1_SIZE_TOLERANCE = 0.02
CLUSTERS = 16
CLUSTER_ITERATIONS = 30
STUDENT_EPOCHS = 12
STUDENT_LR = 3e-3
STUDENT_BATCH = 32
KD_TEMPERATURE = 4.0
KD_ALPHA = 0.5
SEARCH_AMOUNTS = (0.0, 0.2, 0.4, 0.5, 0.6, 0.7)
SEARCH_WEIGHTS = ("fp32", "int8")
SEARCH_MAX_ACCURACY_DROP = 0.01
STUDENT_SEEDS = 4  # seeds tried before the hw4 solution must clear its gates
# hw5's manifest names the trial the search chose, which can differ from one CPU to the next, so
# the build writes it (it is git-ignored, like the models); everything else in it is fixed.
HW5_MANIFEST = """\
# Written by reference/build.py: the trial number is the one this machine's search chose.
schema: 1
assignment: hw5-auto-compression
team: course-staff
members: [course-staff]
models:
  baseline: baseline.onnx
  candidate: candidate.onnx
data:
  inputs: inputs.npz
  search_log: trials.csv
claims:
  trial: {trial}
notes: "Reference solution: a 12-trial grid over global pruning amount x fp32 / int8 weights of the hw4 student, \\
logged in Optuna's trials_dataframe CSV layout; the chosen trial is the smallest (gzip) model within 1 point of the \\
best accuracy."
"""


def _inputs(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    np.savez(path, input=x, labels=y)


# --------------------------------------------------------------------------- hw1


def build_hw1(folder: Path, model_onnx: Path, x_test: np.ndarray, y_test: np.ndarray) -> dict[str, Any]:
    """The course model itself, with the figures its committed submission.yaml reports checked."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_onnx, folder / "baseline.onnx")
    _inputs(folder / "inputs.npz", x_test, y_test)
    reported = yaml.safe_load((folder / "submission.yaml").read_text())["reported"]
    size_mib = (folder / "baseline.onnx").stat().st_size / MB
    if abs(reported["size_mb"] - size_mib) > HW1_SIZE_TOLERANCE * size_mib:
        raise RuntimeError(
            f"hw1 submission.yaml reports size_mb {reported['size_mb']} but the file is "
            f"{size_mib:.3f} MiB; update reference/solutions/hw1-baseline/submission.yaml"
        )
    return {"hw1_size_mib": round(size_mib, 4)}


# --------------------------------------------------------------------------- hw6


def build_hw6(
    folder: Path, model: nn.Module, model_onnx: Path, x_test: np.ndarray, y_test: np.ndarray
) -> dict[str, Any]:
    """A ``torch.export`` program with a dynamic batch axis (the source) and its ONNX export."""
    folder.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(model.eval(), (torch.zeros(2, *INPUT_SHAPE),), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(folder / "source.pt2"))
    shutil.copyfile(model_onnx, folder / "model.onnx")
    _inputs(folder / "inputs.npz", x_test, y_test)
    with torch.inference_mode():
        source = model(torch.from_numpy(x_test)).numpy()
    exported = compress.ort_session(folder / "model.onnx", threads=1).run(None, {"input": x_test})[0]
    error = float(np.abs(source - exported).max())
    if error > 1e-4:
        raise RuntimeError(f"hw6 ONNX export differs from the source by {error:.2e}")
    return {"hw6_max_abs_error": error}


# --------------------------------------------------------------------------- hw3


def build_hw3(
    folder: Path, model: nn.Module, model_onnx: Path, x_test: np.ndarray, y_test: np.ndarray
) -> dict[str, Any]:
    """Every conv / linear weight clustered to 16 values per tensor (1-D k-means), no fine-tune."""
    folder.mkdir(parents=True, exist_ok=True)
    clustered = copy.deepcopy(model).eval()
    distinct = compress.cluster_weights(clustered, CLUSTERS, CLUSTER_ITERATIONS)
    if max(distinct.values()) > CLUSTERS:
        raise RuntimeError(f"hw3 clustering left more than {CLUSTERS} values in a tensor: {distinct}")
    shutil.copyfile(model_onnx, folder / "baseline.onnx")
    compress.export_onnx(clustered, folder / "clustered.onnx", torch.zeros(1, *INPUT_SHAPE))
    _inputs(folder / "inputs.npz", x_test, y_test)
    short = gates.shortfalls(
        gates.fidelity(folder / "baseline.onnx", folder / "clustered.onnx", x_test, y_test),
        gates.full_marks("hw3-clustering", "fidelity"),
        len(x_test),
    )
    if short:
        raise RuntimeError(f"the hw3 reference solution misses its full-marks thresholds: {'; '.join(short)}")
    return {"hw3_accuracy_clustered": compress.onnx_accuracy(folder / "clustered.onnx", x_test, y_test)}


# --------------------------------------------------------------------------- hw4


def train_student(x: np.ndarray, y: np.ndarray, teacher: nn.Module | None, seed: int) -> DigitsStudent:
    """The course's student recipe; with a ``teacher``, Hinton-style distillation on its soft labels.

    Both variants see the same data, order, epochs and schedule, so the only difference between
    the distilled student and the from-scratch reference is the teacher's signal.
    """
    torch.manual_seed(seed)
    student = DigitsStudent()
    x_t, y_t = torch.from_numpy(x), torch.from_numpy(y)
    soft = None
    if teacher is not None:
        with torch.inference_mode():
            soft = teacher.eval()(x_t).clone()
    with _one_thread():  # ops this small run ~10x slower when two threads contend for them
        return _fit_student(student, x_t, y_t, soft, seed)


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _fit_student(
    student: DigitsStudent, x_t: torch.Tensor, y_t: torch.Tensor, soft: torch.Tensor | None, seed: int
) -> DigitsStudent:
    optimizer = torch.optim.Adam(student.parameters(), lr=STUDENT_LR)
    steps = STUDENT_EPOCHS * -(-len(x_t) // STUDENT_BATCH)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    generator = torch.Generator().manual_seed(seed)
    student.train()
    for _ in range(STUDENT_EPOCHS):
        for index in torch.randperm(len(x_t), generator=generator).split(STUDENT_BATCH):
            optimizer.zero_grad(set_to_none=True)
            logits = student(x_t[index])
            loss = nn.functional.cross_entropy(logits, y_t[index])
            if soft is not None:
                t = KD_TEMPERATURE
                distill = (
                    nn.functional.kl_div(
                        nn.functional.log_softmax(logits / t, dim=1),
                        nn.functional.softmax(soft[index] / t, dim=1),
                        reduction="batchmean",
                    )
                    * t
                    * t
                )
                loss = KD_ALPHA * distill + (1 - KD_ALPHA) * loss
            loss.backward()
            optimizer.step()
            schedule.step()
    return student.eval()


def build_hw4(
    folder: Path, scratch_path: Path, teacher: nn.Module, model_onnx: Path, data: tuple, seed: int
) -> tuple[dict[str, Any], nn.Module]:
    """A distilled DigitsStudent, and the course's from-scratch student of the same architecture.

    Both are trained with one seed; if the distilled one misses hw4's full-marks thresholds against
    the teacher on this machine (``reference.gates``), both are trained again with the next seed.
    """
    x_train, y_train, x_test, y_test = data
    folder.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(1, *INPUT_SHAPE)
    shutil.copyfile(model_onnx, folder / "teacher.onnx")
    _inputs(folder / "inputs.npz", x_test, y_test)
    thresholds = gates.full_marks("hw4-distillation", "agreement") + gates.full_marks("hw4-distillation", "accuracy")
    for attempt in range(STUDENT_SEEDS):
        distilled = train_student(x_train, y_train, teacher, seed + attempt)
        compress.export_onnx(distilled, folder / "student.onnx", example)
        figures = gates.fidelity(folder / "teacher.onnx", folder / "student.onnx", x_test, y_test)
        short = gates.shortfalls(figures, thresholds, len(x_test))
        if not short:
            break
    else:
        raise RuntimeError(
            f"the hw4 reference solution misses its full-marks thresholds with {STUDENT_SEEDS} "
            f"seeds: {'; '.join(short)}"
        )
    scratch = train_student(x_train, y_train, None, seed + attempt)  # the same recipe, seed and data, no teacher
    compress.export_onnx(scratch, scratch_path, example)
    summary = {
        "hw4_seed": seed + attempt,
        "hw4_accuracy_student": compress.onnx_accuracy(folder / "student.onnx", x_test, y_test),
        "hw4_accuracy_scratch": compress.onnx_accuracy(scratch_path, x_test, y_test),
    }
    summary["hw4_student_beats_scratch"] = summary["hw4_accuracy_student"] > summary["hw4_accuracy_scratch"]
    return summary, distilled


# --------------------------------------------------------------------------- hw5


def build_hw5(folder: Path, student: nn.Module, data: tuple) -> dict[str, Any]:
    """A grid search over pruning amount x weight storage of the hw4 student, logged the way
    Optuna's ``study.trials_dataframe().to_csv()`` writes it, and the chosen trial's model."""
    from grader.intake.artifacts import gzip_size

    x_train, _, x_test, y_test = data
    folder.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(1, *INPUT_SHAPE)
    rows, files = [], {}
    with tempfile.TemporaryDirectory(prefix="hw5-search-") as tmp:
        for number, (amount, weights) in enumerate((a, w) for a in SEARCH_AMOUNTS for w in SEARCH_WEIGHTS):
            started = datetime.now()
            candidate = copy.deepcopy(student)
            if amount:
                compress.prune_global_magnitude(candidate, amount)
            path = compress.export_onnx(candidate, Path(tmp) / f"trial{number}-fp32.onnx", example)
            if weights == "int8":
                path = compress.quantize_onnx_int8(path, Path(tmp) / f"trial{number}.onnx", x_train[:256])
            accuracy = compress.onnx_accuracy(path, x_test, y_test)
            completed = datetime.now()
            rows.append(
                {
                    "number": number,
                    "values_accuracy": accuracy,
                    "values_gzip_mb": gzip_size([path]) / MB,
                    **_optuna_times(started, completed),
                    "params_amount": amount,
                    "params_weights": weights,
                    "state": "COMPLETE",
                }
            )
            files[number] = path.read_bytes()
        chosen = choose_trial(rows)
        (folder / "candidate.onnx").write_bytes(files[chosen["number"]])
        (folder / "baseline.onnx").write_bytes(files[0])
    with open(folder / "trials.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    _inputs(folder / "inputs.npz", x_test, y_test)
    (folder / "submission.yaml").write_text(HW5_MANIFEST.format(trial=chosen["number"]))
    return {"hw5_trials": len(rows), "hw5_chosen": chosen}


def _optuna_times(started: datetime, completed: datetime) -> dict[str, str]:
    """The time columns as ``study.trials_dataframe().to_csv()`` writes them (pandas' text forms)."""
    elapsed = completed - started
    hours, rest = divmod(elapsed.seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return {
        "datetime_start": started.isoformat(sep=" ", timespec="microseconds"),
        "datetime_complete": completed.isoformat(sep=" ", timespec="microseconds"),
        "duration": f"{elapsed.days} days {hours:02d}:{minutes:02d}:{seconds:02d}.{elapsed.microseconds:06d}",
    }


def choose_trial(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The smallest (gzip) model within one point of the best accuracy: on the front by construction."""
    best = max(r["values_accuracy"] for r in rows)
    eligible = [r for r in rows if r["values_accuracy"] >= best - SEARCH_MAX_ACCURACY_DROP]
    return min(eligible, key=lambda r: (r["values_gzip_mb"], -r["values_accuracy"], r["number"]))

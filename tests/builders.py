"""Small models and submissions built by the tests themselves (no downloads, a few seconds each).

The compression recipes come from ``reference.compress`` (the same ones the staff solution uses),
so a test that feeds the grader a flawed model differs from the correct one in exactly the flaw.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from reference import compress
from reference.digits_cnn import load_digits_split

HW2 = "hw2-quantization-pruning"


class TinyCNN(nn.Module):
    """A digits-shaped model small enough to export and quantize in about a second."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.head = nn.Linear(width * 64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        return self.head(torch.flatten(x, 1))


def digits(limit: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x_train, y_train, x_test, y_test = load_digits_split()
    return x_train, y_train, x_test[:limit], y_test[:limit]


def train(model: nn.Module, epochs: int, masks: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """A few epochs of Adam on the digits; with ``masks``, pruned weights stay exactly zero.

    One thread and deterministic kernels, so the weights depend on the seed and the CPU alone,
    not on how many cores the machine has. No test relies on them being the same across CPUs:
    verdicts near a threshold are made certain by ``confident_inputs``.
    """
    x, y, _, _ = digits()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        opt = torch.optim.Adam(model.parameters(), lr=3e-3 if masks is None else 1e-3)
        hook = compress.keep_masks_applied(opt, model, masks) if masks else None
        model.train()
        for _ in range(epochs):
            for i in range(0, len(xt), 64):
                opt.zero_grad()
                nn.functional.cross_entropy(model(xt[i : i + 64]), yt[i : i + 64]).backward()
                opt.step()
        if hook:
            hook.remove()
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    return model.eval()


def trained_tiny(seed: int = 0, epochs: int = 4) -> TinyCNN:
    torch.manual_seed(seed)
    return train(TinyCNN(), epochs)


def export(model: nn.Module, path: Path) -> Path:
    return compress.export_onnx(model, path, torch.zeros(1, 1, 8, 8))


def prune_to(model: nn.Module, amount: float, finetune_epochs: int = 2) -> nn.Module:
    """Global magnitude pruning followed by a short masked fine-tune (the correct recipe)."""
    masks = compress.prune_global_magnitude(model, amount)
    return train(model, finetune_epochs, masks) if finetune_epochs else model


def quantize(src: Path, dst: Path, fmt: str = "qoperator") -> Path:
    _, _, x_test, _ = digits()
    return compress.quantize_onnx_int8(src, dst, x_test[:64], fmt=fmt)


CONFIDENT_MARGIN = 1.0  # logits; quantization and runtime noise on these models is ~1e-2 or far less


def confident_inputs(path: Path, models: list[Path], margin: float = CONFIDENT_MARGIN) -> Path:
    """inputs.npz with the digits test samples on which every model gives the same class, each with
    its top class ahead of the runner-up by ``margin`` logits.

    A submission's inputs are the team's choice; choosing them this way makes top-1 agreement
    exactly 1.0 and the accuracy drop exactly 0 between these models on any CPU, thread count or
    BLAS kernel, since no run-to-run difference comes near a logit of margin. Verdicts then sit
    far from every fidelity threshold, while the models stay real trained and compressed ones.
    """
    import onnxruntime as ort

    _, _, x_test, y_test = digits()
    keep = np.ones(len(x_test), dtype=bool)
    classes = None
    for model in models:
        session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        logits = session.run(None, {session.get_inputs()[0].name: x_test})[0]
        top2 = np.sort(logits, axis=1)[:, -2:]
        keep &= (top2[:, 1] - top2[:, 0]) >= margin
        predicted = logits.argmax(1)
        keep &= predicted == (predicted if classes is None else classes)
        classes = predicted if classes is None else classes
    if keep.sum() < 64:
        raise RuntimeError(f"only {int(keep.sum())} confident samples; train the test models longer")
    np.savez(path, input=x_test[keep], labels=y_test[keep])
    return path


def write_inputs(path: Path, with_labels: bool = True) -> Path:
    _, _, x_test, y_test = digits()
    arrays: dict[str, np.ndarray] = {"input": x_test}
    if with_labels:
        arrays["labels"] = y_test
    np.savez(path, **arrays)
    return path


def write_manifest(folder: Path, **overrides: Any) -> Path:
    manifest: dict[str, Any] = {
        "schema": 1,
        "assignment": HW2,
        "team": "team-alpha",
        "members": ["octocat"],
        "models": {"baseline": "baseline.onnx", "candidate": "compressed.onnx"},
        "data": {"inputs": "inputs.npz"},
        "claims": {"quantization": "int8", "sparsity": 0.5},
    }
    manifest.update(overrides)
    path = folder / "submission.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return path


def fast_assignments(root: Path, **limits: Any) -> Path:
    """A copy of the real assignments (and checkers) with a short timing budget (and optional tighter limits).

    The checks, thresholds and rules are the shipped ones; only how long timing runs changes, so
    the tests exercise the same grading a student gets, in a fraction of the time.
    """
    source = Path(__file__).resolve().parent.parent / "assignments"
    shutil.copytree(source, root, dirs_exist_ok=True)
    for path in root.glob("*/assignment.yaml"):
        config = yaml.safe_load(path.read_text())
        timing = config.setdefault("measure", {}).setdefault("timing", {})
        timing.update({"budget_s": 0.6, "warmup": 1, "min_rounds": 5})
        config.setdefault("limits", {}).update(limits)
        if config["id"] == HW2:
            timing["batch_sizes"] = [1, 16]
            for check in config["checks"]:
                if check["id"] == "speedup":
                    check["params"]["metric"] = "candidate_vs_baseline.speedup_b16"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
    return root


def copy_of(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model)


def tiny_instead_of_zero(model: nn.Module, amount: float) -> nn.Module:
    """The classic mistake: 'pruning' the smallest weights to 1e-8 instead of exact zeros."""
    compress.prune_global_magnitude(model, amount)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                weight = module.weight
                weight[weight == 0] = 1e-8
    return model


def submission(folder: Path, files: dict[str, Path], inputs: Path | None, **manifest: Any) -> Path:
    """A submission folder holding copies of ``files`` (role -> file) and ``inputs``.

    The manifest names each copy under its role unless ``models=`` overrides that mapping.
    """
    folder.mkdir(parents=True, exist_ok=True)
    names = {}
    for role, source in files.items():
        names[role] = f"{role}{source.suffix}"
        shutil.copy(source, folder / names[role])
    if inputs is not None:
        shutil.copy(inputs, folder / "inputs.npz")
    manifest.setdefault("models", names)
    write_manifest(folder, **manifest)
    return folder


def _digits_graph(nodes: list, initializers: list, name: str):
    """A graph with the digits model's input and a [N, 10] output named like the reference."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def hanging_model(path: Path) -> Path:
    """A valid model whose Loop runs (practically) forever: what a time limit is for."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Add", ["acc_in", "one"], ["acc_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [1]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [1]),
        ],
        initializer=[numpy_helper.from_array(np.ones(1, np.float32), "one")],
    )
    nodes = [
        helper.make_node("Loop", ["trips", "cond", "zero"], ["acc"], body=body),
        helper.make_node("Flatten", ["input"], ["flat"]),
        helper.make_node("Slice", ["flat", "s0", "s10", "s1"], ["head"]),
        helper.make_node("Add", ["head", "acc"], ["logits"]),
    ]
    inits = [
        numpy_helper.from_array(np.array(10**15, np.int64), "trips"),
        numpy_helper.from_array(np.array(True), "cond"),
        numpy_helper.from_array(np.zeros(1, np.float32), "zero"),
        numpy_helper.from_array(np.array([0], np.int64), "s0"),
        numpy_helper.from_array(np.array([10], np.int64), "s10"),
        numpy_helper.from_array(np.array([1], np.int64), "s1"),
    ]
    onnx.save(_digits_graph(nodes, inits, "hang"), str(path))
    return path


def memory_hog_model(path: Path, elements: int = 3 * 2**30) -> Path:
    """A valid model that materialises a 12 GiB tensor at run time."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("Shape", ["input"], ["in_shape"]),
        helper.make_node("Slice", ["in_shape", "s0", "s1"], ["batch"]),
        helper.make_node("Concat", ["batch", "big"], ["shape"], axis=0),
        helper.make_node(
            "ConstantOfShape", ["shape"], ["huge"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])
        ),
        helper.make_node("ReduceSum", ["huge", "axes"], ["total"], keepdims=0),
        helper.make_node("Flatten", ["input"], ["flat"]),
        helper.make_node("Slice", ["flat", "s0", "s10", "s1"], ["head"]),
        helper.make_node("Unsqueeze", ["total", "s1"], ["total2"]),
        helper.make_node("Add", ["head", "total2"], ["logits"]),
    ]
    inits = [
        numpy_helper.from_array(np.array([0], np.int64), "s0"),
        numpy_helper.from_array(np.array([1], np.int64), "s1"),
        numpy_helper.from_array(np.array([10], np.int64), "s10"),
        numpy_helper.from_array(np.array([elements], np.int64), "big"),
        numpy_helper.from_array(np.array([1], np.int64), "axes"),
    ]
    onnx.save(_digits_graph(nodes, inits, "hog"), str(path))
    return path


def export_fixed_batch(model: nn.Module, path: Path, batch: int = 1, opset: int = 17) -> Path:
    """An export without a dynamic batch axis (the classic hw6 mistake), or at an older opset."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model.eval(),
            (torch.zeros(batch, 1, 8, 8),),
            str(path),
            input_names=["input"],
            output_names=["logits"],
            opset_version=opset,
            dynamo=False,
        )
    return path


def check_of(result: Any, check_id: str) -> Any:
    """The result of one check, by id."""
    return next(c for c in result.checks if c.id == check_id)


def reshaping_model(path: Path) -> Path:
    """Runs, but folds the batch into one row: batch 1 gives [1, 64], batch 8 gives [1, 512]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Reshape", ["input", "shape"], ["logits"])]
    graph = helper.make_graph(
        nodes,
        "fold",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, None])],
        initializer=[numpy_helper.from_array(np.array([1, -1], np.int64), "shape")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def torch_source(model: nn.Module, path: Path) -> Path:
    """A torch.export program with a dynamic batch axis (hw6's source model)."""
    program = torch.export.export(
        model.eval(), (torch.zeros(2, 1, 8, 8),), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    torch.export.save(program, str(path))
    return path

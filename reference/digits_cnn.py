"""The course reference model: a small CNN for scikit-learn's bundled digits data.

The digits data set ships inside scikit-learn, so the grader and its tests need no
network access.  The network is deliberately wider than the task needs: one batch-1
inference must take about a millisecond or more on one CPU thread, otherwise latency
measurements in the grader would be dominated by onnxruntime's per-call overhead and
say nothing about compression.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
INPUT_SHAPE = (1, 8, 8)
NUM_CLASSES = 10


class DigitsCNN(nn.Module):
    """Four 3x3 conv layers, all at full 8x8 resolution, then global average pooling + two Linears.

    Widths (96, 192, 192, 192) give ~53M MACs and ~0.86M parameters (~3.4 MB fp32):
    about 1.5 ms per batch-1 inference on one AVX2 core.  Only Conv2d / ReLU /
    pooling / flatten / Linear are used, because onnxruntime's static int8
    quantization turns those into QLinearConv / QGemm cleanly.
    """

    def __init__(
        self, widths: tuple[int, ...] = (96, 192, 192, 192), hidden: int = 128, num_classes: int = NUM_CLASSES
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = INPUT_SHAPE[0]
        for width in widths:
            layers += [nn.Conv2d(in_channels, width, kernel_size=3, padding=1), nn.ReLU()]
            in_channels = width
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(in_channels, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )
        self._init_weights()

    def _init_weights(self) -> None:
        """He init: torch's default conv init shrinks activations layer by layer, and this
        plain (no BatchNorm) stack then needs several times more epochs to converge."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``[N, 1, 8, 8]`` images scaled to 0..1 to ``[N, 10]`` logits."""
        return self.classifier(self.features(x))


class DigitsStudent(nn.Module):
    """The course's student architecture for hw4: two small convs with pooling, one Linear.

    About 6k parameters and 84k MACs per image (0.7% and 0.16% of ``DigitsCNN``): small enough
    that distillation has something to do, big enough to stay within two points of the teacher.
    The course trains one from scratch (``digits_student_scratch.onnx``) as the yardstick a
    distilled student of this architecture must beat for hw4's bonus.
    """

    def __init__(self, widths: tuple[int, int] = (16, 32), num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(INPUT_SHAPE[0], widths[0], kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(widths[0], widths[1], kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(widths[1] * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


ARCHITECTURES: dict[str, type[nn.Module]] = {"digits-cnn": DigitsCNN, "digits-student": DigitsStudent}


def build_architecture(name: str) -> nn.Module:
    """Instantiate a known architecture by name (used to load submitted state dicts)."""
    try:
        cls = ARCHITECTURES[name]
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise KeyError(f"unknown architecture {name!r}; known architectures: {known}") from None
    return cls()


def load_digits_split(
    seed: int = 0, test_fraction: float = 0.2
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic stratified train/test split of the digits data.

    Returns ``(x_train, y_train, x_test, y_test)``; x is float32 ``[N, 1, 8, 8]`` in
    0..1 (raw pixels are 0..16), y is int64.  The split depends only on ``seed``.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.images.astype(np.float32) / 16.0).reshape(-1, *INPUT_SHAPE)
    y = data.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
    return (
        np.ascontiguousarray(x_train, dtype=np.float32),
        np.ascontiguousarray(y_train, dtype=np.int64),
        np.ascontiguousarray(x_test, dtype=np.float32),
        np.ascontiguousarray(y_test, dtype=np.int64),
    )

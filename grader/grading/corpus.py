"""The fixed request corpus: every request body prepared once, with the answer expected for it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Item:
    id: str
    body: bytes
    expected: int  # the reference model's answer
    label: int | None  # the true class, when the corpus has labels


def load_corpus(path: Path, expected: np.ndarray, limit: int = 2048) -> list[Item]:
    """Requests from an ``inputs.npz`` (key ``input``, optional ``labels``) and the reference answers."""
    with np.load(path, allow_pickle=False) as archive:
        inputs = archive["input"][:limit].astype(np.float32)
        labels = archive["labels"][:limit] if "labels" in archive.files else None
    items = []
    for i, sample in enumerate(inputs):
        body = json.dumps({"id": f"r{i}", "input": np.round(sample, 6).tolist()}, separators=(",", ":")).encode()
        items.append(Item(f"r{i}", body, int(expected[i]), None if labels is None else int(labels[i])))
    return items

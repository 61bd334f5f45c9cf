"""Course architectures that safetensors weights are loaded into (trusted code from ``reference/``)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]  # holds reference/ (trusted course code)


def build(name: str) -> Any:
    """An untrained instance of the named course architecture."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    module = importlib.import_module("reference.digits_cnn")
    return module.build_architecture(name)


def known() -> list[str]:
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    return sorted(importlib.import_module("reference.digits_cnn").ARCHITECTURES)

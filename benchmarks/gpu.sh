#!/usr/bin/env bash
# The GPU checks of issue #16 on a bare CUDA machine, in under 5 minutes: tests/gpu (skipped
# without CUDA) and the one-page GPU benchmark (benchmarks/gpu.py).
#
# Needs only a Python with torch (CUDA build) and numpy; the worker also imports pydantic, and the
# tests pytest and PyYAML. Missing ones are installed from benchmarks/wheels/ when that folder is
# there (on a machine with network: pip download -d benchmarks/wheels pydantic pytest pyyaml),
# never from the network. onnxruntime-gpu and TensorRT are used where installed, skipped where not.
#
#   PYTHON=python3 benchmarks/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"

"$PY" - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA device: run this on a GPU machine"
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}")
PY

for module in pydantic pytest yaml; do
  if ! "$PY" -c "import $module" 2>/dev/null; then
    if [ -d benchmarks/wheels ]; then
      package=$([ "$module" = yaml ] && echo pyyaml || echo "$module")
      "$PY" -m pip install --quiet --no-index --find-links benchmarks/wheels "$package"
    else
      echo "missing Python module '$module' and no benchmarks/wheels/ to install it from" >&2
      exit 1
    fi
  fi
done

echo "== tests/gpu"
timeout 240 "$PY" -m pytest -q -p no:cacheprovider -o addopts="" --confcutdir=tests/gpu -s tests/gpu
echo "== benchmarks/gpu.py"
timeout 240 "$PY" benchmarks/gpu.py

# syntax=docker/dockerfile:1
# The grading image: what `grader check --runner docker --image IMAGE` starts for every grading.
# Its entry point is the sandboxed worker (python -m grader.worker JOB.json); the runner adds the
# isolation (no network, read-only root, no capabilities, limits) at `docker create` time.
#
#   CPU:               docker build -t compression-grader:cpu .
#   GPU:               docker build --build-arg VARIANT=gpu -t compression-grader:gpu .
#   GPU with TensorRT: docker build --build-arg VARIANT=gpu --build-arg TENSORRT=1 -t compression-grader:gpu-trt .
#
# Pinned: the base image by digest (re-pin with `docker buildx imagetools inspect NAME:TAG`), Python
# packages by exact version in docker/requirements-*.txt, binary wheels only. The final stage has
# no compiler, no pip and no network tool, and runs as an unprivileged user.

ARG VARIANT=cpu
ARG BASE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

# ---- the Python each variant runs on ------------------------------------------------------------
# One base for both: the GPU variant's CUDA 13 user-space libraries (runtime, cuBLAS, cuDNN 9, ...)
# come only from the wheels pinned in docker/requirements-gpu.txt, resolved together with torch and
# onnxruntime-gpu (scripts/lock.py), so the image holds exactly one CUDA major and no CUDA base
# image can bring a second. The driver (libcuda) is the host's, mounted by the NVIDIA Container
# Toolkit when the runner asks for a GPU: CUDA 13 needs driver 580 or newer (README, "GPU runner").
FROM ${BASE} AS python-cpu
ENV GRADER_PYTHON=/usr/local/bin/python3.11

FROM ${BASE} AS python-gpu
ENV GRADER_PYTHON=/usr/local/bin/python3.11 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

FROM python-${VARIANT} AS runtime

# ---- build: a virtual environment with the pinned packages and the grader ------------------------
FROM runtime AS build
ARG VARIANT
ARG TENSORRT=0
COPY docker/requirements-*.txt /tmp/requirements/
RUN if [ "$TENSORRT" = 1 ] && [ "$VARIANT" != gpu ]; then echo "TENSORRT=1 needs VARIANT=gpu" >&2; exit 1; fi \
 && "$GRADER_PYTHON" -m venv /opt/grader \
 && /opt/grader/bin/pip install --no-cache-dir --only-binary=:all: -r "/tmp/requirements/requirements-${VARIANT}.txt" \
 && if [ "$TENSORRT" = 1 ]; then \
      /opt/grader/bin/pip install --no-cache-dir --only-binary=:all: -r /tmp/requirements/requirements-tensorrt.txt; \
    fi
COPY pyproject.toml README.md /src/
COPY grader /src/grader
# --no-deps: the requirements file above is the complete, pinned set (and holds onnxruntime-gpu
# instead of onnxruntime in the GPU variant); then pip goes, it is not needed to grade.
RUN /opt/grader/bin/pip install --no-cache-dir --no-deps --no-build-isolation /src \
 && /opt/grader/bin/python -m compileall -q /opt/grader/lib \
 && /opt/grader/bin/pip uninstall -y pip

# ---- final: the grader and its Python, nothing to build or fetch with ---------------------------
FROM runtime AS final
COPY --from=build /opt/grader /opt/grader
RUN (! "$GRADER_PYTHON" -m pip --version >/dev/null 2>&1 || "$GRADER_PYTHON" -m pip uninstall -y pip setuptools wheel) \
 && groupadd --system --gid 10001 grader \
 && useradd --system --uid 10001 --gid grader --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin grader
ENV PATH=/opt/grader/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
LABEL org.opencontainers.image.title="compression-grader worker" \
      org.opencontainers.image.description="Runs grader.worker inside the Docker runner's sandbox"
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["python", "-m", "grader.worker"]

"""Per-tensor statistics, computed on the values as stored (integers stay integers)."""

from __future__ import annotations

import numpy as np

from grader.contracts.observations import PALETTE_MAX, TensorEvidence

NEAR_ZERO_RELATIVE = 1e-6
NOISE_RELATIVE = 1e-5  # values closer than this (of the largest magnitude) differ only by float noise
MAX_DISTINCT_EXACT = 50_000_000  # np.unique above this many elements is too slow to be worth it


def bits_of(dtype: np.dtype | str, packed_bits: int | None = None) -> int:
    if packed_bits:
        return packed_bits
    return int(np.dtype(dtype).itemsize * 8)


def is_low_bit_integer(dtype: np.dtype | str, bits: int) -> bool:
    return np.issubdtype(np.dtype(dtype), np.integer) and bits <= 8


def tensor_evidence(
    name: str,
    values: np.ndarray,
    layer: str,
    *,
    prunable: bool,
    quantized: bool,
    zero_point: np.ndarray | int | float = 0,
    axis: int | None = None,
    bits: int | None = None,
    stored_dtype: str | None = None,
) -> TensorEvidence:
    """Zeros are values equal to the zero point (so pruned-then-quantized weights count)."""
    values = np.asarray(values)
    zp = _broadcast_zero_point(np.asarray(zero_point), values.shape, axis)
    zeros = int(np.count_nonzero(values == zp))
    near = 0
    if np.issubdtype(values.dtype, np.floating) and values.size:
        magnitude = np.abs(values.astype(np.float64, copy=False))
        scale = float(magnitude.max())
        near = int(np.count_nonzero((magnitude > 0) & (magnitude <= scale * NEAR_ZERO_RELATIVE)))
    ordered = _sorted_floats(values) if values.size <= MAX_DISTINCT_EXACT else None
    distinct = distinct_count(values, ordered) if values.size <= MAX_DISTINCT_EXACT else -1
    return TensorEvidence(
        name=name[:512],
        layer=layer[:128],
        stored_dtype=stored_dtype or str(values.dtype),
        bits=bits or bits_of(values.dtype),
        shape=[int(d) for d in values.shape],
        numel=int(values.size),
        zeros=zeros,
        near_zeros=near,
        distinct=distinct,
        distinct_within_noise=distinct_within_noise(values, ordered) if distinct > PALETTE_MAX else None,
        quantized=quantized,
        prunable=prunable,
    )


def _sorted_floats(values: np.ndarray) -> np.ndarray | None:
    """A float tensor's values sorted once, for both counts below (sorting is most of what a
    model's evidence costs: each model is loaded twice per grading, and it was sorted twice)."""
    return np.sort(values.reshape(-1)) if np.issubdtype(values.dtype, np.floating) and values.size else None


def distinct_count(values: np.ndarray, ordered: np.ndarray | None = None) -> int:
    """``np.unique(values).size``, from the sorted values where there are some: numpy sorts NaNs
    to the end, and like ``np.unique`` every NaN counts as one value and -0.0 equals 0.0."""
    if ordered is None:
        return int(np.unique(values).size)
    real = ordered[: ordered.size - int(np.count_nonzero(np.isnan(ordered)))]
    return (int(np.count_nonzero(real[1:] != real[:-1])) + 1 if real.size else 0) + int(real.size < ordered.size)


def distinct_within_noise(values: np.ndarray, ordered: np.ndarray | None = None) -> int | None:
    """Distinct values once those closer than ``NOISE_RELATIVE`` of the largest magnitude are merged.

    A diagnostic for the report ("4,096 distinct values, but only 16 apart from float noise"):
    clustering checks count exact values and never use this to pass anyone. ``ordered``: the
    values already sorted (``_sorted_floats``).
    """
    if not np.issubdtype(values.dtype, np.floating) or not values.size:
        return None
    ordered = np.sort(values.reshape(-1)) if ordered is None else ordered
    if np.isnan(ordered[-1]):  # numpy sorts NaNs last: with one, the largest magnitude is NaN, as before
        return None
    step = max(abs(float(ordered[0])), abs(float(ordered[-1]))) * NOISE_RELATIVE
    if step == 0 or not np.isfinite(step):
        return None
    return int(np.count_nonzero(np.diff(ordered.astype(np.float64)) > step)) + 1


def _broadcast_zero_point(zp: np.ndarray, shape: tuple[int, ...], axis: int | None) -> np.ndarray:
    """Per-channel zero points lie along ``axis``; reshape them so ``==`` broadcasts."""
    if zp.size <= 1 or not shape:
        return zp.reshape(()) if zp.size == 1 else np.zeros(())
    axis = 0 if axis is None else axis % len(shape)
    if shape[axis] != zp.size:
        return zp.reshape(-1)[:1].reshape(())
    target = [1] * len(shape)
    target[axis] = zp.size
    return zp.reshape(target)


def unpack_bits(packed: np.ndarray, bits: int) -> np.ndarray:
    """Codes of ``bits`` bits packed into bytes, lowest bits first (ONNX int4, MatMulNBits)."""
    flat = packed.reshape(-1).astype(np.uint8)
    if bits == 8:
        return flat
    per_byte = 8 // bits
    shifts = np.arange(per_byte, dtype=np.uint8) * bits
    return ((flat[:, None] >> shifts) & ((1 << bits) - 1)).reshape(-1)

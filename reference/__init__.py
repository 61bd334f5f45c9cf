"""Course reference model, compression helpers and the reference hw2 solution.

Everything under ``reference/models`` and ``reference/solutions/*/*.onnx|npz`` is
generated deterministically by ``python -m reference.build`` and not committed.
"""

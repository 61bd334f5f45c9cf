"""Evidence: what a model file itself proves (stored dtypes, exact zeros, distinct values, params).

Plain functions over tensors, shared by every assignment. Format readers (ONNX, torch) produce a
``ModelEvidence``; ``summary`` turns it into the figures checks use.
"""

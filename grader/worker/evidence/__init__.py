"""Evidence: what a model file itself proves (stored dtypes, exact zeros, distinct values, params,
MACs, ONNX validity), read inside the sandbox. Format readers (ONNX, torch) produce a
``ModelEvidence``; the host's ``grader.grading.figures`` summarises it.
"""

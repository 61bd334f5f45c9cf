"""The shared rules, one module per kind: compression (the load gate, thresholds, quantized, pruned),
behaviour (stable shapes, dynamic batch, parity, ONNX validity, engines built here) and comparison
(measured, reported, smaller, beats a reference). Importing ``grader.checks`` registers them all.
"""

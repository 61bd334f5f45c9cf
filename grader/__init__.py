"""compression-grader: proves a model was really compressed and measures what it gained.

Importing this package must stay cheap (no torch, no onnxruntime): ``grader --help`` relies on it.
"""

__version__ = "0.1.0"

"""Student inputs on the host, before anything runs: submission.yaml validated, every file it names
vetted (paths, formats by content, pickles and LFS pointers refused, .pt2 archives read as
data), and checked against what the assignment expects.
"""

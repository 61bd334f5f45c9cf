"""The shapes that cross a boundary: the job the host gives the worker, the observations it
returns, the problems a student must fix, the figure names, and result.json. Data only: nothing
here imports an implementation.
"""

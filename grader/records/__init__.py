"""result.json after the run: ingesting results as hostile input, filing them under the folder that
was graded, the results store, and counting graded runs for the runs-per-day limit. Shared by ci
and gradebook.
"""

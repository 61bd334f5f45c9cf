"""Staff inputs, read from the base branch and trusted, but validated so a typo fails loudly:
assignment.yaml, course.yaml, roster.yaml, the grading policy (deadlines, late rules, runs per
day), the score formula, held-out data, and where the course repository's files are.
"""

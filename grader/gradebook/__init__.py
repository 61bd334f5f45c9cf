"""Instructors' side: from the results store to grades, leaderboards, exports and regrades.

Every module here reads stored ``result.json`` records (``grader.records``) and the staff-written
policy files; none reaches into the grading pipeline's internals (a regrade runs the pipeline
whole, in the sandboxes ``grader.commands`` chose).
"""

"""Instructors' side: the results store, late policy, grade tables, exports and regrades.

Every module here reads ``result.json`` (``grader.contracts.result.Result``) and the staff-written policy
files; none reaches into the grading pipeline's internals.
"""

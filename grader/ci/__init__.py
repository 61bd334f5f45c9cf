"""The GitHub side: from a pull-request event to one PR comment and a commit status.

Every decision the course repository's workflows take lives here, behind ``grader ci``:

- ``event``     what GitHub says about the run (PR, head SHA, author, event time): trusted facts
- ``admission`` which changed files a PR may touch, decided from the API's lists (pure rules)
- ``api``       the PyGithub client (retries, timeouts, request spacing) and the reads
- ``artifact``  the grading job's ``result.json``, loaded as hostile input
- ``publisher`` the writes: one comment per (PR, team, assignment), a commit status, a job summary
- ``messages``  the refusal comment and the commit status line
- ``flows``     the sequences the workflow's jobs run: decide the policy (read-only), publish
- ``runcount``  today's graded runs of a team, counted from the grading workflow's artifacts
- ``collect``   results from the bot's PR comments and the artifacts (``grader results collect``)

Modules here import only light libraries (PyGithub, pydantic, Jinja2, PyYAML): the workflow jobs
that run them install neither torch nor onnxruntime.
"""

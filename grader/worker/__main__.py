"""``python -m grader.worker JOB.json``: the sandboxed worker's entry point (see ``session``)."""

import sys

from grader.worker.session import main

sys.exit(main())

"""The documented exit codes of ``grader``; CI workflows branch on them."""

GRADED = 0  # graded, whatever the score
USAGE = 2  # wrong command line (argparse also uses 2)
REJECTED = 3  # the student's files cannot be graded; result.json and the report say what to fix
INTERNAL = 4  # the grader's own fault: not charged to the student
UNAVAILABLE = 5  # an outside service (the GitHub API) failed or refused; nothing was changed
STOPPED_BY_SIGNAL = 128  # + the signal's number (130 SIGINT, 143 SIGTERM), as a shell reports it

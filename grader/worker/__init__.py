"""Inside the sandbox: load the vetted models, gather evidence from the files, measure them, and
write the observations. Imports only grader.contracts (and the leaves), never the host side.
"""

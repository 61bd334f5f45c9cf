"""The final project's service track: start a team's inference service in the sandbox, drive it
with the grader's own load generator, and check every answer.

The service listens on a Unix socket in the sandbox's scratch folder (``$GRADER_SOCKET``): the
sandbox has no network, yet the trusted load generator outside it can reach that one file.
"""

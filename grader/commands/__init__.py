"""One module per ``grader`` subcommand group.

Each module defines ``register(subparsers)``, which adds its parser(s) and sets
``handler=<function(args) -> int>``. Modules import only the standard library at the top, so
``grader --help`` stays instant; heavy imports happen inside the handlers.
"""

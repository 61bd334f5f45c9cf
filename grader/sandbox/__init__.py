"""Where untrusted code runs: the contract every sandbox offers (base), the local child-process
sandbox, the Docker one, and the service hosts of the final project's service track. Nothing
here chooses between them; grader.commands does.
"""

"""The host pipeline as a visible list of stages (pipeline), the figures derived once from what was
observed (figures), and the service track's load test (service, loadgen, corpus).
"""

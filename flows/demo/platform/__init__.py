"""A small simulated HMS platform (proof engine, theorem repository, genetic optimizer).

Each component is a real process serving Prometheus metrics and a health check and writing
a log file; the demo and the tests observe and heal these processes.
"""

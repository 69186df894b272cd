"""Health probes in the Kubernetes shape: liveness and readiness, each exec, tcp, http or
metric, run on their own period with failure and success thresholds."""

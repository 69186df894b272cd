"""Nightly tuning: detector parameters (NSGA-II), labels from what the system records, and
recovery parameters (CMA-ES) scored by replaying recorded timelines through the policy code.

Plain functions and dataclasses; the flow, the configuration versions and the CLI live
elsewhere. Studies are Optuna RDB studies on the system's own database, named so that a later
run continues them (see :func:`tasks.tuning.detector.detector_study_name` and
:func:`tasks.tuning.recovery.recovery_study_name`).
"""

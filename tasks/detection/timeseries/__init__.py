"""Univariate time-series detectors (robust z-score, isolation forest, adaptive thresholds,
generalized ESD, NAB's windowed Gaussian) and the platform default."""

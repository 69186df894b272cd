"""Turning anomalies into issues (grouping, inhibition, resolution)."""

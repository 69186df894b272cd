"""Coordination: which issue gets which recovery, when, and with whose approval."""

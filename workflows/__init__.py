"""Workflows: deterministic, no I/O."""

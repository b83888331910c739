"""Keycard's domain: flows, messages and rules. Pure and deterministic, safe inside workflows."""

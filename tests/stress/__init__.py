"""Stress checks: the kill -9 campaign (``python -m tests.stress.kill``) and its pytest wrapper."""

"""Orchestration: plain functions that take a config and write a run/explain/compare folder.

The scripts in ``scripts/`` only parse the Hydra config and call these, so tests can call them directly.
"""

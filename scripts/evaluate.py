"""Evaluate a checkpoint: ``python scripts/evaluate.py ckpt=... [data.root=...|data.split=test]`` (see evaluate.yaml).

The same as ``catdog evaluate ...`` (catdog.cli).
"""

from catdog.cli import run_command

if __name__ == "__main__":
    run_command("evaluate")

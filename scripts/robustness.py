"""Context robustness: ``python scripts/robustness.py ckpt=... [context.backgrounds=<folder>]`` (robustness.yaml).

The same as ``catdog robustness ...`` (catdog.cli).
"""

from catdog.cli import run_command

if __name__ == "__main__":
    run_command("robustness")

"""Explain a checkpoint with CAMs: ``python scripts/explain.py ckpt=<run folder or .ckpt> [key=value ...]``.

The same as ``catdog explain ...`` (catdog.cli).
"""

from catdog.cli import run_command

if __name__ == "__main__":
    run_command("explain")

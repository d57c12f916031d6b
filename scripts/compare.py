"""Compare experiments on the same images: ``python scripts/compare.py runs=[runs/A,runs/B] [key=value ...]``.

The same as ``catdog compare ...`` (catdog.cli).
"""

from catdog.cli import run_command

if __name__ == "__main__":
    run_command("compare")

"""Audit a trained run's data: ``python scripts/triage.py ckpt=<run folder or .ckpt> [key=value ...]``.

Suspected label errors (cleanlab on out-of-sample probabilities), near duplicates and leaks, outliers and
failure slices, in a new triage folder with a report page; see conf/triage.yaml and docs/triage.md.

The same as ``catdog triage ...`` (catdog.cli).
"""

from catdog.cli import run_command

if __name__ == "__main__":
    run_command("triage")

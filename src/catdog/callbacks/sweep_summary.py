"""The end of a sweep (``catdog train -m ...``): a table of its jobs and the command that compares them.

A Hydra callback (``hydra.callbacks`` in conf/train.yaml), not a Lightning one: it runs once, after every job.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf


def job_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per numbered job folder of a sweep: its overrides, best epoch, validation and test accuracy."""
    rows = []
    jobs = sorted((p for p in Path(sweep_dir).iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    for job in jobs:
        overrides_file = job / ".hydra" / "overrides.yaml"
        overrides = OmegaConf.load(overrides_file) if overrides_file.is_file() else []
        test_file = job / "test_metrics.json"
        test = json.loads(test_file.read_text()) if test_file.is_file() else {}
        row = {
            "job": job.name,
            "overrides": [str(o) for o in overrides],
            "best_epoch": test.get("best_epoch"),
            "val_acc": _best_val_acc(job / "metrics.csv"),
            "test_acc": test.get("accuracy"),
            "done": (job / "checkpoints" / "best.ckpt").is_file() or (job / "checkpoints" / "last.ckpt").is_file(),
        }
        rows.append(row)
    return rows


def _best_val_acc(metrics_csv: Path) -> float | None:
    if not metrics_csv.is_file():
        return None
    frame = pd.read_csv(metrics_csv)
    return float(frame["val/acc"].max()) if "val/acc" in frame and frame["val/acc"].notna().any() else None


def sweep_table(sweep_dir: Path) -> str:
    """The lines printed at the end of a sweep."""
    rows = job_rows(sweep_dir)
    lines = [f"Sweep {sweep_dir}: {len(rows)} job(s)"]
    # The table shows what differs between jobs; what they all share is said once.
    listed = [row["overrides"] for row in rows if row["overrides"]]
    shared = set.intersection(*map(set, listed)) if len(listed) > 1 else set()
    if shared:
        lines.append("  every job: " + " ".join(o for o in listed[0] if o in shared))
    for row in rows:
        row["overrides"] = " ".join(o for o in row["overrides"] if o not in shared) or "-"
    width = max([len(row["overrides"]) for row in rows] + [9])
    lines.append(f"  job  {'overrides':<{width}}  best epoch  val acc  test acc")
    for row in rows:
        if not row["done"]:
            lines.append(f"  {row['job']:>3}  {row['overrides']:<{width}}  failed: no checkpoint")
            continue
        epoch = "-" if row["best_epoch"] is None else str(row["best_epoch"])
        val = "-" if row["val_acc"] is None else f"{row['val_acc']:.3f}"
        test = "-" if row["test_acc"] is None else f"{row['test_acc']:.2%}"
        lines.append(f"  {row['job']:>3}  {row['overrides']:<{width}}  {epoch:>10}  {val:>7}  {test:>8}")
    lines.append(f"Compare them on the same images: catdog compare sweep={sweep_dir}")
    return "\n".join(lines)


class SweepSummary(Callback):
    """Prints :func:`sweep_table` when a multirun ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if sweep_dir.is_dir():
            print(sweep_table(sweep_dir), flush=True)

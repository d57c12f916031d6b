"""Accuracy against training time for each recipe (experiment=...): train, then tabulate and plot.

Each recipe runs as ``scripts/train.py`` would be run by a user (one run folder each); metrics.csv
holds val/acc with the minutes since fit started (wall clock and CPU time of the process and its
DataLoader workers, logged by catdog.pipelines.train.EpochClock), test_metrics.json the final test
accuracy. CPU minutes / 2 is what the run would take on 2 dedicated cores; the wall clock depends
on whatever else shares the machine.

    python bench/train_recipes.py --root ../shared/data/catdog \\
        --weights ../shared/weights/mobilenet_v2_imagenet1001.pth         # train all recipes
    python bench/train_recipes.py --runs runs/bench/finetune/<ts> ...     # tabulate finished runs

Writes bench/train_recipes.png and prints the markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def recipes(root: str, weights: str) -> dict[str, list[str]]:
    """Recipe name -> scripts/train.py overrides."""
    data = ["data=folder", f"data.root={root}", "~callbacks.rich_progress_bar"]
    mobilenet = [f"model.weights={weights}"]
    return {
        "mobilenet_v2 finetune (default pretrained recipe: probe on images, FixRes, flip TTA)": [
            "experiment=mobilenet_local_weights", *mobilenet, *data],
        "mobilenet_v2 finetune_full (probe epoch, then the whole network)": [
            "experiment=finetune_full", "model=mobilenet_v2", *mobilenet,
            "model.mean=[0.5,0.5,0.5]", "model.std=[0.5,0.5,0.5]", *data],
        "mobilenet_v2 frozen_backbone (cached features)": [
            "experiment=frozen_backbone", "model=mobilenet_v2", *mobilenet,
            "model.mean=[0.5,0.5,0.5]", "model.std=[0.5,0.5,0.5]", *data],
        "resnet18 scratch": ["experiment=scratch", *data],
    }


def summarize(run: Path) -> dict:
    """Per-epoch curve and final numbers of one finished run folder."""
    metrics = pd.read_csv(run / "metrics.csv")
    curve = metrics.dropna(subset=["val/acc"]).groupby("epoch").last().reset_index()
    test = json.loads((run / "test_metrics.json").read_text())
    cols = [c for c in ("epoch", "val/acc", "time/wall_min", "time/cpu_min") if c in curve]
    # "tta": the same weights tested again with flip averaging (test_tta=hflip), a separate number.
    tta = (test.get("tta") or {}).get("accuracy")
    return {
        "run": str(run),
        "curve": curve[cols],
        "test_acc": test["accuracy"],
        "tta_acc": tta,
        "weights": test.get("weights"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="../shared/data/catdog")
    parser.add_argument("--weights", default="../shared/weights/mobilenet_v2_imagenet1001.pth")
    parser.add_argument("--runs-dir", default="runs/bench")
    parser.add_argument("--only", nargs="*", help="substrings of the recipe names to run")
    parser.add_argument("--runs", nargs="*", type=Path, help="tabulate these finished run folders instead")
    parser.add_argument("--plot", type=Path, default=ROOT / "bench" / "train_recipes.png")
    args = parser.parse_args()

    runs: dict[str, Path] = {}
    if args.runs:
        runs = {f"{run.parent.name}/{run.name}": run for run in args.runs}
    else:
        for name, overrides in recipes(args.root, args.weights).items():
            if args.only and not any(s in name for s in args.only):
                continue
            out = Path(args.runs_dir) / name.split(" (")[0].replace(" ", "_")
            cmd = [sys.executable, str(ROOT / "scripts" / "train.py"), *overrides, f"hydra.run.dir={out}"]
            print("$", " ".join(cmd[1:]), flush=True)
            subprocess.run(cmd, check=True)
            runs[name] = out

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    print("| recipe | epochs | test acc | test acc, flip TTA | best val acc | CPU min (/2 = 2-core min) | wall min |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, run in runs.items():
        s = summarize(run)
        curve = s["curve"]
        cpu = curve["time/cpu_min"].iloc[-1] if "time/cpu_min" in curve else float("nan")
        wall = curve["time/wall_min"].iloc[-1] if "time/wall_min" in curve else float("nan")
        tta = "-" if s["tta_acc"] is None else f"{s['tta_acc']:.2%}"
        print(
            f"| {name} | {len(curve)} | {s['test_acc']:.2%} | {tta} | {curve['val/acc'].max():.2%} | "
            f"{cpu:.1f} ({cpu / 2:.1f}) | {wall:.1f} |"
        )
        if "time/cpu_min" in curve:
            axes[0].plot(curve["time/cpu_min"] / 2, curve["val/acc"], marker="o", label=name)
            axes[1].plot(curve["time/wall_min"], curve["val/acc"], marker="o", label=name)
    axes[0].set_xlabel("minutes on 2 dedicated cores (CPU time / 2)")
    axes[1].set_xlabel("wall-clock minutes")
    axes[0].set_ylabel("validation accuracy")
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(args.plot, dpi=100)
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()

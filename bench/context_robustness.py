"""Context robustness before/after the zoom-out training option (issue 17, item 6).

Trains the offline recipe (``experiment=mobilenet_local_weights``) twice on the same photos and split:
as it is, and with ``data.augment_paste.p=0.5`` (half of the training crops shrunk to 25-90% of the side
onto generated backgrounds). Then runs ``scripts/robustness.py`` on each model's held-out test split:
every test photo at 1, 1/2, 1/3, 1/4 of its side pasted at seeded random places onto generated
backgrounds, and (``--backgrounds``) onto a folder of real photos the training never saw.

    nice -n 10 python bench/context_robustness.py --root ../shared/data/catdog \\
        --weights ../shared/weights/mobilenet_v2_imagenet1001.pth --backgrounds /tmp/nature --out /tmp/ctx
    python bench/context_robustness.py --out /tmp/ctx --table-only      # tabulate finished folders again
    ... --recipe finetune     # the same pair with the backbone fine-tuned too (the probe alone can only reweight)

Prints the markdown table for bench/RESULTS.md and writes ``<out>/context_robustness.png``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
PASTE = ["data.augment_paste.p=0.5"]
FULL_FINETUNE = ["model.freeze_backbone=false", "model.freeze_epochs=1", "model.backbone_lr=2.0e-4"]
# --recipe: the (before, after) pair of models and each one's overrides of the offline recipe.
RECIPES = {
    "frozen": {"plain": [], "augment_paste": PASTE},
    "finetune": {"finetune": FULL_FINETUNE, "finetune_paste": FULL_FINETUNE + PASTE},
}


def train(root: str, weights: str, run: Path, extra: list[str]) -> float:
    """Trains one model into ``run`` (skipped when its test_metrics.json exists); returns minutes."""
    if (run / "test_metrics.json").is_file():
        return float("nan")
    cmd = [sys.executable, str(ROOT / "scripts" / "train.py"), "experiment=mobilenet_local_weights",
           f"model.weights={weights}", "data=folder", f"data.root={root}", "~callbacks.rich_progress_bar",
           *extra, f"hydra.run.dir={run}"]
    print("$", " ".join(cmd[1:]), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    return (time.perf_counter() - start) / 60


def check(run: Path, out: Path, backgrounds: str | None) -> None:
    """Runs the robustness script on the run's test split into ``out`` (skipped when done)."""
    if (out / "robustness.csv").is_file():
        return
    cmd = [sys.executable, str(ROOT / "scripts" / "robustness.py"), f"ckpt={run}", f"out_dir={out}"]
    if backgrounds:
        cmd.append(f"context.backgrounds={backgrounds}")
    print("$", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True)


def table(out: Path, sources: dict[str, str | None], models: dict[str, list[str]]) -> pd.DataFrame:
    """One row per (backgrounds, scale), the overall numbers of both models side by side."""
    rows = []
    for source in sources:
        frames = {name: pd.read_csv(out / f"check_{name}_{source}" / "robustness.csv") for name in models}
        for name, frame in frames.items():
            frames[name] = frame[frame["class"] == "all"].set_index("side")
        plain, after = (frames[name] for name in models)
        for side in plain.index:
            rows.append({
                "backgrounds": source, "side": side,
                "accuracy before": plain.at[side, "accuracy"], "accuracy after": after.at[side, "accuracy"],
                "pointing before": plain.at[side, "pointing_hit"], "pointing after": after.at[side, "pointing_hit"],
                "centre baseline": plain.at[side, "centre_hit"],
                "energy before": plain.at[side, "energy_in_box"], "energy after": after.at[side, "energy_in_box"],
                "images": int(plain.at[side, "images"]),
            })
    return pd.DataFrame(rows)


def markdown(frame: pd.DataFrame) -> str:
    def pct(value: object) -> str:
        return "–" if pd.isna(value) else f"{float(value):.1%}"

    lines = [
        "| backgrounds | side | accuracy before → after | pointing game before → after (centre) | energy on the photo "
        "before → after |",
        "| --- | --- | --- | --- | --- |",
    ]
    for _, r in frame.iterrows():
        lines.append(
            f"| {r['backgrounds']} | {r['side']} | {pct(r['accuracy before'])} → **{pct(r['accuracy after'])}** | "
            f"{pct(r['pointing before'])} → {pct(r['pointing after'])} ({pct(r['centre baseline'])}) | "
            f"{pct(r['energy before'])} → {pct(r['energy after'])} |"
        )
    return "\n".join(lines)


def plot(frame: pd.DataFrame, out_png: Path, names: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sources = list(dict.fromkeys(frame["backgrounds"]))
    fig, axes = plt.subplots(1, len(sources), figsize=(4.5 * len(sources), 3.6), squeeze=False)
    for ax, source in zip(axes[0], sources):
        part = frame[frame["backgrounds"] == source]
        ax.plot(part["side"], part["accuracy before"], marker="o", label=f"accuracy, {names[0]}")
        ax.plot(part["side"], part["accuracy after"], marker="o", label=f"accuracy, {names[1]}")
        ax.plot(part["side"], part["pointing before"], marker="s", linestyle=":", label=f"pointing game, {names[0]}")
        ax.plot(part["side"], part["pointing after"], marker="s", linestyle=":", label=f"pointing game, {names[1]}")
        ax.set(title=f"{source} backgrounds", xlabel="side of the pasted photo", ylim=(0, 1.02))
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="../shared/data/catdog")
    parser.add_argument("--weights", default="../shared/weights/mobilenet_v2_imagenet1001.pth")
    parser.add_argument("--backgrounds", help="a folder of real background photos (no cats or dogs)")
    parser.add_argument("--out", type=Path, required=True, help="scratch folder: runs, checks, table, figure")
    parser.add_argument("--table-only", action="store_true", help="tabulate the finished folders in --out")
    parser.add_argument("--recipe", choices=RECIPES, default="frozen",
                        help="frozen: the offline recipe as it is (a probe on a frozen backbone); finetune: the "
                        "backbone fine-tuned too (1 probe epoch, then everything at a 10x lower backbone LR)")
    args = parser.parse_args()
    models = RECIPES[args.recipe]
    first = next(iter(models))
    sources = {"generated": None, **({"photo": args.backgrounds} if args.backgrounds else {})}
    if args.table_only:
        sources = {s: None for s in ("generated", "photo") if (args.out / f"check_{first}_{s}").is_dir()}
    else:
        minutes = {
            name: train(args.root, args.weights, args.out / f"run_{name}", extra) for name, extra in models.items()
        }
        print("training minutes:", minutes, flush=True)
        for name in models:
            for source, folder in sources.items():
                check(args.out / f"run_{name}", args.out / f"check_{name}_{source}", folder)
    frame = table(args.out, sources, models)
    for name in models:
        test = json.loads((args.out / f"run_{name}" / "test_metrics.json").read_text())
        print(f"{name}: test accuracy {test['accuracy']:.4f} (flip TTA {(test.get('tta') or {}).get('accuracy')})")
    suffix = "" if args.recipe == "frozen" else f"_{args.recipe}"
    frame.to_csv(args.out / f"context_robustness{suffix}.csv", index=False)
    plot(frame, args.out / f"context_robustness{suffix}.png", list(models))
    print(markdown(frame))


if __name__ == "__main__":
    main()

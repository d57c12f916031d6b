"""Context robustness before/after the zoom-out training option (issue 17, item 6).

Trains the offline recipe (``experiment=mobilenet_local_weights``) twice on the same photos and split:
as it is, and with ``data.augment_paste.p=0.5`` (half of the training crops shrunk to 25-90% of the side
onto generated backgrounds). Then runs ``scripts/robustness.py`` on each model's held-out test split:
every test photo at 1, 1/2, 1/3, 1/4 of its side pasted at seeded random places onto generated
backgrounds, and (``--backgrounds``) onto a folder of real photos the training never saw.

    nice -n 10 python bench/context_robustness.py --root ../shared/data/catdog \\
        --weights ../shared/weights/mobilenet_v2_imagenet1001.pth --backgrounds /tmp/nature --out /tmp/ctx
    python bench/context_robustness.py --out /tmp/ctx --table-only      # tabulate finished folders again

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
MODELS = {"plain": [], "augment_paste": ["data.augment_paste.p=0.5"]}


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


def table(out: Path, sources: dict[str, str | None]) -> pd.DataFrame:
    """One row per (backgrounds, scale), the overall numbers of both models side by side."""
    rows = []
    for source in sources:
        frames = {name: pd.read_csv(out / f"check_{name}_{source}" / "robustness.csv") for name in MODELS}
        for name, frame in frames.items():
            frames[name] = frame[frame["class"] == "all"].set_index("side")
        plain, after = frames["plain"], frames["augment_paste"]
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


def plot(frame: pd.DataFrame, out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sources = list(dict.fromkeys(frame["backgrounds"]))
    fig, axes = plt.subplots(1, len(sources), figsize=(4.5 * len(sources), 3.6), squeeze=False)
    for ax, source in zip(axes[0], sources):
        part = frame[frame["backgrounds"] == source]
        ax.plot(part["side"], part["accuracy before"], marker="o", label="accuracy, plain recipe")
        ax.plot(part["side"], part["accuracy after"], marker="o", label="accuracy, data.augment_paste.p=0.5")
        ax.plot(part["side"], part["pointing before"], marker="s", linestyle=":", label="pointing game, plain")
        ax.plot(part["side"], part["pointing after"], marker="s", linestyle=":", label="pointing game, paste")
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
    args = parser.parse_args()
    sources = {"generated": None, **({"photo": args.backgrounds} if args.backgrounds else {})}
    if args.table_only:
        sources = {s: None for s in ("generated", "photo") if (args.out / f"check_plain_{s}").is_dir()}
    else:
        minutes = {
            name: train(args.root, args.weights, args.out / f"run_{name}", extra) for name, extra in MODELS.items()
        }
        print("training minutes:", minutes, flush=True)
        for name in MODELS:
            for source, folder in sources.items():
                check(args.out / f"run_{name}", args.out / f"check_{name}_{source}", folder)
    frame = table(args.out, sources)
    for name in MODELS:
        test = json.loads((args.out / f"run_{name}" / "test_metrics.json").read_text())
        print(f"{name}: test accuracy {test['accuracy']:.4f} (flip TTA {(test.get('tta') or {}).get('accuracy')})")
    frame.to_csv(args.out / "context_robustness.csv", index=False)
    plot(frame, args.out / "context_robustness.png")
    print(markdown(frame))


if __name__ == "__main__":
    main()

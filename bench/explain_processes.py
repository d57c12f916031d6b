"""1 process vs N processes (DDP on the CPU, gloo): the same explain folder, and how long each takes.

Runs ``scripts/explain.py`` twice on the same images, ``devices=1`` and ``devices=N strategy=ddp``, then
checks that predictions.csv (every column), skipped.csv and cams.npz agree image by image.

    python bench/explain_processes.py --images ../shared/data/catdog --processes 2

Results are written down in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from catdog.data import IMAGE_EXTENSIONS
from catdog.models import ClassifierModule

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", required=True)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--precision", default="32")
    args = parser.parse_args()

    photos = sorted(p for p in Path(args.images).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if args.limit:
        photos = photos[:: max(1, len(photos) // args.limit)][: args.limit]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp, "images")
        for photo in photos:
            (folder / photo.parent.name).mkdir(parents=True, exist_ok=True)
            (folder / photo.parent.name / photo.name).symlink_to(photo.resolve())  # relative targets break
        torch.manual_seed(0)
        class_names = sorted({p.parent.name for p in photos})
        model = ClassifierModule(arch="resnet18", class_names=class_names, weights=None, image_size=224)
        ckpt = Path(tmp, "run", "checkpoints", "best.ckpt")
        ckpt.parent.mkdir(parents=True)
        torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, ckpt)
        seconds = {}
        for n in (1, args.processes):
            command = [
                sys.executable,
                str(ROOT / "scripts" / "explain.py"),
                f"ckpt={ckpt}",
                f"data.root={folder}",
                f"out_dir={Path(tmp, f'out{n}')}",
                f"precision={args.precision}",
                "accelerator=cpu",
                f"devices={n}",
                f"strategy={'ddp' if n > 1 else 'auto'}",
            ]
            start = time.perf_counter()
            done = subprocess.run(command, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            if done.returncode:
                raise SystemExit(f"{' '.join(command)} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
            seconds[n] = time.perf_counter() - start
        one, many = Path(tmp, "out1"), Path(tmp, f"out{args.processes}")
        a = pd.read_csv(one / "predictions.csv").sort_values("path", ignore_index=True)
        b = pd.read_csv(many / "predictions.csv").sort_values("path", ignore_index=True)
        same_rows = a["path"].tolist() == b["path"].tolist() and b["path"].is_unique
        numeric = [c for c in a.columns if a[c].dtype.kind == "f"]
        other = [c for c in a.columns if c not in numeric]
        max_diff = float((a[numeric] - b[numeric]).abs().max().max())
        same_other = a[other].equals(b[other])
        with np.load(one / "cams.npz") as x, np.load(many / "cams.npz") as y:
            same_order = x["paths"].tolist() == y["paths"].tolist()
            same_idx = np.array_equal(x["class_idx"], y["class_idx"])
            cam_diff = float(np.abs(x["cams"].astype(np.float32) - y["cams"].astype(np.float32)).max())
    print(f"{len(photos)} photos, resnet18 224px, precision {args.precision}")
    print("| processes | seconds (whole scripts/explain.py) |\n| --- | --- |")
    for n, s in seconds.items():
        print(f"| {n} | {s:.1f} |")
    print(
        f"same images, once each: {same_rows}; same non-numeric columns (pred, true, correct, overlay, ...): "
        f"{same_other}; largest numeric difference: {max_diff:.2g}; cams.npz same path order: {same_order}, "
        f"same classes: {same_idx}, largest map difference: {cam_diff:.2g}"
    )


if __name__ == "__main__":
    main()

"""Cost of each faithfulness metric per image, in one process on the same batch (no startup, no writing).

    python bench/faithfulness_cost.py --ckpt runs/mnv2_catdog/<ts>/checkpoints/best.ckpt --images 16

Prints one markdown row per metric: seconds per image and the metric's mean. Results in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

from catdog.data import build_transform, load_rgb
from catdog.explain.methods import explainer_for
from catdog.maps.geometry import cell_centres
from catdog.models import load_classifier
from catdog.quality.faithfulness import METRICS, build_faithfulness


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", type=Path, required=True)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--steps", type=int, default=16)
    args = parser.parse_args()
    model = load_classifier(args.ckpt)
    hp = model.hparams
    split = pd.read_csv(args.ckpt.parents[1] / "split.csv")
    test = split[split["split"] == "test"].groupby("label").head(args.images // 2)
    transform = build_transform(hp.image_size, hp.mean, hp.std, train=False)
    x = torch.stack([transform(load_rgb(p)) for p in test["path"]])
    explainer = explainer_for(model)
    centres = cell_centres(model.net, explainer.layer, (hp.image_size, hp.image_size), "receptive_field", arch=hp.arch)
    start = time.perf_counter()
    explained = explainer.explain(x, topk=1)
    base = time.perf_counter() - start
    print(f"{len(x)} images, {hp.arch} at {hp.image_size} px, {torch.get_num_threads()} threads, float32")
    print("| metric | s/image | mean |")
    print("| --- | --- | --- |")
    print(f"| (the CAM forward itself) | {base / len(x):.3f} | |")
    for name in METRICS:
        faith = build_faithfulness(model.net, [name], lambda net: explainer_for(model, net=net), centres, args.steps)
        start = time.perf_counter()
        rows = faith.columns(x, explained)
        seconds = time.perf_counter() - start
        values = pd.DataFrame(rows).mean(numeric_only=False).to_dict()
        text = ", ".join(f"{k} {float(v):.3f}" for k, v in values.items())
        print(f"| {name} | {seconds / len(x):.3f} | {text} |", flush=True)


if __name__ == "__main__":
    main()

"""How far bf16 autocast maps are from fp32 maps on the same images (the tolerance precision=auto states).

Runs exact CAM twice over the same batches, fp32 and bf16 autocast, and reports per image: the largest
map difference relative to that map's fp32 range (max - min), the Spearman rank correlation of the two
maps, whether the peak cell is the same, and whether the predicted class is the same.

    python bench/bf16_tolerance.py --images ../shared/data/catdog --limit 512 [--ckpt best.ckpt]

Results are written down in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr
from torch.utils.data import DataLoader

from catdog.data import IMAGE_EXTENSIONS, build_transform
from catdog.models import ClassifierModule, load_classifier
from catdog.pipelines.explain import build_explainer
from catdog.pipelines.predict import ExplainDataset, collate_explain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", required=True)
    parser.add_argument("--limit", type=int, default=512)
    parser.add_argument("--ckpt", default=None, help="a trained checkpoint (default: a random ResNet18)")
    args = parser.parse_args()

    paths = sorted(str(p) for p in Path(args.images).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    paths = paths[:: max(1, len(paths) // args.limit)][: args.limit]
    if args.ckpt:
        model = load_classifier(args.ckpt)
    else:
        torch.manual_seed(0)
        model = ClassifierModule(arch="resnet18", class_names=["cats", "dogs"], weights=None, image_size=224).eval()
    hp = model.hparams
    explainer = build_explainer(model)
    loader = DataLoader(
        ExplainDataset(paths, build_transform(hp.image_size, hp.mean, hp.std, train=False), 64),
        batch_size=32,
        num_workers=2,
        collate_fn=collate_explain,
    )
    rel, rho, same_peak, same_pred = [], [], [], []
    for batch in loader:
        x = batch.images.contiguous(memory_format=torch.channels_last)
        a = explainer.explain(x, topk=1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            b = explainer.explain(x, topk=1)
        same_pred += (a.class_idx[:, 0] == b.class_idx[:, 0]).tolist()
        # Compare the maps of the fp32 prediction in both precisions (same class).
        for i in range(len(x)):
            if a.class_idx[i, 0] != b.class_idx[i, 0]:
                continue
            m32, m16 = a.maps[i, 0].numpy(), b.maps[i, 0].numpy()
            span = float(m32.max() - m32.min()) or 1.0
            rel.append(float(np.abs(m32 - m16).max()) / span)
            rho.append(float(spearmanr(m32.ravel(), m16.ravel()).statistic))
            same_peak.append(int(m32.argmax()) == int(m16.argmax()))
    rel_np, rho_np = np.array(rel), np.array(rho)
    print(f"{len(same_pred)} images, {hp.arch} {hp.image_size}px, {'checkpoint ' + args.ckpt if args.ckpt else 'random weights'}")
    print(f"same predicted class: {np.mean(same_pred):.2%}")
    print(
        f"max |bf16 - fp32| / fp32 map range: median {np.median(rel_np):.4f}, 99th percentile "
        f"{np.percentile(rel_np, 99):.4f}, max {rel_np.max():.4f}"
    )
    print(f"Spearman(bf16, fp32) per map: median {np.median(rho_np):.4f}, min {rho_np.min():.4f}")
    print(f"same peak cell: {np.mean(same_peak):.2%}")


if __name__ == "__main__":
    main()

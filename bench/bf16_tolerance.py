"""How far bf16 autocast and BatchNorm folding move maps from fp32 maps (the tolerance explain states).

Runs exact CAM over the same batches: the reference in fp32 on the network as trained, then fp32 with
BatchNorm folded (``fold_batchnorm=true``), bf16 autocast, and bf16 with BatchNorm folded (what
``scripts/explain.py`` runs by default with precision=auto on a bf16 CPU). For each it reports per image:
the largest map difference relative to that map's reference range (max - min), the Spearman rank
correlation of the two maps, whether the peak cell is the same, and whether the predicted class is the same.

    python bench/bf16_tolerance.py --images ../shared/data/catdog --limit 512 [--ckpt best.ckpt]

Results are written down in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr
from torch.utils.data import DataLoader

from catdog.data import IMAGE_EXTENSIONS, build_transform
from catdog.explain.engine import ExplainDataset, collate_explain
from catdog.explain.methods import explainer_for
from catdog.models import ClassifierModule, fold_batchnorm, load_classifier


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
    folded = copy.deepcopy(model)
    count = fold_batchnorm(folded.net.eval())
    explainer, folded_explainer = explainer_for(model), explainer_for(folded)
    loader = DataLoader(
        ExplainDataset(paths, build_transform(hp.image_size, hp.mean, hp.std, train=False), 64),
        batch_size=32,
        num_workers=2,
        collate_fn=collate_explain,
    )
    variants = {
        "fp32, BatchNorm folded": (folded_explainer, False),
        "bf16": (explainer, True),
        "bf16, BatchNorm folded": (folded_explainer, True),
    }
    results = {name: {"rel": [], "rho": [], "peak": [], "pred": []} for name in variants}
    for batch in loader:
        x = batch.images.contiguous(memory_format=torch.channels_last)
        reference = explainer.explain(x, topk=1)
        for name, (candidate, bf16) in variants.items():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                other = candidate.explain(x, topk=1)
            result = results[name]
            result["pred"] += (reference.class_idx[:, 0] == other.class_idx[:, 0]).tolist()
            # Compare the maps of the reference prediction in both (same class).
            for i in range(len(x)):
                if reference.class_idx[i, 0] != other.class_idx[i, 0]:
                    continue
                m32, m = reference.maps[i, 0].numpy(), other.maps[i, 0].numpy()
                span = float(m32.max() - m32.min()) or 1.0
                result["rel"].append(float(np.abs(m32 - m).max()) / span)
                result["rho"].append(float(spearmanr(m32.ravel(), m.ravel()).statistic))
                result["peak"].append(int(m32.argmax()) == int(m.argmax()))
    source = "checkpoint " + args.ckpt if args.ckpt else "random weights"
    print(f"{len(paths)} images, {hp.arch} {hp.image_size}px, {source}; {count} BatchNorms folded; reference: fp32")
    for name, result in results.items():
        rel_np, rho_np = np.array(result["rel"]), np.array(result["rho"])
        print(
            f"{name}: same predicted class {np.mean(result['pred']):.2%}; max |map - reference| / reference "
            f"range: median {np.median(rel_np):.4f}, 99th percentile {np.percentile(rel_np, 99):.4f}, max "
            f"{rel_np.max():.4f}; Spearman median {np.median(rho_np):.4f}, min {rho_np.min():.4f}; same peak "
            f"cell {np.mean(result['peak']):.2%}"
        )


if __name__ == "__main__":
    main()

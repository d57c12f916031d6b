"""Explain throughput on the same images, batch size and threads, in one process (img/s).

(a) plain batched inference with decoding (DataLoader workers): no CAM, no writing
(b) catdog's full explain (run_explain): CAMs, overlays at the original size, tables
(c) a per-image loop in the style of the classic CAM tutorials: decode one image, a features forward
    and a second full forward, returnCAM in numpy, cv2 overlay and write
(d) pytorch-grad-cam GradCAM on the same model, batched, with the same overlay writing as (b)

    python bench/explain_throughput.py --images ../shared/data/catdog --limit 256
    python bench/explain_throughput.py --precision bf16

Results are written down in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from catdog.data import IMAGE_EXTENSIONS, build_transform, ensure_demo_dataset
from catdog.models import ClassifierModule, arch_spec
from catdog.overlay import draw_label, heatmap_overlay, label_text, save_image
from catdog.pipelines.explain import ExplainDataset, OverlayStyle, collate_explain, run_explain


# Its own folder: regenerating data/demo with other settings would change what earlier runs' split.csv
# and boxes.csv point at.
BENCH_DATA = "data/bench_demo_600x128"


def list_images(root: Path, limit: int) -> pd.DataFrame:
    paths = sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    # interleave classes so a limit keeps both
    paths = paths[:: max(1, len(paths) // limit)][:limit] if len(paths) > limit else paths
    labels = [Path(p).parent.name for p in paths]
    return pd.DataFrame({"path": paths, "label": labels})


def plain_inference(model, images, args) -> float:
    hp = model.hparams
    loader = DataLoader(
        ExplainDataset(images["path"].tolist(), build_transform(hp.image_size, hp.mean, hp.std, train=False)),
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        collate_fn=collate_explain,
    )
    net = model.net.to(memory_format=torch.channels_last)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16")
    start = time.perf_counter()
    with torch.inference_mode(), autocast:
        for batch in loader:
            net(batch["images"].contiguous(memory_format=torch.channels_last)).float().softmax(1)
    return len(images) / (time.perf_counter() - start)


def full_explain(model, images, args, out: Path) -> float:
    style = OverlayStyle(
        list(model.hparams.class_names), topk=1, alpha=0.5, side_by_side=False, show_true_cam=True, quality=90
    )
    start = time.perf_counter()
    run_explain(
        model,
        images,
        out,
        style=style,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        bf16=args.precision == "bf16",
        writers=2,
    )
    return len(images) / (time.perf_counter() - start)


def tutorial_loop(model, images, args, out: Path) -> float:
    """One image at a time, as in the CAM demo: hook features, forward twice, numpy CAM."""
    hp = model.hparams
    net = model.net.eval()
    spec = arch_spec(hp.arch)
    features_blob = []
    handle = net.get_submodule(spec.feature_layer).register_forward_hook(
        lambda m, i, o: features_blob.append(o.detach().numpy())
    )
    weight = net.get_submodule(spec.fc_layer).weight.detach().numpy()
    transform = build_transform(hp.image_size, hp.mean, hp.std, train=False)
    start = time.perf_counter()
    with torch.no_grad():
        for i, path in enumerate(images["path"]):
            rgb = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
            x = transform(rgb).unsqueeze(0)
            features_blob.clear()
            net(x)  # the tutorials' forward that fills the features blob
            probs = net(x).softmax(1)[0].numpy()  # and a second full forward for the prediction
            idx = int(probs.argmax())
            nc, h, w = features_blob[0].shape[1:]
            cam = weight[idx].dot(features_blob[0].reshape(nc, h * w)).reshape(h, w)
            cam = (cam - cam.min()) / (cam.max() - cam.min() + 1e-12)
            cam = cv2.resize(cam, (rgb.shape[1], rgb.shape[0]))
            heat = cv2.applyColorMap(np.uint8(255 * cam), cv2.COLORMAP_JET)
            result = heat * 0.5 + cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) * 0.5
            cv2.imwrite(str(out / f"{i}.jpg"), result)
    handle.remove()
    return len(images) / (time.perf_counter() - start)


def gradcam_batched(model, images, args, out: Path) -> float:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    hp = model.hparams
    net = model.net.eval()
    loader = DataLoader(
        ExplainDataset(images["path"].tolist(), build_transform(hp.image_size, hp.mean, hp.std, train=False)),
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        collate_fn=collate_explain,
    )
    names = list(hp.class_names)
    start = time.perf_counter()
    with GradCAM(model=net, target_layers=[net.get_submodule(arch_spec(hp.arch).feature_layer)]) as cam:
        for batch in loader:
            x = batch["images"]
            with torch.no_grad():
                probs = net(x).softmax(1)
            pred = probs.argmax(1)
            maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in pred])
            for row, original in enumerate(batch["originals"]):
                rgb = original.numpy()
                heat = cv2.resize(maps[row], (rgb.shape[1], rgb.shape[0]))
                picture = draw_label(
                    heatmap_overlay(rgb, heat, 0.5), label_text(names[pred[row]], float(probs[row, pred[row]]), None)
                )
                save_image(out / f"{batch['indices'][row]}.jpg", picture)
    return len(images) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default=None, help="an image folder (default: demo data generated into data/bench_demo_600x128)")
    parser.add_argument("--limit", type=int, default=256)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--precision", choices=["32", "bf16"], default="32")
    args = parser.parse_args()

    root = (
        Path(args.images)
        if args.images
        else ensure_demo_dataset(BENCH_DATA, num_per_class=600, image_size=128, seed=0)
    )
    images = list_images(Path(root), args.limit)
    class_names = sorted(images["label"].unique().tolist())
    model = ClassifierModule(arch=args.arch, class_names=class_names, weights=None, image_size=args.image_size).eval()
    plain_inference(model, images.head(args.batch_size), args)  # warm-up: first-call allocations, page cache

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key, name, fn in [
            ("a", "plain batched inference + decoding", lambda: plain_inference(model, images, args)),
            (
                "b",
                "catdog explain (CAM + overlays + tables)",
                lambda: full_explain(model, images, args, Path(tmp, "b")),
            ),
            ("c", "per-image tutorial CAM loop", lambda: tutorial_loop(model, images, args, Path(tmp, "c"))),
            ("d", "pytorch-grad-cam GradCAM, batched", lambda: gradcam_batched(model, images, args, Path(tmp, "d"))),
        ]:
            Path(tmp, key).mkdir()
            results[key] = (name, fn())
    print(
        f"{len(images)} images from {root}, {args.arch} {args.image_size}px, batch {args.batch_size}, "
        f"{args.num_workers} workers, {torch.get_num_threads()} threads, precision {args.precision}"
    )
    print("| | method | img/s |\n| --- | --- | --- |")
    for key, (name, speed) in results.items():
        print(f"| ({key}) | {name} | {speed:.1f} |")
    a, b, c, d = (results[k][1] for k in "abcd")
    print(
        f"(b)/(a) = {b / a:.2f} (target >= 0.8), (b)/(c) = {b / c:.2f} (target >= 3), (b)/(d) = {b / d:.2f} (target >= 2)"
    )


if __name__ == "__main__":
    main()

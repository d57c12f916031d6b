"""Per-method explain throughput (img/s): every method on the same images, same batch, one run, one process.

Images are decoded and preprocessed once up front, so the table measures the methods alone: plain
batched inference (no maps), exact CAM, and each pytorch-grad-cam method through catdog's adapter
(raw maps of the predicted class, one target column). Score-CAM and Ablation-CAM run one extra forward
pass per channel of the layer and image, so they are orders of magnitude slower: keep --limit small.

    python bench/methods_throughput.py --images ../shared/data/catdog --limit 16 --image-size 112

Results are written down in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torchvision

from catdog.data import IMAGE_EXTENSIONS, build_transform, load_rgb
from catdog.maps.explainers import METHODS, build_explainer
from catdog.models import IMAGENET_MEAN, IMAGENET_STD, arch_spec


def load_batches(root: Path, limit: int, image_size: int, batch_size: int) -> list[torch.Tensor]:
    """The first ``limit`` photos (classes interleaved), decoded and preprocessed once."""
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    paths = paths[:: max(1, len(paths) // limit)][:limit]
    transform = build_transform(image_size, list(IMAGENET_MEAN), list(IMAGENET_STD), train=False)
    images = torch.stack([transform(load_rgb(p)) for p in paths]).contiguous(memory_format=torch.channels_last)
    return list(images.split(batch_size))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=Path("../shared/data/catdog"))
    parser.add_argument("--limit", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--layer", default=None, help="default: the registry's layer (resnet: layer4)")
    parser.add_argument("--methods", default=",".join(METHODS))
    args = parser.parse_args()

    torch.manual_seed(0)
    net = torchvision.models.get_model(args.arch, num_classes=2).eval().to(memory_format=torch.channels_last)
    batches = load_batches(args.images, args.limit, args.image_size, args.batch_size)
    count = sum(len(b) for b in batches)
    with torch.inference_mode():
        net(batches[0][:2])  # warm-up

    # img/s (wall) and CPU seconds per image: on a shared CPU the second is the work a method does,
    # whatever share of the cores it gets.
    rows = []
    start, cpu = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        for batch in batches:
            net(batch).softmax(dim=1)
    rows.append(
        (
            "plain batched inference (no maps)",
            count / (time.perf_counter() - start),
            (time.process_time() - cpu) / count,
        )
    )
    spec = arch_spec(args.arch)
    for method in args.methods.split(","):
        if method == "cam" and not spec.exact_cam:
            continue
        explainer = build_explainer(net, args.arch, method, args.layer if method != "cam" else None)
        start, cpu = time.perf_counter(), time.process_time()
        for batch in batches:
            explainer.explain(batch, topk=1)
        rows.append(
            (
                f"{method} @ {explainer.layer}",
                count / (time.perf_counter() - start),
                (time.process_time() - cpu) / count,
            )
        )
        print(f"{rows[-1][0]}: {rows[-1][1]:.2f} img/s, {rows[-1][2]:.3f} CPU s/img", flush=True)

    print(
        f"\n{count} photos of {args.images}, {args.arch} at {args.image_size} px, batch {args.batch_size}, "
        f"{torch.get_num_threads()} threads, float32\n\n"
        "| method | img/s | CPU s/img | CPU x plain |\n| --- | --- | --- | --- |"
    )
    plain_cpu = rows[0][2]
    for name, speed, cpu_per_image in rows:
        print(f"| {name} | {speed:.2f} | {cpu_per_image:.3f} | {cpu_per_image / plain_cpu:.1f} |")


if __name__ == "__main__":
    main()

"""Training throughput: our Lightning module vs. a plain PyTorch loop doing the same work.

Both train the same model (ClassifierModule.net), from the same DataLoader (same decoding, augmentation,
workers), with the same optimizer, batch size, channels_last and thread count, in one process.
Timing starts after ``--warmup`` batches and covers ``--steps`` batches; the two loops alternate
``--repeats`` times and the best run of each is reported (the least disturbed by other processes).

    python bench/train_throughput.py                      # demo data (generated if missing), resnet18, 128 px
    python bench/train_throughput.py --root ../shared/data/catdog --image-size 224 --batch-size 32

Results are written down in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import time

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from catdog.data import (
    ImageDataModule,
    LoaderSettings,
    build_index,
    class_names_of,
    ensure_demo_dataset,
)
from catdog.models import ClassifierModule


class StepTimer(pl.Callback):
    """Wall time from the start of batch ``warmup`` to the end of the last batch."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start = self.end = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.end = time.perf_counter()


# Its own folder: regenerating data/demo with other settings would change what earlier runs' split.csv
# and boxes.csv point at.
BENCH_DATA = "data/bench_demo_600x128"


def make_module(args: argparse.Namespace, class_names: list[str]) -> ClassifierModule:
    return ClassifierModule(
        arch=args.arch,
        class_names=class_names,
        weights=None,
        image_size=args.image_size,
        optimizer={"_target_": "torch.optim.AdamW", "lr": 1e-3, "weight_decay": 1e-4},
        scheduler=None,
        channels_last=True,
    )


def lightning_run(args, datamodule, class_names) -> float:
    module = make_module(args, class_names)
    timer = StepTimer(args.warmup)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=args.warmup + args.steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(module, datamodule=datamodule)
    return args.steps * args.batch_size / (timer.end - timer.start)


def plain_run(args, datamodule, class_names) -> float:
    """The same work without Lightning: forward, loss, backward, step, accuracy."""
    module = make_module(args, class_names)
    net = module.net.to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-3, weight_decay=1e-4)
    accuracy = MulticlassAccuracy(num_classes=len(class_names))
    loader = datamodule.train_dataloader()  # once, as Lightning does: persistent workers survive epochs
    step, start = 0, 0.0
    while step < args.warmup + args.steps:
        for images, labels, _ in loader:
            if step == args.warmup:
                start = time.perf_counter()
            logits = net(images.contiguous(memory_format=torch.channels_last))
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            accuracy.update(logits.detach(), labels)
            step += 1
            if step == args.warmup + args.steps:
                break
    return args.steps * args.batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--root", default=None, help="ImageFolder root (default: demo data generated into data/bench_demo_600x128)"
    )
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    root = args.root or ensure_demo_dataset(BENCH_DATA, num_per_class=600, image_size=128, seed=0)
    index = build_index("folder", root, val_fraction=0.1, test_fraction=0.1, seed=0)
    class_names = class_names_of(index)
    loading = LoaderSettings(
        image_size=args.image_size,
        mean=[0.485, 0.456, 0.406],
        std=[0.229, 0.224, 0.225],
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        augment=True,
    )
    datamodule = ImageDataModule(index, class_names, loading)
    datamodule.setup("fit")
    results: dict[str, list[float]] = {"plain": [], "lightning": []}
    for _ in range(args.repeats):
        pl.seed_everything(0)
        results["plain"].append(plain_run(args, datamodule, class_names))
        pl.seed_everything(0)
        results["lightning"].append(lightning_run(args, datamodule, class_names))
    plain, lightning = max(results["plain"]), max(results["lightning"])
    print(
        f"settings: {args.arch} {args.image_size}px batch {args.batch_size} workers {args.num_workers} "
        f"threads {torch.get_num_threads()} steps {args.steps} (+{args.warmup} warm-up) x{args.repeats}"
    )
    print(
        f"all runs img/s: plain {[round(v, 1) for v in results['plain']]}, "
        f"lightning {[round(v, 1) for v in results['lightning']]}"
    )
    print("| loop | img/s (best) |\n| --- | --- |")
    print(f"| plain PyTorch | {plain:.1f} |\n| catdog Lightning module | {lightning:.1f} |")
    print(f"Lightning overhead: {100 * (1 - lightning / plain):+.1f}% (target <= 5%)")


if __name__ == "__main__":
    main()

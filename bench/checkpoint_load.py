"""Time to load a checkpoint with load_classifier, with and without the random initialisation it skips.

For each architecture a checkpoint of a randomly initialised network is written to a temporary folder, then
loaded ``--repeats`` times in turn: as catdog loads it (``weights_left_uninitialised``: nothing initialised before
the weights are loaded) and as before (every layer initialised, then overwritten). Only the ratio in one run counts.

    python bench/checkpoint_load.py --archs resnet18 convnext_tiny vit_b_16 --repeats 5

Results are written down in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch

from catdog.models import ClassifierModule, load_classifier


def seconds_to_load(path: Path, initialise: bool) -> float:
    """One load_classifier of ``path``; initialise: with the layers' random initialisation, as before."""
    skipped = mock.patch("catdog.models.module.weights_left_uninitialised", contextlib.nullcontext)
    with skipped if initialise else contextlib.nullcontext():
        start = time.perf_counter()
        load_classifier(path)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", nargs="+", default=["resnet18", "convnext_tiny", "vit_b_16"])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"torch threads: {torch.get_num_threads()}")
    print("| arch | initialised, then loaded (s) | loaded only (s) | ratio |\n| --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.archs:
            size = 224 if arch.startswith("vit") else 64
            module = ClassifierModule(arch=arch, class_names=["cat", "dog"], weights=None, image_size=size)
            path = Path(tmp) / f"{arch}.ckpt"
            torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
            load_classifier(path)  # warm the file cache and the first-call costs
            before, after = [], []
            for _ in range(args.repeats):  # interleaved, so drift hits both alike
                before.append(seconds_to_load(path, initialise=True))
                after.append(seconds_to_load(path, initialise=False))
            old, new = statistics.median(before), statistics.median(after)
            print(f"| {arch} | {old:.3f} | {new:.3f} | {old / new:.2f}x |")


if __name__ == "__main__":
    main()

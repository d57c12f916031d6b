"""Explain throughput against plain inference on the same images, batch size and threads (img/s).

Methods (each does what its name says and no extra work):

(a)  plain batched decode + inference: DataLoader workers decode and transform, one forward per batch,
     softmax; nothing else (no originals shipped, no CAM, no writing)
(a32) the same in float32, when --precision is not 32 (the baseline "auto >= 1.3x plain fp32" needs)
(af) the same as (a) on the network with BatchNorm folded into the convolutions, as explain runs it
(ae) the same as (a) with explain's engine settings: BatchNorm folded (fp32 only, as explain) and glibc
     malloc keeping freed buffers (``catdog.allocator.reuse_freed_memory``, ``tune_malloc=true``): the
     like-for-like comparison for (b), which shows what explaining itself costs
(b)  catdog explain in-loop: ``run_explain`` (Lightning prediction, CAMs, overlays, thumbnails, rows, maps),
     timed over its prediction loop as summary.json's ``seconds`` (img/s of the loop), with the engine
     settings ``scripts/explain.py`` uses by default: BatchNorm folded in fp32 (``fold_batchnorm=true``;
     not in bf16) and malloc tuned during the loop (``tune_malloc=true``)
(b+) the same call timed end to end, including the shard merge (predictions.csv, cams.npz)
(w)  the whole ``python scripts/explain.py`` process: start-up, loading, explain, tables, summary and the
     HTML report, timed from process start to exit
(c)  the classic CAM tutorial loop: one image at a time, one forward with a feature hook, numpy CAM,
     cv2 overlay and write, as the original demo code does
(d)  pytorch-grad-cam GradCAM, batched, its own forward only (predictions read from ``cam.outputs``),
     with catdog's overlay writing

Every measurement is a fresh process (the bench starts itself once per method and round): the state one
method leaves in the allocator would otherwise speed up or slow down the next. Methods alternate within
each round and the rounds repeat (``--rounds``), so a load change on the shared machine hits every method
alike; the table lists every round and the ratios use the median.

    python bench/explain_throughput.py --images ../shared/data/catdog --methods a,ae,b,w --rounds 2
    python bench/explain_throughput.py --images ../shared/data/catdog --precision auto --methods a32,a,b

Results are written down in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from catdog.allocator import reuse_freed_memory
from catdog.data import IMAGE_EXTENSIONS, build_transform, load_rgb
from catdog.explain.engine import ExplainDataset, collate_explain, resolve_precision, run_explain
from catdog.explain.render import OverlayStyle
from catdog.explain.settings import ExplainSettings
from catdog.models import ClassifierModule, arch_spec, fold_batchnorm
from catdog.overlay import draw_label, heatmap_overlay, label_text, save_image

ROOT = Path(__file__).resolve().parents[1]


def list_images(root: Path, limit: int | None) -> pd.DataFrame:
    paths = sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if limit and len(paths) > limit:  # interleave classes so a limit keeps both
        paths = paths[:: max(1, len(paths) // limit)][:limit]
    return pd.DataFrame({"path": paths, "label": [Path(p).parent.name for p in paths]})


class DecodeDataset(Dataset):
    """Decode and transform only: what inference needs."""

    def __init__(self, paths: list[str], transform) -> None:
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(load_rgb(self.paths[index]))


def plain_inference(model, images, args, precision: str) -> float:
    hp = model.hparams
    loader = DataLoader(
        DecodeDataset(images["path"].tolist(), build_transform(hp.image_size, hp.mean, hp.std, train=False)),
        batch_size=args.batch_size,
        num_workers=args.num_workers,
    )
    net = model.net.to(memory_format=torch.channels_last)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    start = time.perf_counter()
    with torch.inference_mode(), autocast:
        for x in loader:
            net(x.contiguous(memory_format=torch.channels_last)).float().softmax(1)
    return len(images) / (time.perf_counter() - start)


def _engine_settings(args):
    """conf/explain.yaml's engine settings (overlay writers, max_size...) with this run's batch, workers, precision."""
    from hydra import compose, initialize_config_dir

    from catdog import CONFIG_DIR

    overrides = ["ckpt=unused", f"data.batch_size={args.batch_size}", f"data.num_workers={args.num_workers}",
                 f"precision={args.precision}", "accelerator=cpu"]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        settings = ExplainSettings.from_config(compose(config_name="explain", overrides=overrides)).engine()
    return dataclasses.replace(settings, progress=False)


def catdog_explain(model, images, args, out: Path) -> tuple[float, float]:
    style = OverlayStyle(
        list(model.hparams.class_names), topk=1, alpha=0.5, side_by_side=False, show_true_cam=True, quality=90
    )
    start = time.perf_counter()
    predictions, _, stats = run_explain(model, images, out, _engine_settings(args), style=style)
    total = time.perf_counter() - start
    return len(predictions) / stats["seconds"], len(predictions) / total


def whole_process(images, args, ckpt: Path, out: Path) -> float:
    """scripts/explain.py as a user runs it; the images listed in a folder of symlinks (same order)."""
    folder = out.parent / f"{out.name}_input"
    for i, row in enumerate(images.itertuples()):
        link = folder / row.label / f"{i:06d}_{Path(row.path).name}"
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path(row.path).resolve())  # relative paths would resolve against the link
    command = [
        sys.executable,
        str(ROOT / "scripts" / "explain.py"),
        f"ckpt={ckpt}",
        f"data.root={folder}",
        f"out_dir={out}",
        f"data.batch_size={args.batch_size}",
        f"data.num_workers={args.num_workers}",
        f"precision={args.precision}",
        "accelerator=cpu",
    ]
    start = time.perf_counter()
    done = subprocess.run(command, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"scripts/explain.py failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return len(images) / (time.perf_counter() - start)


def tutorial_loop(model, images, args, out: Path) -> float:
    """One image at a time, as in the CAM demo: hook the features, one forward, numpy CAM, cv2 overlay."""
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
            features_blob.clear()
            probs = net(transform(rgb).unsqueeze(0)).softmax(1)[0].numpy()  # the one forward
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

    hp = model.hparams
    net = model.net.eval()
    loader = DataLoader(
        ExplainDataset(images["path"].tolist(), build_transform(hp.image_size, hp.mean, hp.std, train=False), 1024),
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        collate_fn=collate_explain,
    )
    names = list(hp.class_names)
    start = time.perf_counter()
    with GradCAM(model=net, target_layers=[net.get_submodule(arch_spec(hp.arch).feature_layer)]) as cam:
        for batch in loader:
            maps = cam(input_tensor=batch.images, targets=None)  # targets=None: the predicted class
            probs = cam.outputs.detach().softmax(1)  # the forward GradCAM ran itself: no second one
            pred = probs.argmax(1)
            for row, original in enumerate(batch.originals):
                rgb = original.numpy()
                heat = cv2.resize(maps[row], (rgb.shape[1], rgb.shape[0]))
                picture = draw_label(
                    heatmap_overlay(rgb, heat, 0.5), label_text(names[pred[row]], float(probs[row, pred[row]]), None)
                )
                save_image(out / f"{batch.indices[row]}.jpg", picture)
    return len(images) / (time.perf_counter() - start)


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its finished children (workers, subprocesses)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def build_models(args) -> tuple[ClassifierModule, ClassifierModule, dict]:
    """The seeded network (same weights in every process), its BatchNorm-folded copy, the precision used."""
    images = list_images(Path(args.images), args.limit)
    class_names = sorted(images["label"].unique().tolist())
    torch.manual_seed(0)
    model = ClassifierModule(arch=args.arch, class_names=class_names, weights=None, image_size=args.image_size).eval()
    folded = copy.deepcopy(model)  # what scripts/explain.py runs in fp32 (fold_batchnorm=true)
    fold_batchnorm(folded.net.eval())
    return model, folded, resolve_precision(args.precision, "cpu")[1]


def measure(key: str, args) -> dict[str, float]:
    """One method, timed in this (fresh) process."""
    images = list_images(Path(args.images), args.limit)
    model, folded, used = build_models(args)
    precision = used["used"]
    engine = folded if precision == "32" else model  # explain does not fold under bf16
    out = Path(args.child_out)
    out.mkdir(parents=True)
    if key == "a32":
        return {"a32": plain_inference(model, images, args, "32")}
    if key == "a":
        return {"a": plain_inference(model, images, args, precision)}
    if key == "af":
        return {"af": plain_inference(folded, images, args, precision)}
    if key == "ae":
        with reuse_freed_memory():
            return {"ae": plain_inference(engine, images, args, precision)}
    if key == "b":
        loop, total = catdog_explain(engine, images, args, out)
        return {"b": loop, "b+": total}
    if key == "c":
        return {"c": tutorial_loop(model, images, args, out)}
    if key == "d":
        return {"d": gradcam_batched(model, images, args, out)}
    raise SystemExit(f"unknown method {key}: use a32, a, af, ae, b, w, c or d")


def in_fresh_process(key: str, args, out: Path) -> tuple[dict[str, float], float]:
    """Run ``measure(key)`` in a new process; its result and its CPU time (with its workers) per image."""
    command = [sys.executable, __file__, "--child", key, "--child-out", str(out)]
    for name in ("images", "limit", "arch", "image_size", "batch_size", "num_workers", "precision"):
        value = getattr(args, name)
        if value is not None:
            command += [f"--{name.replace('_', '-')}", str(value)]
    cpu_start = cpu_seconds()
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"method {key} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result, cpu_seconds() - cpu_start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", required=True, help="an image folder (e.g. ../shared/data/catdog)")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--precision", choices=["32", "bf16", "auto"], default="32")
    parser.add_argument("--methods", default="a,ae,b,w", help="comma-separated: a32,a,af,ae,b,w,c,d")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: measure one method in this process
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args)))
        return

    images = list_images(Path(args.images), args.limit)
    model, _, used = build_models(args)
    methods = args.methods.split(",")
    speeds: dict[str, list[float]] = {}
    cpu_ms: dict[str, list[float]] = {}
    for path in images["path"]:  # into the page cache, so the first method reads no more disk than the last
        Path(path).read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp, "run", "checkpoints", "best.ckpt")
        ckpt.parent.mkdir(parents=True)
        torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, ckpt)
        for round_ in range(args.rounds):
            for key in methods:
                out = Path(tmp, f"{key}_{round_}")
                if key == "w":
                    cpu_start = cpu_seconds()
                    result, cpu = {"w": whole_process(images, args, ckpt, out)}, cpu_seconds() - cpu_start
                else:
                    result, cpu = in_fresh_process(key, args, out)
                # CPU time per image: the work a method does, whatever share of the shared CPU it got.
                cpu_ms[key] = cpu_ms.get(key, []) + [1000 * cpu / len(images)]
                for name, value in result.items():
                    speeds.setdefault(name, []).append(value)
                    cpu = cpu_ms[key][-1]
                    print(f"round {round_ + 1} ({name}) {value:.1f} img/s, {cpu:.1f} CPU ms/img", flush=True)
    print(
        f"\n{len(images)} images from {args.images}, {args.arch} {args.image_size}px, batch {args.batch_size}, "
        f"{args.num_workers} workers, {torch.get_num_threads()} threads, precision {args.precision} "
        f"(used: {used['used']}; {used['reason']}), {os.cpu_count()} CPUs"
    )
    print("| | img/s, rounds | median | CPU ms per image (process + workers), rounds |\n| --- | --- | --- | --- |")
    median = {name: statistics.median(values) for name, values in speeds.items()}
    for name, values in speeds.items():
        cpu = cpu_ms.get(name, cpu_ms.get(name.rstrip("+"), []))
        print(
            f"| ({name}) | {' / '.join(f'{v:.1f}' for v in values)} | {median[name]:.1f} | "
            f"{' / '.join(f'{v:.1f}' for v in cpu)} |"
        )
    cpu_median = {name: statistics.median(values) for name, values in cpu_ms.items()}
    if "a" in cpu_median:
        for name in ("af", "ae", "b", "w", "c", "d"):
            if name in cpu_median:
                print(f"CPU time per image (a)/({name}) = {cpu_median['a'] / cpu_median[name]:.2f}")
    base = median.get("a")
    if base:
        for name in ("af", "ae", "b", "b+", "w", "c", "d"):
            if name in median:
                print(f"({name})/(a) = {median[name] / base:.2f}")
    for engine, what in (("af", "BatchNorm folded too"), ("ae", "explain's engine settings too")):
        if engine in median:
            for name in ("b", "b+", "w"):
                if name in median:
                    print(f"({name})/({engine}) = {median[name] / median[engine]:.2f} (against inference with {what})")
    if "a32" in median:
        for name in ("a", "b", "w"):
            if name in median:
                print(f"({name})/(a32) = {median[name] / median['a32']:.2f}")


if __name__ == "__main__":
    main()

"""Triage on real photos with planted label errors, its cost against plain inference, and the loop closed.

Stages (each result is appended to <out>/results.json; RESULTS.md quotes them):

clean    train the offline recipe on the photos as they are, triage the run: the top suspected label
         errors of the real photos (the coordinator looks at them)
photos   the real photos' own label errors (run after noisy): the noisy triage's embeddings (its frozen,
         pretrained backbone embeds a photo the same whatever folder it sits in) with each photo's true
         folder as its label, through triage's own functions; no second pass (clean, which trains a run of
         its own on the photos as they are, is the slower alternative)
noisy    a seeded scratch copy (symlinks, the photos are never touched) with 5% of each class in the other
         class's folder; train the same recipe on it, triage: precision / recall / F1 of the flagged set
         against the planted errors (real label errors of the photos count as false positives here)
timing   on the noisy run, each in a fresh process: (a) one plain batched inference pass over every image
         (Lightning predict, same batch size, workers, precision and BatchNorm folding as triage's feature
         pass: forward + softmax, nothing else) and (t) the whole triage() call (the noisy stage's triage:
         feature pass, heads, cleanlab, duplicates, outliers, slices, pictures, tables, report); wall time
         and peak RSS
loop_full the loop with the backbone fine-tuned too (can fit wrong labels), on the same relabelled.csv
memory   peak memory against the number of images: the noisy run's triage of a folder of the first N photos of
         each class (N x 2 images, --sizes), context reliance on every image, each in a fresh process
loop     train the same recipe on the noisy run's relabelled.csv; test accuracy of the noisy and the
         relabelled model on the same held-out test images, judged by their true labels

    nice -n 10 python bench/triage_noise.py --photos /work/shared/data/catdog \
        --weights /work/shared/weights/mobilenet_v2_imagenet1001.pth --out /tmp/triage/bench \
        --stages noisy,photos,timing,loop
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = "experiment=mobilenet_local_weights"


def noisy_copy(photos: Path, target: Path, fraction: float, seed: int) -> pd.DataFrame:
    """Symlink every photo into ``target/<class>/``; ``fraction`` of each class into the other class's folder."""
    rng = np.random.default_rng(seed)
    classes = sorted(p.name for p in photos.iterdir() if p.is_dir())
    rows = []
    for k, name in enumerate(classes):
        files = sorted((photos / name).iterdir())
        wrong = set(rng.choice(len(files), round(fraction * len(files)), replace=False).tolist())
        for i, file in enumerate(files):
            given = classes[(k + 1) % len(classes)] if i in wrong else name
            link = target / given / file.name
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to(file.resolve())
            rows.append({"path": str(link), "true": name, "given": given, "planted": i in wrong})
    return pd.DataFrame(rows)


def run(args: list[str], log: Path) -> float:
    """Run a catdog script in a fresh process (PYTHONPATH = this checkout), its output to ``log``; seconds."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    start = time.perf_counter()
    with open(log, "w") as handle:
        subprocess.run([sys.executable, *args], check=True, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    return time.perf_counter() - start


def train(out: Path, name: str, weights: str, data: list[str], partial: bool = False) -> Path:
    """Train the recipe into ``out/runs/<name>`` unless done; ``partial``: a run stopped early will do
    (its best.ckpt: the frozen backbone's embeddings, all the label audit uses, are the same)."""
    run_dir = out / "runs" / name
    done = run_dir / ("checkpoints/best.ckpt" if partial else "test_metrics.json")
    if not done.is_file():
        seconds = run(
            [
                "scripts/train.py",
                EXPERIMENT,
                f"model.weights={weights}",
                f"paths.output_dir={run_dir}",
                "~callbacks.rich_progress_bar",
                *data,
            ],
            out / f"train_{name}.log",
        )
        record(out, f"train_{name}", {"seconds": round(seconds, 1)})
    return run_dir


def triage_run(out: Path, run_dir: Path, name: str) -> Path:
    folder = out / "triage" / name
    if not (folder / "summary.json").is_file():
        seconds = run(["scripts/triage.py", f"ckpt={run_dir}", f"out_dir={folder}"], out / f"triage_{name}.log")
        record(out, f"triage_{name}", {"seconds_process": round(seconds, 1)})
    return folder


def record(out: Path, key: str, value: object) -> None:
    file = out / "results.json"
    results = json.loads(file.read_text()) if file.is_file() else {}
    results[key] = value
    file.write_text(json.dumps(results, indent=2, default=str))
    print(key, json.dumps(value, default=str), flush=True)


def stage_clean(args: argparse.Namespace) -> None:
    run_dir = train(args.out, "clean", args.weights, ["data=folder", f"data.root={args.photos}"])
    folder = triage_run(args.out, run_dir, "clean")
    issues = pd.read_csv(folder / "label_issues.csv")
    summary = json.loads((folder / "summary.json").read_text())
    record(
        args.out,
        "clean",
        {
            "flagged": len(issues),
            "top10": issues.head(10)[["key", "split", "given", "suggested", "label_quality"]].to_dict("records"),
            "duplicates": summary["duplicates"],
            "outliers": summary["outliers"],
            "slices": summary["slices"],
            "test_accuracy": summary["test_accuracy"],
            "features_seconds": summary["features"]["seconds"],
        },
    )


def stage_photos(args: argparse.Namespace) -> None:
    """The real photos' own label errors: the noisy triage's embeddings (the frozen, pretrained backbone:
    the same for the photos as they are) with every photo's true folder as its label, through the same
    functions triage runs (K-fold heads, cleanlab). No second pass over the images."""
    sys.path.insert(0, str(ROOT / "src"))
    from catdog.triage.folds import row_probabilities
    from catdog.triage.label_issues import label_issue_table
    from catdog.triage.settings import parse_settings

    folder = args.out / "triage" / "noisy"
    table = pd.read_csv(folder / "images.csv", keep_default_na=False)
    embeddings = np.load(folder / "embeddings.npy")
    true = dict(zip(*pd.read_csv(args.out / "planted.csv")[["path", "true"]].T.values))
    table["label"] = table["path"].map(true)
    table["key"] = [f"{label}/{Path(path).name}" for path, label in zip(table["path"], table["label"])]
    summary = json.loads((folder / "summary.json").read_text())
    classes = summary["class_names"]
    given = np.array([classes.index(label) for label in table["label"]])
    settings = parse_settings(_config(args.out / "runs" / "noisy", folder))
    probs, sources, _ = row_probabilities(
        embeddings, given, len(classes), None, np.zeros(len(given), bool), settings, "checkpoint"
    )
    table["prob_source"] = sources
    issues = label_issue_table(table, probs, classes, settings.filter_by)
    issues.to_csv(args.out / "photos_label_issues.csv", index=False)
    record(
        args.out,
        "photos",
        {
            "flagged": len(issues),
            "photos": str(args.photos),
            "top10": issues.head(10)[["key", "given", "suggested", "label_quality"]].to_dict("records"),
        },
    )


def _config(run_dir: Path, folder: Path, overrides: list[str] | None = None):
    """conf/triage.yaml for the run: items 1-5 of issue 17 (context reliance, extra passes, off unless
    ``overrides`` say otherwise)."""
    from hydra import compose, initialize_config_dir

    from catdog import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("triage", [f"ckpt={run_dir}", f"out_dir={folder}", "triage.context=false", *(overrides or [])])


def stage_noisy(args: argparse.Namespace) -> None:
    target = args.out / "noisy_photos"
    if (args.out / "planted.csv").is_file():  # made by an earlier (interrupted) run of this stage
        planted = pd.read_csv(args.out / "planted.csv")
    else:
        planted = noisy_copy(args.photos, target, args.fraction, args.seed)
        planted.to_csv(args.out / "planted.csv", index=False)
    train(args.out, "noisy", args.weights, ["data=folder", f"data.root={target}"], partial=args.partial)
    folder = args.out / "triage" / "noisy"
    if not (folder / "summary.json").is_file():  # (t): the whole triage() call, timed in a fresh process
        record(args.out, "timing_triage", timed("triage", args))
    flagged = set(pd.read_csv(folder / "label_issues.csv")["path"])
    truth = set(planted.loc[planted["planted"], "path"])
    hits = len(flagged & truth)
    precision, recall = hits / max(1, len(flagged)), hits / max(1, len(truth))
    clean_flagged = set()
    clean_issues = args.out / "photos_label_issues.csv"
    if clean_issues.is_file():  # real errors of the photos, as found on the clean copy, by file name
        clean_flagged = {Path(p).name for p in pd.read_csv(clean_issues)["path"]}
    others = [p for p in flagged - truth]
    record(
        args.out,
        "noisy",
        {
            "planted": len(truth),
            "flagged": len(flagged),
            "hits": hits,
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "f1": round(2 * precision * recall / max(1e-12, precision + recall), 4),
            "false_positives_also_flagged_on_clean_photos": sum(Path(p).name in clean_flagged for p in others),
        },
    )


def plain_pass(run_dir: Path, batch_size: int, num_workers: int) -> int:
    """(a) One plain batched inference pass over every image of the run: decode + transform in DataLoader
    workers, forward, softmax; on Lightning predict with triage's engine settings (precision auto,
    BatchNorm folded in fp32, malloc tuned). Returns the number of images."""
    import pytorch_lightning as pl
    import torch
    from torch.utils.data import DataLoader, Dataset

    from catdog.allocator import reuse_freed_memory
    from catdog.data import build_transform, load_rgb
    from catdog.explain.engine import resolve_precision
    from catdog.models import fold_batchnorm, load_classifier
    from catdog.runs import resolve_checkpoint

    model = load_classifier(resolve_checkpoint(run_dir))
    hp = model.hparams
    paths = pd.read_csv(run_dir / "split.csv")["path"].tolist()
    transform = build_transform(hp.image_size, hp.mean, hp.std, train=False)
    precision, record_ = resolve_precision("auto", "cpu")
    if record_["used"] == "32":
        fold_batchnorm(model.net.eval())

    class Images(Dataset):
        def __len__(self) -> int:
            return len(paths)

        def __getitem__(self, i: int):
            return transform(load_rgb(paths[i]))

    class Plain(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = model.net

        def predict_dataloader(self) -> DataLoader:
            return DataLoader(Images(), batch_size=batch_size, num_workers=num_workers)

        def predict_step(self, batch, batch_idx):
            with torch.inference_mode():
                return self.net(batch.contiguous(memory_format=torch.channels_last)).float().softmax(dim=1).numpy()

    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        precision=precision,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    with reuse_freed_memory(True):
        trainer.predict(Plain(), return_predictions=False)
    return len(paths)


def measure(args: argparse.Namespace) -> None:
    """One measurement in this (fresh) process: ``plain`` or ``triage``; prints JSON."""
    sys.path.insert(0, str(ROOT / "src"))
    from catdog.triage.pipeline import triage

    run_dir = args.out / "runs" / "noisy"
    start = time.perf_counter()
    if args.measure == "folder":
        folder = args.out / "memory" / f"triage_{args.limit}"
        overrides = [f"data.root={photo_folder(args, args.limit)}", "triage.context=true", "context.split=all"]
        cfg = _config(run_dir, folder, overrides)
        images = triage(cfg)["images"]
    elif args.measure == "plain":
        images = plain_pass(run_dir, args.batch_size, args.num_workers)
    else:
        folder = args.out / "triage" / "noisy"
        if folder.exists():  # a repeat measurement (stage retime)
            folder = args.out / "triage" / f"timed_{os.getpid()}"
        images = triage(_config(run_dir, folder))["images"]
    seconds = time.perf_counter() - start
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, 0) / 1024
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "images": images,
                "seconds": round(seconds, 2),
                "peak_rss_mb": round(peak),
                "worker_peak_rss_mb": round(workers),
            }
        )
    )


def photo_folder(args: argparse.Namespace, per_class: int) -> Path:
    """``<out>/memory/photos_<n>/<class>/``: symlinks to the first ``per_class`` photos of each class."""
    target = args.out / "memory" / f"photos_{per_class}"
    for klass in sorted(p for p in args.photos.iterdir() if p.is_dir()):
        (target / klass.name).mkdir(parents=True, exist_ok=True)
        for file in sorted(klass.iterdir())[:per_class]:
            link = target / klass.name / file.name
            if not link.exists():
                link.symlink_to(file.resolve())
    return target


def stage_memory(args: argparse.Namespace) -> None:
    """Peak RSS of a folder's triage (context reliance on every image) at each size, fresh processes."""
    rows = [{"per_class": n, **timed("folder", args, ["--limit", str(n)])} for n in args.sizes]
    for row in rows:
        print(row, flush=True)
    record(args.out, "memory", rows)


def timed(method: str, args: argparse.Namespace, extra: list[str] | None = None) -> dict:
    """One measurement (``plain``, ``triage`` or ``folder``) in a fresh process."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--measure",
            method,
            "--out",
            str(args.out),
            "--photos",
            str(args.photos),
            *(extra or []),
        ],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    (args.out / f"measure_{method}{''.join(extra or [])}.log").write_text(out.stdout + out.stderr)
    if out.returncode:
        raise SystemExit(f"--measure {method} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def stage_timing(args: argparse.Namespace) -> None:
    """(a) the plain pass, in a fresh process, against (t) measured by the noisy stage."""
    results = json.loads((args.out / "results.json").read_text())
    plain = timed("plain", args)
    triage_ = results["timing_triage"]
    record(
        args.out,
        "timing",
        {"plain": plain, "triage": triage_, "ratio_triage_over_plain": round(triage_["seconds"] / plain["seconds"], 3)},
    )


def stage_retime(args: argparse.Namespace) -> None:
    """Both measurements again, alternating (plain first), each in a fresh process: the load of a shared
    machine changes between two measurements minutes apart."""
    rows = []
    for method in ("plain", "triage", "plain", "triage")[: 2 * args.rounds]:
        rows.append({"method": method, **timed(method, args)})
        print(rows[-1], flush=True)
    frame = pd.DataFrame(rows)
    median = frame.groupby("method")["seconds"].median()
    record(args.out, "retime", {"rows": rows, "ratio_triage_over_plain": round(median["triage"] / median["plain"], 3)})


def clean_test_accuracy(run_dir: Path, test: pd.DataFrame) -> float:
    """Accuracy of a run's best checkpoint on ``test`` (path, true) at its evaluation size."""
    import torch

    from catdog.data import build_transform, load_rgb
    from catdog.models import load_classifier
    from catdog.runs import resolve_checkpoint

    model = load_classifier(resolve_checkpoint(run_dir))
    hp = model.hparams
    transform = build_transform(hp.image_size, hp.mean, hp.std, train=False)
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(test), 32):
            chunk = test.iloc[start : start + 32]
            x = torch.stack([transform(load_rgb(p)) for p in chunk["path"]])
            pred = model(x).argmax(dim=1).tolist()
            correct += sum(hp.class_names[p] == t for p, t in zip(pred, chunk["true"]))
    return correct / len(test)


FULL_FINETUNE = ["model.freeze_backbone=false", "model.freeze_epochs=1", "model.backbone_lr=2.0e-4"]


def stage_loop(args: argparse.Namespace) -> None:
    manifest = args.out / "triage" / "noisy" / "relabelled.csv"
    run_dir = train(args.out, "relabelled", args.weights, ["data=csv", f"data.manifest={manifest}"])
    record(args.out, "loop", loop_accuracies(args.out, args.out / "runs" / "noisy", run_dir))


def stage_loop_full(args: argparse.Namespace) -> None:
    """The loop with the backbone fine-tuned too (1 probe epoch, then everything at a 10x lower backbone
    LR), which can fit wrong labels; the same relabelled.csv (triage's embeddings come from the
    pretrained backbone either way)."""
    manifest = args.out / "triage" / "noisy" / "relabelled.csv"
    noisy = train(
        args.out, "noisy_full", args.weights, ["data=folder", f"data.root={args.out / 'noisy_photos'}", *FULL_FINETUNE]
    )
    relabelled = train(
        args.out, "relabelled_full", args.weights, ["data=csv", f"data.manifest={manifest}", *FULL_FINETUNE]
    )
    record(args.out, "loop_full", loop_accuracies(args.out, noisy, relabelled))


def loop_accuracies(out: Path, noisy: Path, relabelled: Path) -> dict:
    """Accuracy of both runs on the noisy run's held-out test images, judged by their true labels."""
    sys.path.insert(0, str(ROOT / "src"))
    planted = pd.read_csv(out / "planted.csv")
    split = pd.read_csv(noisy / "split.csv")
    test = split[split["split"] == "test"].merge(planted[["path", "true"]], on="path")
    other = pd.read_csv(relabelled / "split.csv")
    assert set(other.loc[other["split"] == "test", "path"]) == set(test["path"]), "the two runs' test splits differ"
    return {
        "test_images": len(test),
        "planted_in_test": int((test["true"] != test["label"]).sum()),
        "noisy_model": round(clean_test_accuracy(noisy, test), 4),
        "relabelled_model": round(clean_test_accuracy(relabelled, test), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=Path("/work/shared/data/catdog"))
    parser.add_argument("--weights", default="/work/shared/weights/mobilenet_v2_imagenet1001.pth")
    parser.add_argument("--out", type=Path, default=Path("/tmp/triage/bench"))
    parser.add_argument("--fraction", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--stages", default="noisy,photos,timing,loop")
    parser.add_argument("--rounds", type=int, default=1, help="retime: plain/triage pairs")
    parser.add_argument("--partial", action="store_true", help="triage a noisy run stopped early (its best.ckpt)")
    parser.add_argument("--measure", choices=("plain", "triage", "folder"), default=None)
    parser.add_argument("--limit", type=int, default=250, help="folder: photos per class")
    parser.add_argument(
        "--sizes",
        type=lambda s: [int(n) for n in s.split(",")],
        default=[250, 1000],
        help="memory: photos per class of each measurement",
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.measure:
        measure(args)
        return
    stages = {
        "clean": stage_clean,
        "noisy": stage_noisy,
        "photos": stage_photos,
        "timing": stage_timing,
        "retime": stage_retime,
        "loop": stage_loop,
        "loop_full": stage_loop_full,
        "memory": stage_memory,
    }
    for name in args.stages.split(","):
        stages[name](args)


if __name__ == "__main__":
    main()

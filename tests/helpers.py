"""Shared test helpers: Hydra configs composed from catdog.CONFIG_DIR, tiny synthetic image folders, checkpoints made
without training, hand-made run and explain folders, and a child process that kills itself mid-pipeline."""

from __future__ import annotations

import copy
import functools
import io
import json
import logging
import math
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import DictConfig, OmegaConf

from catdog import CONFIG_DIR
from catdog.models import ClassifierModule
from catdog.overlay import draw_label, label_text, safe_name, save_image

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = CONFIG_DIR


def make_config(name: str, overrides: Sequence[str]) -> DictConfig:
    """Compose conf/<name>.yaml with overrides, as the scripts would (without running Hydra's job).

    A Hydra composition costs ~0.1 s (it re-reads every YAML file) and the tests compose ~300 times, mostly the same
    groups with different values (tmp paths). So the config groups are composed once per set of group overrides and
    the value overrides applied to a copy by Hydra's own code, in the order given, as compose() applies them after
    composing (test_configs.py checks the two agree).
    """
    apply = getattr(ConfigLoaderImpl, "_apply_overrides_to_config", None)  # private: a newer Hydra may lack it
    if apply is None:
        return compose_config(name, overrides)
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    values = [override for override in parsed if _is_value_override(override)]
    groups = tuple(override.input_line for override in parsed if not _is_value_override(override))
    cfg = copy.deepcopy(_composed(name, groups))
    apply(values, cfg)
    return cfg


def compose_config(name: str, overrides: Sequence[str]) -> DictConfig:
    """Hydra's compose of conf/<name>.yaml with overrides: what make_config reproduces faster."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


@functools.lru_cache(maxsize=64)
def _composed(name: str, group_overrides: tuple[str, ...]) -> DictConfig:
    return compose_config(name, group_overrides)


def _is_value_override(override: Override) -> bool:
    """Hydra's split (hydra._internal.defaults_list.Overrides): an override whose key names no config group sets a
    value. Sweeps, packages, dicts and Hydra's own keys stay with compose() (always right, only not cached)."""
    key = override.key_or_group
    group = "/" in key or key.startswith("hydra") or (CONF_DIR / key).is_dir()
    special = override.is_sweep_override() or override.package is not None or isinstance(override.value(), dict)
    return not (group or special)


def tiny_train_cfg(tmp_path: Path, *overrides: str, demo: bool = True):
    """conf/train.yaml for one CPU epoch at 32 px into tmp_path/run; demo: 12 demo images per class in tmp_path/demo."""
    demo_overrides = [f"data.root={tmp_path / 'demo'}", "data.num_per_class=12"] if demo else []
    return make_config(
        "train",
        [
            f"paths.output_dir={tmp_path / 'run'}",
            *demo_overrides,
            "data.image_size=32",
            "data.batch_size=8",
            "data.num_workers=0",
            "trainer.max_epochs=1",
            "trainer.accelerator=cpu",
            "~callbacks.rich_progress_bar",
            *overrides,
        ],
    )


# For tests about what surrounds training (run folders, splits, titles, resuming), not about the weights: the
# backbone frozen, each step updates the head alone (Adam over 11 M parameters dominates a tiny CPU step).
HEAD_ONLY = "model.freeze_backbone=true"


def compare_config(tmp_path: Path, **values: object) -> DictConfig:
    """compare.yaml composed (no Hydra keys), writing into tmp_path/compare_out, with dotted ``values`` set."""
    cfg = make_config("compare", [f"out_dir={tmp_path / 'compare_out'}"])
    OmegaConf.set_struct(cfg, False)
    for key, value in values.items():
        OmegaConf.update(cfg, key, value)
    return cfg


def write_images(root: Path, counts: dict[str, int], size: tuple[int, int] = (80, 60), seed: int = 0) -> list[Path]:
    """Write small random PNGs as root/<class>/<class>_<i>.png."""
    import cv2

    rng = np.random.default_rng(seed)
    paths = []
    for name, count in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            path = root / name / f"{name}_{i}.png"
            cv2.imwrite(str(path), rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
            paths.append(path)
    return paths


def save_checkpoint(
    path: Path,
    classes: list[str],
    favourite: int | None = 0,
    seed: int = 0,
    head_scale: float = 1.0,
    arch: str = "resnet18",
    image_size: int = 32,
) -> Path:
    """An untrained checkpoint: constant prediction ``favourite`` (zero head, one-hot bias); None: a random head."""
    checkpoint, rng_after = _untrained_checkpoint(tuple(classes), favourite, seed, head_scale, arch, image_size)
    torch.set_rng_state(rng_after)  # as if the network had just been built here from torch.manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(checkpoint)
    return path


@functools.lru_cache(maxsize=4)
def _untrained_checkpoint(
    classes: tuple[str, ...], favourite: int | None, seed: int, head_scale: float, arch: str, image_size: int
) -> tuple[bytes, torch.Tensor]:
    """save_checkpoint's file and the global RNG state after building it, built and serialised once per argument
    set (initialising a ResNet's 11 M weights costs ~0.1 s; many tests ask for the same untrained model)."""
    torch.manual_seed(seed)
    module = ClassifierModule(arch=arch, class_names=list(classes), weights=None, image_size=image_size)
    with torch.no_grad():
        module.net.get_submodule(module.hparams.fc_layer).weight.mul_(head_scale)
    if favourite is not None:
        fc = module.net.get_submodule(module.hparams.fc_layer)
        with torch.no_grad():
            fc.weight.zero_()
            fc.bias.copy_(torch.nn.functional.one_hot(torch.tensor(favourite), len(classes)).float() * 2.0)
    checkpoint = io.BytesIO()
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, checkpoint)
    return checkpoint.getvalue(), torch.get_rng_state()


def make_trained_run(run: Path, images: Path, classes: list[str], favourite: int | None = 0) -> Path:
    """A run folder with a checkpoint and a split.csv putting every image of ``images/<class>/`` in test."""
    save_checkpoint(run / "checkpoints" / "best.ckpt", classes, favourite)
    rows = [(str(p.resolve()), p.parent.name, "test") for p in sorted(images.rglob("*.png"))]
    pd.DataFrame(rows, columns=["path", "label", "split"]).to_csv(run / "split.csv", index=False)
    return run


def explain_cfg(ckpt: Path, *overrides: str, batch_size: int = 4, precision: str = "32") -> DictConfig:
    """conf/explain.yaml for ``ckpt`` in this process (no decoding workers).

    precision=32 by default: "auto" picks bf16 on CPUs with AVX512-BF16, and the tests' self-check bounds are float32's.
    """
    overrides = (
        f"ckpt={ckpt}",
        "data.num_workers=0",
        f"data.batch_size={batch_size}",
        f"precision={precision}",
        *overrides,
    )
    return make_config("explain", list(overrides))


def users_photos_and_run(tmp_path: Path) -> tuple[Path, Path]:
    """tmp_path/photos (2 cats, 2 dogs and the user's NOTES.txt) and a run folder made on them (no training):
    the inputs an overwrite=true must never delete."""
    photos = tmp_path / "photos"
    write_images(photos, {"cat": 2, "dog": 2}, size=(32, 32))
    (photos / "NOTES.txt").write_text("mine")
    return photos, make_trained_run(tmp_path / "run", photos, ["cat", "dog"])


def file_bytes(folder: Path) -> dict[Path, bytes]:
    """Every file below ``folder`` with its bytes: compare before and after to show nothing was changed."""
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message
    return message



class ChannelNet(torch.nn.Module):
    """Toy CAM model: features = the RGB channels average-pooled to cells of ``cell`` px; class c reads
    channel c with weight ``gains[c]`` and no bias, so exact CAM applies and each map is known."""

    def __init__(self, cell: int = 8, gains: Sequence[float] = (4.0, 4.0, 4.0)) -> None:
        super().__init__()
        self.features = torch.nn.AvgPool2d(cell)
        self.fc = torch.nn.Linear(3, 3)
        with torch.no_grad():
            self.fc.weight.copy_(torch.diag(torch.tensor([float(g) for g in gains])))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(-2, -1)))


# --- hand-made run and explain folders (no model) ---
CLASSES = ["cat", "dog"]
HOSTILE = "<img src=x onerror=alert(1)>.jpg"


def make_images(root: Path, names: Sequence[tuple[str, str]]) -> list[str]:
    """Tiny photos root/<class>/<name>; returns their absolute paths."""
    paths = []
    for i, (label, name) in enumerate(names):
        image = np.full((24, 32, 3), 40 * i % 255, dtype=np.uint8)
        paths.append(str(save_image(root / label / name, image).resolve()))
    return paths


def make_run(
    base: Path,
    name: str,
    paths: Sequence[str],
    preds: Sequence[str],
    probs: Sequence[float],
    cams: np.ndarray,
    *,
    overrides: Sequence[str] = (),
    config: dict | None = None,
    class_names: Sequence[str] = CLASSES,
    in_box: Sequence[bool] | None = None,
    stamp: str = "2026-01-01_00-00-00",
    run_files: bool = True,
    layers: bool = False,
) -> Path:
    """A run folder with .hydra/, split.csv, curves.png, a stub checkpoint and one explain folder.

    Args:
        paths: image paths; their true class is their parent folder's name.
        preds: predicted class per image; probs: its probability (the other classes share the rest).
        cams: raw predicted-class maps [N, h, w].
        run_files: write the run folder's own files (False: only add another explain folder).
        layers: also the report's text-free layers, as explain writes them: the photo in thumbs/<overlay> and a
            pure heatmap colour in thumbs/heat/<overlay>, both the photo's size.

    Returns:
        The explain folder.
    """
    run = base / name
    if run_files:
        _write_run_files(run, paths, overrides, config, class_names)
    out = run / "explain" / stamp
    rows = []
    for i, (path, pred, prob) in enumerate(zip(paths, preds, probs)):
        true = Path(path).parent.name
        folder = f"correct/{pred}" if true == pred else f"incorrect/{true}_as_{pred}"
        overlay = f"{folder}/{min(999, round((1 - prob) * 1000)):04d}_{safe_name(Path(path).stem)}.jpg"
        picture = np.zeros((48, 64, 3), dtype=np.uint8)
        picture[:, : 8 * (i + 1) % 64] = (200, 30, 30)
        save_image(out / overlay, draw_label(picture, label_text(pred, prob, true)))
        if layers:
            save_image(out / "thumbs" / overlay, picture)
            save_image(out / "thumbs" / "heat" / overlay, np.full_like(picture, (255, 0, 0)))
        p = {c: (prob if c == pred else (1 - prob) / (len(class_names) - 1)) for c in class_names}
        row = {
            "path": path,
            "true": true,
            "pred": pred,
            **{f"p_{c}": p[c] for c in class_names},
            "loss": -math.log(p[true]),
            "correct": true == pred,
            "peak_x": 0,
            "peak_y": 0,
            "area50": 0.5,
            "overlay": overlay,
        }
        if in_box is not None:
            row["in_box"] = in_box[i]
        rows.append(row)
    pd.DataFrame(rows).to_csv(out / "predictions.csv", index=False)
    pd.DataFrame(columns=["path", "reason"]).to_csv(out / "skipped.csv", index=False)
    index = {c: i for i, c in enumerate(class_names)}
    class_idx = np.array([[index[p], index[Path(t).parent.name]] for p, t in zip(preds, paths)])
    both = np.stack([cams, cams], axis=1).astype(np.float16)
    np.savez_compressed(
        out / "cams.npz", cams=both, class_idx=class_idx, paths=np.array(paths), class_names=np.array(class_names)
    )
    summary = {
        "images": len(rows),
        "accuracy": sum(r["correct"] for r in rows) / len(rows),
        "class_names": list(class_names),
        "arch": "resnet18",
        "source": f"{run.resolve()}/split.csv [test]",
        "pointing_game": None,
        "checkpoint": {"path": str((run / "checkpoints" / "best.ckpt").resolve()), "sha256": "ab" * 32},
        "train_config": {"path": str((run / ".hydra" / "config.yaml").resolve()), "sha256": "cd" * 32},
    }
    (out / "summary.json").write_text(json.dumps(summary))
    return out


def _write_run_files(
    run: Path, paths: Sequence[str], overrides: Sequence[str], config: dict | None, class_names: Sequence[str]
) -> None:
    """.hydra/, split.csv (every image in test), curves.png and a stub checkpoint holding the class names."""
    hydra = run / ".hydra"
    hydra.mkdir(parents=True, exist_ok=True)
    config = config or {"model": {"arch": "resnet18"}, "optimizer": {"lr": 0.001}}
    OmegaConf.save(OmegaConf.create(config), hydra / "config.yaml")
    OmegaConf.save(OmegaConf.create(list(overrides)), hydra / "overrides.yaml")
    choices = {"hydra": {"runtime": {"choices": {"model": "resnet18", "hydra/launcher": "basic"}}}}
    OmegaConf.save(OmegaConf.create(choices), hydra / "hydra.yaml")
    labels = [Path(p).parent.name for p in paths]
    pd.DataFrame({"path": paths, "label": labels, "split": "test"}).to_csv(run / "split.csv", index=False)
    save_image(run / "curves.png", np.full((40, 60, 3), 200, dtype=np.uint8))
    (run / "checkpoints").mkdir(exist_ok=True)
    stub = {"hyper_parameters": {"class_names": list(class_names)}, "state_dict": {}}
    torch.save(stub, run / "checkpoints" / "best.ckpt")


# --- the scripts' command in this process ---
def run_command_here(monkeypatch: pytest.MonkeyPatch, cwd: Path, name: str, *args: str) -> int:
    """``python scripts/<name>.py args...`` run in ``cwd`` as the script runs it (``catdog.cli.run_command``:
    the did-you-mean check, Hydra, the one-line errors), but in this process: a child spends seconds importing
    torch. Returns the exit status. The working directory, argv and environment are restored after the test, and
    the logging Hydra set up for the job is undone at once (it replaces the root logger's handlers)."""
    from catdog import cli

    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", [str(ROOT / "scripts" / f"{name}.py")])
    monkeypatch.setenv("CATDOG_COMMAND", name)  # run_command sets it: undone with the rest
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        cli.run_command(name, list(args))
    except SystemExit as stop:
        return 0 if stop.code is None else int(stop.code)
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
    return 0


# --- child processes ---
def script_env(**extra: str) -> dict[str, str]:
    """This process's environment for a child running catdog from this checkout, without the rank variables a
    launcher around pytest may have set (a DDP child would take them for its own)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), **extra)
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "SLURM_PROCID", "NODE_RANK"):
        env.pop(key, None)
    return env


def run_script(
    script: str, *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """``python scripts/<script>.py args...`` in ``cwd`` as a user would run it; the caller checks the result."""
    command = [sys.executable, str(ROOT / "scripts" / f"{script}.py"), *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, check=False, timeout=timeout)


def run_two_processes(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``scripts/<script>.py`` as two CPU processes (DDP) in float32, decoding in the main process."""
    ddp = ("data.num_workers=0", "precision=32", "accelerator=cpu", "devices=2", "strategy=ddp")
    return run_script(script, *args, *ddp, cwd=cwd, env=script_env())


# --- killing a pipeline mid-run ---
CHILD = """
import os, signal, sys
from hydra import compose, initialize_config_dir
import {module} as target
import {pipeline_module} as pipeline_module

calls = 0
real = getattr(target, {name!r})

def killing(*args, **kwargs):
    global calls
    calls += 1
    if calls == {kill_at}:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)

setattr(target, {name!r}, killing)
with initialize_config_dir(config_dir={conf!r}, version_base="1.3"):
    cfg = compose(config_name={config!r}, overrides={overrides!r})
pipeline_module.{pipeline}(cfg)
"""


def run_killed(
    module: str,
    name: str,
    kill_at: int,
    config: str,
    pipeline: str,
    overrides: list[str],
    pipeline_module: str | None = None,
) -> None:
    """Run a pipeline in a child process that SIGKILLs itself on the kill_at-th call of module.name.

    ``pipeline_module`` holds the pipeline function (default: ``module`` itself).
    """
    code = CHILD.format(
        module=module,
        name=name,
        kill_at=kill_at,
        conf=str(CONF_DIR),
        config=config,
        overrides=overrides,
        pipeline=pipeline,
        pipeline_module=pipeline_module or module,
    )
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]


# Class names that collide once made file names the naive way (issue 19 item 11): "a b" / "a_b", "$5" / "5".
HOSTILE_CLASSES = ["a b", "a_b", "$5", "5"]


def write_hostile_corpus(
    root: Path, classes: list[str] = HOSTILE_CLASSES, size: tuple[int, int] = (40, 32)
) -> list[Path]:
    """A labelled folder of hostile names: root/<class>/ holds ``cat.<k>.png`` (a dotted stem, unique
    across the corpus), ``x.png`` (the same name in every class) and, in the first class, ``X.png``
    (the same name but for case). Returns the image paths."""
    import cv2

    rng = np.random.default_rng(1)
    paths, k = [], 0
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        files = [f"cat.{k}.png", f"cat.{k + 1}.png", "x.png"] + (["X.png"] if c == 0 else [])
        k += 2
        for file in files:
            path = root / name / file
            cv2.imwrite(str(path), rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
            paths.append(path)
    return paths

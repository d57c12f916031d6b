"""Training pipeline: data index -> Lightning fit -> test on the best checkpoint -> run folder.

Run folder (``cfg.paths.output_dir``)::

    .hydra/config.yaml          resolved config (written by Hydra)
    split.csv                   path,label,split: exactly the images of each split
    skipped.csv                 path,reason: images left out and why
    checkpoints/best.ckpt       best value of the monitored validation metric (conf: monitor)
    checkpoints/last.ckpt       end of the last epoch, or the step where training was stopped
    lr_find.png                 the learning-rate finder's curve (lr_find.enabled=true)
    metrics.csv, tensorboard/   per-step and per-epoch metrics
    curves.png                  loss and accuracy per epoch
    test_metrics.json           accuracy, per-class precision/recall, confusion matrix (best checkpoint);
                                with test_tta=hflip also "tta": the same measured with flip averaging
    confusion_matrix.png

Resuming (``ckpt_path=.../last.ckpt``) continues exactly: the checkpoint's own split.csv is reused,
and the data order, augmentation and dropout are functions of (seed, epoch, image, step) only
(see catdog.data.datamodule), so on CPU a resumed run ends with the same weights as an
uninterrupted one. A run stopped by SIGTERM saves last.ckpt at the current step, exits non-zero
and prints the command that resumes it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shlex
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.exceptions import SIGTERMException

from catdog.console import progress, quiet_lightning
from catdog.data import (
    ImageDataModule,
    LoaderSettings,
    build_index,
    class_names_of,
    ensure_demo_dataset,
    scan_images,
)
from catdog.data.datamodule import FeatureDataModule
from catdog.data.index import MASK_FILES
from catdog.errors import CatdogError
from catdog.models import ClassifierModule, _torch_load
from catdog.plots import plot_confusion_matrix, plot_training_curves

log = logging.getLogger(__name__)


def prepare_data(data_cfg: dict[str, Any], run_dir: Path) -> tuple[pd.DataFrame, list[str]]:
    """Index the dataset, drop unreadable images, and write split.csv / skipped.csv to the run folder.

    Args:
        data_cfg: the resolved ``data`` config (layout, root, manifest, fractions, split_seed, ...).
        run_dir: the run folder.

    Returns:
        The index (columns path, label, split) of readable images, and the class names in index order.

    Raises:
        CatdogError: the data cannot be used (missing root, a class with no readable training image, ...).
    """
    layout = data_cfg["layout"]
    root = data_cfg["root"]
    if layout == "demo":
        ensure_demo_dataset(
            root,
            num_per_class=data_cfg["num_per_class"],
            image_size=data_cfg["image_size"],
            seed=data_cfg["generator_seed"],
        )
        layout = "folder"
    index = build_index(
        layout,
        root,
        manifest=data_cfg["manifest"],
        val_fraction=data_cfg["val_fraction"],
        test_fraction=data_cfg["test_fraction"],
        seed=data_cfg["split_seed"],
    )
    readable, skipped = scan_images(index["path"].tolist(), num_workers=max(1, data_cfg["num_workers"]))
    # <stem>_mask files are masks for explain, not training photos: listed with the unreadable files.
    mask_files = pd.DataFrame(index.attrs.get(MASK_FILES, []), columns=["path", "reason"])
    skipped = pd.concat([skipped, mask_files], ignore_index=True)
    skipped.to_csv(run_dir / "skipped.csv", index=False)
    if len(skipped):
        log.warning(
            "Skipped %d image(s) (unreadable, or object masks); listed with reasons in %s",
            len(skipped),
            run_dir / "skipped.csv",
        )
    # Class names come from all indexed images, before unreadable ones are dropped, so a class
    # whose files are all broken keeps its index and is reported below instead of vanishing.
    class_names = class_names_of(index)
    index = index[index["path"].isin(set(readable))].reset_index(drop=True)
    for split in ("train", "val"):
        present = set(index.loc[index["split"] == split, "label"])
        missing = [name for name in class_names if name not in present]
        if missing:
            raise CatdogError(
                f"The {split} split has no readable image of class(es) {missing}: "
                f"add images or check {run_dir / 'skipped.csv'}"
            )
    index.to_csv(run_dir / "split.csv", index=False)
    return index, class_names


class TrainingTerminated(CatdogError):
    """Training was stopped (SIGTERM) after saving a resumable checkpoint; says how to resume."""


class LastCheckpoint(pl.Callback):
    """Writes ``last.ckpt`` at the end of every training epoch, whatever the monitored metric did,
    and at the current step when training is interrupted (SIGTERM, Ctrl-C, an error).

    Each write goes to a temporary file renamed into place, so a kill during the write leaves
    the previous ``last.ckpt`` intact.

    Args:
        path: where to write, e.g. ``<run>/checkpoints/last.ckpt``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.saved_on_exception = False

    def _save(self, trainer: pl.Trainer) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f".{self.path.name}.partial")
        trainer.save_checkpoint(partial, weights_only=False)
        os.replace(partial, self.path)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if trainer.state.fn == "fit" and trainer.global_step > 0:
            self._save(trainer)
            self.saved_on_exception = True


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and its live child processes (DataLoader workers).

    ``time.process_time`` misses persistent workers, which do the decoding and augmentation; on
    Linux their time is read from /proc. Used to state training cost independently of how many
    other jobs share the machine (wall clock on a shared CPU only gives an upper bound).
    """
    total = time.process_time()
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    pending = [os.getpid()]
    while pending:
        pid = pending.pop()
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in children:
                try:
                    fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
                    total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
                except (OSError, IndexError, ValueError):
                    continue
                pending.append(int(child))
    return total


class EpochClock(pl.Callback):
    """Logs ``time/wall_min`` and ``time/cpu_min`` (minutes since fit started) at every validation,
    so that metrics.csv holds accuracy against training time (bench/train_recipes.py plots it)."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.wall, self.cpu = time.perf_counter(), cpu_seconds()

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not hasattr(self, "wall"):
            return
        pl_module.log("time/wall_min", (time.perf_counter() - self.wall) / 60)
        pl_module.log("time/cpu_min", (cpu_seconds() - self.cpu) / 60)


def _refuse_reused_run_dir(run_dir: Path, ckpt_path: Path | None) -> None:
    """A run folder holding checkpoints is another run's, unless this run resumes from its own last.ckpt.

    Training anew there would mix two runs: a new split.csv beside checkpoints of the old one.

    Raises:
        CatdogError: checkpoints are there and ``ckpt_path`` is not one of them.
    """
    folder = run_dir / "checkpoints"
    existing = sorted(folder.glob("*.ckpt")) if folder.is_dir() else []
    if not existing or (ckpt_path is not None and ckpt_path.resolve().parent == folder.resolve()):
        return
    raise CatdogError(
        f"hydra.run.dir={run_dir} already holds checkpoints of an earlier training ({existing[0].name}): choose a "
        f"new hydra.run.dir, or resume that run with ckpt_path={folder / 'last.ckpt'}"
    )


def _resume_data(ckpt_path: Path, run_dir: Path) -> tuple[pd.DataFrame, list[str]]:
    """The split and class names of the run a checkpoint belongs to, copied into ``run_dir``.

    Raises:
        CatdogError: the checkpoint is unreadable with ``weights_only=True`` (it could run code),
            is not a catdog checkpoint, or its split.csv is gone.
    """
    hint = "resume from a last.ckpt written by scripts/train.py"
    checkpoint = _torch_load(ckpt_path, "cpu", hint)
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if not isinstance(hparams, dict) or "class_names" not in hparams:
        raise CatdogError(f"ckpt_path={ckpt_path} is not a catdog checkpoint: {hint}")
    # .get: a checkpoint written by an older catdog, or by hand, may lack its data config.
    split_csv = Path((hparams.get("data") or {}).get("split_csv") or "")
    if not split_csv.is_file():
        raise CatdogError(
            f"the split of the run being resumed ({split_csv}) is gone: restore that run folder's "
            "split.csv, or start a new run without ckpt_path"
        )
    index = pd.read_csv(split_csv, dtype=str, keep_default_na=False)
    if split_csv.resolve() != (run_dir / "split.csv").resolve():
        shutil.copyfile(split_csv, run_dir / "split.csv")
        skipped = split_csv.with_name("skipped.csv")
        if skipped.is_file():
            shutil.copyfile(skipped, run_dir / "skipped.csv")
    return index, list(hparams["class_names"])


def _task_overrides() -> list[str]:
    """The overrides this run was started with, as Hydra received them (without ``ckpt_path``)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return [o for o in HydraConfig.get().overrides.task if not o.startswith("ckpt_path=")]
    except (ImportError, ValueError):
        return ["<the same overrides>"]


def _hydra_quoted(value: str) -> str:
    """``value`` as a single-quoted Hydra override value that parses back exactly (``,``, ``'``, spaces...):
    backslashes are doubled only before a quote and at the end, as Hydra's grammar reads them. A plain path
    (letters, digits, ``/._-+``) stays bare, as a user would type it."""
    if re.fullmatch(r"[A-Za-z0-9_./+-]*/[A-Za-z0-9_./+-]*", value):
        return value
    text = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)
    return "'" + re.sub(r"(\\+)$", lambda m: m.group(1) * 2, text) + "'"


def _resume_command(last: Path) -> str:
    """The command line that resumes this run from ``last``, quoted for a POSIX shell (paths with spaces)."""
    words = ["python", "scripts/train.py", *_task_overrides(), f"ckpt_path={_hydra_quoted(str(last))}"]
    return shlex.join(words)


def _feature_datamodule(
    model: ClassifierModule, datamodule: ImageDataModule, batch_size: int, seed: int
) -> tuple[FeatureDataModule, float]:
    """Runs the frozen backbone once over every split (no augmentation) and keeps its features.

    Returns:
        The feature datamodule and the seconds it took.
    """
    start = time.perf_counter()
    datamodule.setup("fit")
    features = {}
    loaders = (
        ("train", datamodule._loader(_eval_view(datamodule), train=False)),
        ("val", datamodule.val_dataloader()),
        ("test", datamodule.test_dataloader()),
    )
    batches = sum(len(batch_loader) for _, batch_loader in loaders)
    with progress("data.cache_features: backbone features of every image, once (no augmentation)", batches) as advance:
        for split, loader in loaders:
            chunks, labels = [], []
            for images, targets, _ in loader:
                chunks.append(model.extract_features(images))
                labels.append(targets)
                advance(1)
            features[split] = (torch.cat(chunks), torch.cat(labels))
    seconds = time.perf_counter() - start
    log.info(
        "Computed backbone features of %d images once in %.1f s", sum(len(v[1]) for v in features.values()), seconds
    )
    return FeatureDataModule(features, datamodule.class_names, batch_size, seed=seed), seconds


def _instantiate_callback(cfg: DictConfig) -> pl.Callback:
    """Instantiates one callback config; a CatdogError of its constructor (a bad setting) stays one."""
    try:
        return instantiate(cfg)
    except InstantiationException as error:
        if isinstance(error.__cause__, CatdogError):
            raise error.__cause__ from None
        raise


def _eval_view(datamodule: ImageDataModule):
    """The training images with the evaluation transform (features are computed unaugmented)."""
    view = type(datamodule.train_set)(
        datamodule.train_set.paths, datamodule.train_set.labels, datamodule.val_set.transform
    )
    view._cache, view.cache_size = datamodule.train_set._cache, datamodule.train_set.cache_size
    return view


def _run_lr_finder(
    cfg: DictConfig, trainer: pl.Trainer, model: ClassifierModule, datamodule: Any, run_dir: Path
) -> dict[str, Any]:
    """Lightning's learning-rate range test; plots into the run folder, applies the suggestion.

    Returns:
        ``{"suggestion": lr or None, "applied": bool, "plot": path}``.
    """
    from pytorch_lightning.tuner import Tuner

    settings = OmegaConf.to_container(cfg.lr_find, resolve=True)
    # The range test takes num_training steps however short an epoch is: it must not stop at
    # max_epochs (a small dataset has fewer steps per epoch than the test needs).
    max_epochs = trainer.fit_loop.max_epochs
    trainer.fit_loop.max_epochs = max(max_epochs or 0, int(settings["num_training"]))
    try:
        finder = Tuner(trainer).lr_find(
            model,
            datamodule=datamodule,
            min_lr=settings["min_lr"],
            max_lr=settings["max_lr"],
            num_training=settings["num_training"],
            update_attr=False,
        )
    finally:
        trainer.fit_loop.max_epochs = max_epochs
    suggestion = finder.suggestion() if finder is not None else None
    plot = run_dir / "lr_find.png"
    if finder is not None:
        figure = finder.plot(suggest=suggestion is not None)
        figure.savefig(plot, dpi=100)
        import matplotlib.pyplot as plt

        plt.close(figure)
    applied = bool(settings["apply"] and suggestion)
    if applied:
        model.lr = suggestion
    print(
        f"LR finder: suggested learning rate {suggestion:.3g} "
        f"({'used' if applied else 'not used: lr_find.apply=false'}); plot {plot}"
        if suggestion
        else f"LR finder: no suggestion (too few steps?); plot {plot}"
    )
    return {"suggestion": suggestion, "applied": applied, "plot": str(plot)}


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train, test and write everything to the run folder.

    Lightning's tips and hardware lines are filtered (:func:`catdog.console.quiet_lightning`); a run that
    fails before its first checkpoint removes the run folder it created (see :func:`_removed_if_failed_early`).

    Args:
        cfg: the composed ``conf/train.yaml`` config.

    Returns:
        A summary: run folder, best checkpoint path and epoch, ``objective`` (the best value of the
        monitored *validation* metric: what sweeps optimise), test metrics (None when
        ``cfg.test`` is false), timings.

    Raises:
        CatdogError: bad data or model settings (the scripts print it as one line).
        TrainingTerminated: SIGTERM; last.ckpt holds the current step.
    """
    run_dir = Path(cfg.paths.output_dir)
    with quiet_lightning(), _removed_if_failed_early(run_dir):
        return _train(cfg, run_dir)


def _hydra_created(run_dir: Path) -> bool:
    """``run_dir`` is the folder Hydra made for this job, holding nothing but Hydra's own files."""
    try:
        from hydra.core.hydra_config import HydraConfig

        runtime = HydraConfig.get().runtime
    except (ImportError, ValueError):
        return False
    if Path(runtime.output_dir).resolve() != run_dir.resolve():
        return False
    return all(entry.name == ".hydra" or entry.suffix == ".log" for entry in run_dir.iterdir())


@contextlib.contextmanager
def _removed_if_failed_early(run_dir: Path) -> Iterator[None]:
    """If the block fails before any checkpoint was written, remove ``run_dir``, but only when this invocation
    created it (it did not exist, or Hydra just made it for this job): so that ``ls runs/train`` and
    ``ckpt=latest`` show real runs, not one empty folder per mistyped command. Anything else stays."""
    created = not run_dir.exists() or _hydra_created(run_dir)
    try:
        yield
    except BaseException:
        if created and run_dir.is_dir() and not any(run_dir.glob("checkpoints/*.ckpt")):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """The steps of :func:`train`, in order; each one is a function below."""
    pl.seed_everything(cfg.seed, workers=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    data_cfg = _data_config(cfg)
    ckpt_path = Path(cfg.ckpt_path).expanduser() if cfg.ckpt_path else None
    _refuse_reused_run_dir(run_dir, ckpt_path)
    index, class_names = _split_of_run(data_cfg, run_dir, ckpt_path)
    # The checkpoint carries the data config and where the split lives, so explain can
    # evaluate exactly the held-out images without any other input.
    data_cfg["split_csv"] = str((run_dir / "split.csv").resolve())

    model = _build_model(cfg, data_cfg, class_names)
    datamodule: Any = _build_datamodule(cfg, data_cfg, model, index, class_names)
    timing: dict[str, float] = {}
    if data_cfg["cache_features"]:
        datamodule, timing["features_s"] = _cached_features(model, datamodule, data_cfg["batch_size"], cfg.seed)
    tta = _checked_tta(cfg, model)

    last_checkpoint = LastCheckpoint(run_dir / "checkpoints" / "last.ckpt")
    trainer = _build_trainer(cfg, last_checkpoint)
    summary: dict[str, Any] = {"run_dir": str(run_dir), "test": None, "lr_find": None}
    if cfg.lr_find.enabled:
        if ckpt_path is not None:
            raise CatdogError("lr_find.enabled=true cannot be combined with ckpt_path: drop one of them")
        summary["lr_find"] = _run_lr_finder(cfg, trainer, model, datamodule, run_dir)

    timing.update(_fit(trainer, model, datamodule, ckpt_path, last_checkpoint))
    summary.update(_checkpoints_summary(trainer, last_checkpoint), timing=timing)
    metrics_csv = run_dir / "metrics.csv"
    if metrics_csv.exists():
        plot_training_curves(metrics_csv, run_dir / "curves.png")

    if cfg.test:
        summary["test"] = _test(trainer, model, datamodule, summary, tta)
        _write_test_outputs(summary["test"], class_names, run_dir)
    model.inputs = "images"
    _print_summary(summary)
    return summary


def _data_config(cfg: DictConfig) -> dict[str, Any]:
    """``cfg.data`` as a plain dict (a missing required key fails here), its root and manifest absolute paths:
    explain and compare may run from another directory."""
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True, throw_on_missing=True)
    for key in ("root", "manifest"):
        if data_cfg[key]:
            data_cfg[key] = str(Path(data_cfg[key]).expanduser().resolve())
    return data_cfg


def _split_of_run(data_cfg: dict[str, Any], run_dir: Path, ckpt_path: Path | None) -> tuple[pd.DataFrame, list[str]]:
    """The index and class names to train on: a new split, or (resuming) exactly the images of the run continued."""
    if ckpt_path is None:
        return prepare_data(data_cfg, run_dir)
    if not ckpt_path.is_file():
        raise CatdogError(f"ckpt_path={ckpt_path} does not exist: pass a run's checkpoints/last.ckpt")
    return _resume_data(ckpt_path, run_dir)


def _build_model(cfg: DictConfig, data_cfg: dict[str, Any], class_names: list[str]) -> ClassifierModule:
    """The LightningModule of ``cfg.model``, ``cfg.optimizer`` and ``cfg.scheduler``."""
    return ClassifierModule(
        class_names=class_names,
        image_size=data_cfg["image_size"],
        optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
        scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True) or None,
        data=data_cfg,
        seed=cfg.seed,
        **OmegaConf.to_container(cfg.model, resolve=True),
    )


def _build_datamodule(
    cfg: DictConfig, data_cfg: dict[str, Any], model: ClassifierModule, index: pd.DataFrame, class_names: list[str]
) -> ImageDataModule:
    """The images of ``index``, normalised as the model's backbone expects."""
    loading = LoaderSettings.from_config(data_cfg, model.hparams.mean, model.hparams.std, cfg.seed)
    return ImageDataModule(index, class_names, loading)


def _cached_features(
    model: ClassifierModule, datamodule: ImageDataModule, batch_size: int, seed: int
) -> tuple[FeatureDataModule, float]:
    """data.cache_features=true: the frozen backbone's features instead of images, and the seconds they took.

    Raises:
        CatdogError: the settings need images every epoch (pasting) or a trainable backbone.
    """
    if datamodule.augment_paste is not None:
        raise CatdogError(
            "data.augment_paste pastes new training images every epoch, cached features see none: "
            "drop data.cache_features or set data.augment_paste.p=0"
        )
    if not model.hparams.freeze_backbone:
        raise CatdogError(
            "data.cache_features=true needs a frozen backbone: add model.freeze_backbone=true "
            "(or use experiment=frozen_backbone)"
        )
    features = _feature_datamodule(model, datamodule, batch_size, seed)
    model.inputs = "features"
    return features


def _checked_tta(cfg: DictConfig, model: ClassifierModule) -> str:
    """``cfg.test_tta`` (null: none), checked before training (and that there are images to flip)."""
    tta = str(cfg.test_tta or "none")
    model.set_tta(tta)
    model.set_tta("none")
    return tta


def _build_trainer(cfg: DictConfig, last_checkpoint: LastCheckpoint) -> pl.Trainer:
    """The Lightning Trainer of ``cfg.trainer`` with the configured callbacks and loggers, plus last.ckpt and
    the epoch clock."""
    # .get: the callbacks and logger groups can be dropped whole (~callbacks, ~logger), leaving no key.
    callbacks = [_instantiate_callback(c) for c in cfg.callbacks.values() if c] if cfg.get("callbacks") else []
    callbacks += [last_checkpoint, EpochClock()]
    loggers = [instantiate(c) for c in cfg.logger.values()] if cfg.get("logger") else []
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)


def _fit(
    trainer: pl.Trainer, model: ClassifierModule, datamodule: Any, ckpt_path: Path | None, last: LastCheckpoint
) -> dict[str, float]:
    """``trainer.fit`` (resuming from ``ckpt_path``); returns its wall and CPU seconds.

    Raises:
        TrainingTerminated: SIGTERM; ``last`` holds the current step and the message says how to resume.
    """
    start, cpu_start = time.perf_counter(), cpu_seconds()
    try:
        # weights_only: a checkpoint cannot run code when it is loaded.
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except SIGTERMException:
        path = last.path.resolve()
        raise TrainingTerminated(
            f"training was stopped by SIGTERM at epoch {trainer.current_epoch}, step "
            f"{trainer.global_step}; its state is in {path}. Resume with: {_resume_command(path)}"
        ) from None
    return {"fit_s": time.perf_counter() - start, "fit_cpu_s": cpu_seconds() - cpu_start}


def _checkpoints_summary(trainer: pl.Trainer, last: LastCheckpoint) -> dict[str, Any]:
    """The summary's best and last checkpoints, and the objective of sweeps."""
    # Only a checkpoint chosen by a monitored metric is a "best" one (Lightning adds an
    # unmonitored ModelCheckpoint when the configured one is removed).
    checkpoint_callback = trainer.checkpoint_callback
    monitored = checkpoint_callback is not None and getattr(checkpoint_callback, "monitor", None)
    best = checkpoint_callback.best_model_path if monitored else ""
    return {
        "best_checkpoint": best or None,
        "best": _best_epoch(checkpoint_callback) if best else None,
        "last_checkpoint": str(last.path) if last.path.is_file() else None,
        "objective": _objective(trainer),
    }


def _test(
    trainer: pl.Trainer, model: ClassifierModule, datamodule: Any, summary: dict[str, Any], tta: str
) -> dict[str, Any]:
    """Test metrics of the best checkpoint (else the final weights), and with ``tta`` a second measurement."""
    best = summary["best_checkpoint"]
    trainer.test(model, datamodule=datamodule, ckpt_path=best, verbose=False, weights_only=True)
    weights = "best checkpoint" if best else "final weights"
    results = dict(model.test_results, checkpoint=best, weights=weights)
    results["num_images"] = int(sum(map(sum, results["confusion_matrix"])))
    if summary["best"]:
        results["best_epoch"] = summary["best"]["epoch"]
    if tta != "none":
        # A second, separate measurement of the same weights: "accuracy" stays the plain one.
        model.set_tta(tta)
        trainer.test(model, datamodule=datamodule, ckpt_path=best, verbose=False, weights_only=True)
        results["tta"] = {"method": tta, **model.test_results}
        model.set_tta("none")
    return results


def _write_test_outputs(results: dict[str, Any], class_names: list[str], run_dir: Path) -> None:
    """test_metrics.json and confusion_matrix.png in the run folder."""
    (run_dir / "test_metrics.json").write_text(json.dumps(results, indent=2))
    plot_confusion_matrix(
        results["confusion_matrix"],
        class_names,
        run_dir / "confusion_matrix.png",
        title=f"test accuracy {results['accuracy']:.1%} ({results['weights']})",
    )


def _objective(trainer: pl.Trainer) -> float | None:
    """The best value of the checkpoint callback's validation metric, else the last val/acc.

    What ``scripts/train.py`` returns to Hydra sweepers: choosing by test accuracy would leak the
    test split into model selection.
    """
    callback = trainer.checkpoint_callback
    monitored = callback is not None and getattr(callback, "monitor", None)
    score = getattr(callback, "best_model_score", None) if monitored else None
    if score is not None:
        return float(score)
    value = trainer.callback_metrics.get("val/acc")
    return None if value is None else float(value)


def _best_epoch(callback: Any) -> dict[str, Any]:
    """The epoch (1-based, as the console counts) and the monitored value of best.ckpt."""
    epoch = getattr(callback, "best_epoch", None)
    score = getattr(callback, "best_model_score", None)
    return {
        "epoch": None if epoch is None else int(epoch) + 1,
        "monitor": str(callback.monitor),
        "value": None if score is None else float(score),
        "tie_breaker": getattr(callback, "tie_breaker", None),
        "tie_value": getattr(callback, "best_tie_value", None),
    }


def _print_summary(summary: dict[str, Any]) -> None:
    """The end of the console: where the run is, which epoch best.ckpt holds, the test, the next command."""
    run_dir = summary["run_dir"]
    lines = [f"Run folder: {run_dir}"]
    best = summary.get("best")
    if best and best["value"] is not None:
        tie = f", {best['tie_breaker']} {best['tie_value']:.4f}" if best.get("tie_value") is not None else ""
        epoch = f"epoch {best['epoch']}" if best["epoch"] is not None else "best checkpoint"
        lines.append(f"Best {epoch}: {best['monitor']} {best['value']:.4f}{tie} -> {summary['best_checkpoint']}")
    else:
        lines.append(f"Best checkpoint: {summary['best_checkpoint']} (no monitored metric)")
    if summary["test"]:
        test = summary["test"]
        which = f"best.ckpt, epoch {best['epoch']}" if best and best.get("epoch") else test["weights"]
        lines.append(
            f"Test accuracy {test['accuracy']:.2%} on {test['num_images']} images ({which}; "
            "test_metrics.json, confusion_matrix.png)"
        )
        if test.get("tta"):
            lines.append(
                f"Test accuracy with test-time augmentation ({test['tta']['method']}): "
                f"{test['tta']['accuracy']:.2%} (test_metrics.json: tta)"
            )
    if summary["best_checkpoint"] or summary["last_checkpoint"]:
        lines.append(f"Next: catdog explain ckpt={run_dir}   (CAM overlays and an HTML report of the test images)")
    print("\n".join(lines))

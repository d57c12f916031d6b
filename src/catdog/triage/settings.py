"""The triage settings, read once from ``conf/triage.yaml`` (the one home of every default)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from catdog.errors import CatdogError
from catdog.triage.context import ContextStep, parse_context

FEATURE_SOURCES = ("auto", "checkpoint", "pretrained")
TEST_PROBS = ("kfold", "model")
FIXES = ("relabel", "drop")


@dataclass(frozen=True)
class TriageSettings:
    """Everything triage reads from its config, validated."""

    ckpt: str
    runs_dir: str
    root: str | None
    batch_size: int
    num_workers: int
    precision: str
    accelerator: str
    devices: int | str
    num_nodes: int
    strategy: str
    tune_malloc: bool
    features: str
    test_probs: str
    folds: int
    head_c: float | None  # None: auto (chosen from head_c_grid)
    head_c_grid: tuple[float, ...]
    seed: int
    filter_by: str
    fix: str
    near_duplicate: float
    outlier_quantile: float
    slices: int | None
    slice_gap: float
    slice_min_size: int
    maps: int
    mistakes_per_slice: int
    context: bool
    reliance: ContextStep
    out_dir: Path | None
    overwrite: bool


def _choice(value: object, allowed: tuple[str, ...], key: str) -> str:
    text = str(value)
    if text not in allowed:
        raise CatdogError(f"{key}={value} is not supported: use one of {', '.join(allowed)}")
    return text


def parse_settings(cfg: DictConfig) -> TriageSettings:
    """Validate ``cfg`` (the composed conf/triage.yaml) into :class:`TriageSettings`.

    Raises:
        CatdogError: a value out of range or not one of the choices.
    """
    t = cfg.triage
    if int(t.folds) < 2:
        raise CatdogError(f"triage.folds={t.folds} must be at least 2 (out-of-sample needs held-out folds)")
    if not 0.0 < float(t.near_duplicate) <= 1.0:
        raise CatdogError(f"triage.near_duplicate={t.near_duplicate} must be a cosine similarity in (0, 1]")
    if not 0.0 <= float(t.outlier_quantile) < 0.5:
        raise CatdogError(f"triage.outlier_quantile={t.outlier_quantile} must be in [0, 0.5)")
    if t.slices is not None and int(t.slices) < 2:
        raise CatdogError(f"triage.slices={t.slices} must be at least 2 clusters (or null: chosen by size)")
    if "spawn" in str(cfg.strategy) or "fork" in str(cfg.strategy):
        raise CatdogError(f"strategy={cfg.strategy} is not supported by triage: use strategy=ddp")
    return TriageSettings(
        ckpt=str(cfg.ckpt),
        runs_dir=str(cfg.runs_dir),
        root=str(cfg.data.root) if cfg.data.root else None,
        batch_size=int(cfg.data.batch_size),
        num_workers=int(cfg.data.num_workers),
        precision=_choice(cfg.precision, ("auto", "32", "bf16"), "precision"),
        accelerator=str(cfg.accelerator),
        devices=cfg.devices,
        num_nodes=int(cfg.num_nodes),
        strategy=str(cfg.strategy),
        tune_malloc=bool(cfg.tune_malloc),
        features=_choice(t.features, FEATURE_SOURCES, "triage.features"),
        test_probs=_choice(t.test_probs, TEST_PROBS, "triage.test_probs"),
        folds=int(t.folds),
        head_c=None if str(t.head_c) == "auto" else float(t.head_c),
        head_c_grid=tuple(float(c) for c in t.head_c_grid),
        seed=int(t.seed),
        filter_by=str(t.filter_by),
        fix=_choice(t.fix, FIXES, "triage.fix"),
        near_duplicate=float(t.near_duplicate),
        outlier_quantile=float(t.outlier_quantile),
        slices=int(t.slices) if t.slices is not None else None,
        slice_gap=float(t.slice_gap),
        slice_min_size=int(t.slice_min_size),
        maps=int(t.maps),
        mistakes_per_slice=int(t.mistakes_per_slice),
        context=bool(t.context),
        reliance=parse_context(cfg),
        out_dir=Path(cfg.out_dir).expanduser() if cfg.out_dir else None,
        overwrite=bool(cfg.overwrite),
    )

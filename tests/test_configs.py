"""Every config file composes: the four entry points, every option of every group, every experiment; the
cheap parts (callbacks, loggers, trainer, optimizer and scheduler) are instantiated as train does it.
(After lightning-hydra-template's tests/test_configs.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import CONF_DIR, compose_config, make_config
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from catdog.models.module import ClassifierModule
from catdog.pipelines.train import _instantiate_callback

GROUPS = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir())
TRAIN_GROUPS = [g for g in GROUPS if g not in ("runtime", "context")]
# Values the user must give (??? in the YAML), per option that asks for one.
REQUIRED = {
    "data=folder": ["data.root=photos"],
    "data=kaggle": ["data.root=photos"],
    "data=csv": ["data.manifest=m.csv"],
}


def options(group: str) -> list[str]:
    """The selectable options of a config group (files starting with _ are bases other options inherit)."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml") if not p.stem.startswith("_"))


def train_cfg(tmp_path: Path, *overrides: str) -> DictConfig:
    """conf/train.yaml with ``overrides``, resolved (outside a Hydra run: the output folder is set here)."""
    for override in overrides:
        overrides = (*overrides, *REQUIRED.get(override, []))
    cfg = make_config("train", [f"paths.output_dir={tmp_path / 'run'}", *overrides])
    OmegaConf.resolve(cfg)
    return cfg


def test_every_group_is_known() -> None:
    assert GROUPS == [
        "callbacks", "context", "data", "experiment", "logger", "model", "optimizer", "paths", "runtime", "scheduler",
        "trainer",
    ]
    assert {p.stem for p in CONF_DIR.glob("*.yaml")} == {
        "train",
        "explain",
        "evaluate",
        "compare",
        "triage",
        "robustness",
    }


@pytest.mark.parametrize("name", ["explain", "evaluate", "compare", "triage", "robustness"])
def test_entry_points_compose_and_resolve(name: str) -> None:
    cfg = make_config(name, ["ckpt=run"] if name != "compare" else [])
    OmegaConf.resolve(cfg)
    assert OmegaConf.missing_keys(cfg) == set()


def test_the_runtime_knobs_have_one_default_everywhere() -> None:
    """precision, accelerator, devices, tune_malloc and the loader settings: one home (runtime/default.yaml)."""
    runtime = OmegaConf.load(CONF_DIR / "runtime" / "default.yaml")
    explain = make_config("explain", ["ckpt=run"])
    evaluate = make_config("evaluate", ["ckpt=run"])
    compare = make_config("compare", [])
    triage = make_config("triage", ["ckpt=run"])
    robustness = make_config("robustness", ["ckpt=run"])
    for cfg in (explain, evaluate, compare.explain, triage, robustness):
        for key in ("precision", "accelerator", "devices", "tune_malloc", "data.batch_size", "data.num_workers"):
            assert OmegaConf.select(cfg, key) == OmegaConf.select(runtime, key), key
    assert explain.precision == "auto"
    for name in ("explain", "evaluate", "compare", "triage", "robustness"):  # nowhere re-declared
        text = (CONF_DIR / f"{name}.yaml").read_text()
        assert "\nprecision:" not in text and "num_workers:" not in text and "tune_malloc:" not in text


def test_robustness_scores_maps_as_explain_does() -> None:
    explain, robustness = make_config("explain", ["ckpt=run"]), make_config("robustness", ["ckpt=run"])
    assert (robustness.context.align, robustness.context.pointing_tolerance) == (
        explain.align,
        explain.pointing_tolerance,
    )


@pytest.mark.parametrize("group_option", [f"{g}={o}" for g in TRAIN_GROUPS for o in options(g)])
def test_every_train_option_composes_and_resolves(tmp_path: Path, group_option: str) -> None:
    cfg = train_cfg(tmp_path, group_option)
    assert OmegaConf.missing_keys(cfg) == set()


def test_models_inherit_one_base() -> None:
    base = OmegaConf.load(CONF_DIR / "model" / "_base.yaml")
    for option in options("model"):
        file = OmegaConf.load(CONF_DIR / "model" / f"{option}.yaml")
        assert list(file.defaults) == ["_base", "_self_"], option
        model = make_config("train", [f"model={option}"]).model
        assert set(model) == set(base), option  # every key, including no_decay_norm_bias, from the base
        assert model.arch == option


def test_demo_data_inherits_folder() -> None:
    folder = make_config("train", ["data=folder", "data.root=x"]).data
    demo = make_config("train", ["data=demo"]).data
    assert set(folder) <= set(demo)
    assert demo.layout == "demo" and demo.augment == folder.augment and demo.split_seed == folder.split_seed


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_instantiates_its_trainer_callbacks_loggers_and_optimizer(
    tmp_path: Path, experiment: str
) -> None:
    """As pipelines.train builds them, without fitting (the model: a small stand-in parameter)."""
    cfg = train_cfg(tmp_path, f"experiment={experiment}", "trainer=cpu")
    callbacks = [_instantiate_callback(c) for c in cfg.callbacks.values() if c]
    loggers = [instantiate(c) for c in cfg.logger.values()]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    assert trainer.max_epochs == cfg.trainer.max_epochs
    weight = torch.nn.Parameter(torch.zeros(2))
    optimizer = instantiate(OmegaConf.to_container(cfg.optimizer), _partial_=True)([weight])
    assert isinstance(optimizer, torch.optim.Optimizer)
    if cfg.scheduler and cfg.scheduler.get("_target_"):
        scheduler = {k: v for k, v in OmegaConf.to_container(cfg.scheduler).items() if k not in ("interval", "monitor")}
        if scheduler["_target_"].endswith("OneCycleLR"):  # the module fills these in from the run's length
            scheduler.update(max_lr=scheduler.get("max_lr", 0.01), total_steps=10)
        assert instantiate(scheduler, _partial_=True)(optimizer) is not None


def test_the_demo_model_is_built_from_its_config(tmp_path: Path) -> None:
    """The default composition, model included: what `make demo` trains (no weights to download)."""
    cfg = train_cfg(tmp_path)
    model = OmegaConf.to_container(cfg.model)
    module = ClassifierModule(class_names=["cat", "dog", "none"], image_size=cfg.data.image_size, **model)
    assert module.hparams.arch == "resnet18" and module.hparams.no_decay_norm_bias is True


# Value overrides before, between and after group overrides; deletes, additions, null, lists, interpolations.
OVERRIDE_SETS = [
    ("train", ["paths.output_dir=/tmp/run", "data.image_size=32", "~callbacks.rich_progress_bar", "seed=1"]),
    ("train", ["model.freeze_backbone=true", "model=vit_b_16", "data=folder", "data.root=photos", "+trainer.x=[1,2]"]),
    ("train", ["experiment=finetune", "data.root=photos", "trainer.max_epochs=null", "seed=${data.image_size}"]),
    ("explain", ["ckpt=run", "data.num_workers=0", "precision=32", "layers=[layer3,layer4]", "++new_key=1"]),
    ("compare", ["out_dir=/tmp/out"]),
]


@pytest.mark.parametrize(("name", "overrides"), OVERRIDE_SETS)
def test_make_config_agrees_with_hydras_compose(name: str, overrides: list[str]) -> None:
    """The tests' cached composition (helpers.make_config) gives exactly what Hydra's compose gives."""
    for _ in range(2):  # the second call comes from the cache
        fast, slow = make_config(name, overrides), compose_config(name, overrides)
        assert OmegaConf.to_yaml(fast) == OmegaConf.to_yaml(slow)
        assert OmegaConf.is_struct(fast) and OmegaConf.is_struct(slow)
    changed = make_config(name, overrides)
    OmegaConf.update(changed, "data.root", "changed", force_add=True)  # a test changing its config changes no other's
    assert make_config(name, overrides).data.get("root") != "changed"


@pytest.mark.parametrize("bad", ["data.no_such_key=1", "+data.image_size=3", "~data.no_such_key"])
def test_make_config_refuses_what_hydra_refuses(bad: str) -> None:
    with pytest.raises(ConfigCompositionException) as slow:
        compose_config("train", [bad])
    with pytest.raises(ConfigCompositionException) as fast:
        make_config("train", [bad])
    assert str(fast.value) == str(slow.value)

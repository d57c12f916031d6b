"""explain/settings.py: conf/explain.yaml read and checked once, before any checkpoint or image is touched."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import make_config
from omegaconf import OmegaConf

from catdog.errors import CatdogError
from catdog.explain.pipeline import explain


def explain_cfg(tmp_path: Path, *overrides: str):
    # A checkpoint that does not exist: the settings must be refused before explain looks for it.
    return make_config("explain", [f"ckpt={tmp_path / 'missing.ckpt'}", f"out_dir={tmp_path / 'out'}", *overrides])


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("overlay.quality=101", "overlay.quality=101"),
        ("overlay.alpha=5", "overlay.alpha=5"),
        ("overlay.alpha=-0.1", "overlay.alpha=-0.1"),
        ("overlay.quality=high", "overlay.quality='high'"),
        ("overlay.writers=0", "overlay.writers=0"),
        ("overlay.true_class_panel=sometimes", "overlay.true_class_panel=sometimes"),
        ("overlay.max_size=0", "overlay.max_size=0"),
        ("overlay.side_by_side=maybe", "overlay.side_by_side='maybe'"),
        ("data.batch_size=0", "data.batch_size=0"),
        ("data.num_workers=-1", "data.num_workers=-1"),
        ("data.max_images=0", "data.max_images=0"),
        ("topk=0", "topk=0"),
        ("pointing_tolerance=-1", "pointing_tolerance=-1"),
        ("mosaic.count=0", "mosaic.count=0"),
        ("mosaic.grid=1", "mosaic.grid=1"),
        ("faithfulness.steps=0", "faithfulness.steps=0"),
        ("faithfulness.batch_size=0", "faithfulness.batch_size=0"),
        ("grid_images=0", "grid_images=0"),
        ("top_losses=-1", "top_losses=-1"),
        ("num_nodes=0", "num_nodes=0"),
        ("precision=16", "precision=16"),
        ("align=centre", "align=centre"),
        ("contrast=max", "contrast=max"),
        ("localization=boxes", "localization=boxes"),
        ("metrics=[deletion,magic]", "metrics=magic"),
        ("display=hot", "display=hot"),
        ("threshold=2", "threshold=2"),
        ("strategy=ddp_spawn", "strategy=ddp_spawn"),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_key_before_anything_runs(tmp_path: Path, override: str, key: str) -> None:
    with pytest.raises(CatdogError) as err:
        explain(explain_cfg(tmp_path, override))
    message = str(err.value)
    assert message.startswith(key) and "\n" not in message
    assert not (tmp_path / "out").exists()


def test_the_yaml_is_the_one_home_of_the_defaults(tmp_path: Path) -> None:
    from catdog.explain.settings import ExplainSettings

    settings = ExplainSettings.from_config(explain_cfg(tmp_path))
    assert settings.align == "receptive_field"  # what conf/explain.yaml says (the code once said "cell")
    assert settings.overlay.quality == 90 and settings.overlay.max_size == 1024
    assert settings.runtime.tune_malloc and settings.runtime.fold_batchnorm
    assert settings.explained_layers == (None,) and settings.localization == () and settings.metrics == ()
    # A key missing from the config is an error, not a default hidden in the code.
    cfg = explain_cfg(tmp_path)
    OmegaConf.set_struct(cfg, False)
    del cfg.overlay["alpha"]
    with pytest.raises(CatdogError, match=r"^overlay\.alpha is missing"):
        ExplainSettings.from_config(cfg)


def test_settings_are_frozen(tmp_path: Path) -> None:
    from catdog.explain.settings import ExplainSettings

    settings = ExplainSettings.from_config(explain_cfg(tmp_path, "layers=[layer3,layer4]", "localization=mosaic"))
    assert settings.explained_layers == ("layer3", "layer4") and settings.localization == ("mosaic",)
    with pytest.raises(AttributeError):
        settings.topk = 3  # type: ignore[misc]

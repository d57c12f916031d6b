"""Shared test helpers: Hydra configs composed from conf/, tiny synthetic image folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def make_config(name: str, overrides: list[str]) -> DictConfig:
    """Compose conf/<name>.yaml with overrides, as the scripts would (without running Hydra's job)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


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


def compare_config(tmp_path: Path, **values: object) -> DictConfig:
    """conf/compare.yaml without Hydra's keys, writing into tmp_path/compare_out, with dotted ``values`` set."""
    cfg = OmegaConf.load(CONF_DIR / "compare.yaml")
    cfg.pop("defaults")
    cfg.pop("hydra")
    cfg.out_dir = str(tmp_path / "compare_out")
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

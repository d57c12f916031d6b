"""Shared test helpers: Hydra configs composed from conf/, tiny synthetic image folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def make_config(name: str, overrides: list[str]) -> DictConfig:
    """Compose conf/<name>.yaml with overrides, as the scripts would (without running Hydra's job)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


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

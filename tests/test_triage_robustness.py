"""Context-robustness check: photos shrunk onto backgrounds, accuracy and pointing game per scale."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import ChannelNet
from PIL import Image

from catdog.data.paste import Backgrounds
from catdog.errors import CatdogError
from catdog.maps.cam import point_in_box
from catdog.maps.explainers import ExactCAM
from catdog.maps.geometry import grid_centres
from catdog.triage.robustness import RobustnessSettings, plot_robustness, robustness_check

SIDE = 48
NAMES = ["red", "green", "blue"]


def _transform(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(rgb)).permute(2, 0, 1).float() / 255


def _solid(path: Path, colour: tuple[int, int, int]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((SIDE, SIDE, 3), colour, dtype=np.uint8)).save(path)
    return str(path)


def _setup(tmp_path: Path) -> tuple[pd.DataFrame, Backgrounds]:
    images = pd.DataFrame(
        {
            "path": [_solid(tmp_path / "red.png", (255, 0, 0)), _solid(tmp_path / "blue.png", (0, 0, 255))],
            "label": ["red", "blue"],
        }
    )
    _solid(tmp_path / "backgrounds" / "grass.png", (0, 255, 0))
    return images, Backgrounds.from_folder(tmp_path / "backgrounds", setting="context.backgrounds")


def _check(
    images: pd.DataFrame, backgrounds: Backgrounds, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    net = ChannelNet(cell=4, gains=(4.0, 1.0, 1.0)).eval()
    settings = RobustnessSettings(scales=(1.0, 0.5, 1 / 3, 0.25), seed=seed, tolerance=0.0, batch_size=3)
    return robustness_check(
        ExactCAM(net, "features", "fc"),
        _transform,
        images,
        NAMES,
        grid_centres((12, 12), (SIDE, SIDE)),
        backgrounds,
        settings,
    )


def test_accuracy_and_pointing_per_scale_match_a_hand_computation(tmp_path: Path) -> None:
    # On a green background, the red photo's share of the picture is 1, 1/4, 1/9, 1/16 of the area: its
    # logit 4 x share beats green's (1 - share) at scales 1 and 1/2 only; blue (weight 1) at scale 1 only.
    images, backgrounds = _setup(tmp_path)
    scenes, table, _ = _check(images, backgrounds)
    assert len(scenes) == 8
    overall = table[table["class"] == "all"].set_index("scale")
    assert overall["accuracy"].tolist() == [1.0, 0.5, 0.0, 0.0]
    red = table[table["class"] == "red"].set_index("scale")
    blue = table[table["class"] == "blue"].set_index("scale")
    assert red["accuracy"].tolist() == [1.0, 1.0, 0.0, 0.0] and blue["accuracy"].tolist() == [1.0, 0.0, 0.0, 0.0]
    # The true class's map is its own channel: it peaks on the pasted photo at every scale, right or wrong.
    shrunk = overall.drop(index=1.0)
    assert shrunk["pointing_hit"].tolist() == [1.0, 1.0, 1.0] and shrunk["in_box"].tolist() == [1.0, 1.0, 1.0]
    assert pd.isna(overall.loc[1.0, "pointing_hit"])  # the box is the whole picture: nothing to score
    assert (shrunk["energy_in_box"] > 0.7).all()  # bilinear upsampling of 4 px cells leaks past the box
    # Boxes are the pasted sizes, inside the scene; the centre baseline is the centre tested against them.
    for _, row in scenes.iterrows():
        side = round(row["scale"] * SIDE)
        assert (row["x1"] - row["x0"] + 1, row["y1"] - row["y0"] + 1) == (side, side)
        assert 0 <= row["x0"] and row["x1"] < SIDE and 0 <= row["y0"] and row["y1"] < SIDE
        if row["scale"] < 1:
            box = (row["x0"], row["y0"], row["x1"], row["y1"])
            assert row["centre_hit"] == point_in_box((SIDE - 1) / 2, (SIDE - 1) / 2, box)


def test_scenes_are_seeded(tmp_path: Path) -> None:
    images, backgrounds = _setup(tmp_path)
    first, _, _ = _check(images, backgrounds, seed=3)
    again, _, _ = _check(images, backgrounds, seed=3)
    other, _, _ = _check(images, backgrounds, seed=4)
    boxes = ["x0", "y0", "x1", "y1"]
    assert first[boxes].equals(again[boxes])
    assert not first[boxes].equals(other[boxes])


def test_generated_backgrounds_unreadable_photos_and_the_figure(tmp_path: Path) -> None:
    images, _ = _setup(tmp_path)
    (tmp_path / "broken.png").write_bytes(b"")
    images = pd.concat([images, pd.DataFrame({"path": [str(tmp_path / "broken.png")], "label": ["red"]})])
    scenes, table, skipped = _check(images, Backgrounds())
    assert len(scenes) == 8 and set(table["scale"]) == {1.0, 0.5, 1 / 3, 0.25}
    assert skipped.values.tolist() == [[str(tmp_path / "broken.png"), "zero-byte file"]]
    png = plot_robustness(table, tmp_path / "robustness.png")
    assert png.is_file() and png.stat().st_size > 1000


def test_settings_are_checked() -> None:
    for scales in [(), (0.0,), (1.5,)]:
        with pytest.raises(CatdogError, match="context.scales"):
            RobustnessSettings(scales=scales, seed=0, tolerance=0.067, batch_size=4).check()


def test_robustness_script_writes_its_folder_for_a_run(tmp_path: Path) -> None:
    from helpers import make_config, make_trained_run, write_images

    from catdog.pipelines.robustness import robustness

    write_images(tmp_path / "photos", {"cat": 3, "dog": 3})
    run = make_trained_run(tmp_path / "run", tmp_path / "photos", ["cat", "dog"], favourite=0)  # always "cat"
    out = tmp_path / "robust"
    cfg = make_config(
        "robustness",
        [f"ckpt={run}", f"out_dir={out}", "data.num_workers=0", "context.scales=[1.0,0.5]", "precision=32"],
    )
    summary = robustness(cfg)
    assert {p.name for p in out.iterdir()} >= {
        "robustness.csv",
        "scenes.csv",
        "robustness.png",
        "examples.jpg",
        "summary.json",
    }
    table = pd.read_csv(out / "robustness.csv").set_index(["scale", "class"])
    assert table.loc[(1.0, "all"), "accuracy"] == 0.5 and table.loc[(0.5, "all"), "accuracy"] == 0.5
    assert table.loc[(0.5, "cat"), "accuracy"] == 1.0 and table.loc[(0.5, "dog"), "accuracy"] == 0.0
    assert len(pd.read_csv(out / "scenes.csv")) == 12 and summary["photos"] == 6
    assert summary["backgrounds"].startswith("generated")
    with pytest.raises(CatdogError, match="already holds results"):
        robustness(cfg)
    with pytest.raises(CatdogError, match="context.backgrounds=.*does not exist"):
        robustness(
            make_config(
                "robustness", [f"ckpt={run}", f"out_dir={tmp_path / 'x'}", f"context.backgrounds={tmp_path / 'nope'}"]
            )
        )

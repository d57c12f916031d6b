"""The product end to end: train ResNet18 from scratch on the demo data, explain, score the CAMs.

The slowest test (a few minutes on 2 CPU cores): it is the one that shows each class's map finds
its own object.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from helpers import make_config

from catdog.explain.pipeline import explain
from catdog.pipelines.train import train


def test_demo_train_then_explain_points_at_the_objects(tmp_path: Path) -> None:
    run = tmp_path / "run"
    summary = train(
        make_config(
            "train",
            [
                f"paths.output_dir={run}",
                f"data.root={tmp_path / 'demo'}",
                "trainer.accelerator=cpu",
                "~callbacks.rich_progress_bar",
            ],
        )
    )
    assert summary["test"]["accuracy"] >= 0.9

    result = explain(make_config("explain", [f"ckpt={run}", "align=cell", "precision=32"]))
    out = Path(result["out_dir"])
    written = json.loads((out / "summary.json").read_text())
    assert written["accuracy"] >= 0.9
    assert written["cam_logit_max_deviation"] < 1e-3

    # The pointing game recomputed here from the raw maps and boxes.csv, independently of catdog.quality.localization:
    # the true class's map (last column) peaks in a cell whose centre ((n + 0.5) * stride) is in the box.
    cams = np.load(out / "cams.npz")
    boxes = pd.read_csv(tmp_path / "demo" / "boxes.csv")
    boxes["path"] = [str((tmp_path / "demo" / p).resolve()) for p in boxes["path"]]
    box_of = boxes.set_index("path")
    names = list(cams["class_names"])
    size = 112  # demo images are drawn at the model's input size
    hits: dict[str, list[bool]] = {"cat": [], "dog": []}
    for path, idx, maps in zip(cams["paths"], cams["class_idx"], cams["cams"]):
        true = Path(path).parent.name
        if true == "none":
            continue
        assert names[idx[-1]] == true  # the last map is the true class's
        h, w = maps.shape[-2:]
        row, col = divmod(int(np.argmax(maps[-1].astype(np.float32))), w)
        x, y = (col + 0.5) * size / w - 0.5, (row + 0.5) * size / h - 0.5
        b = box_of.loc[str(path)]
        hits[true].append(bool(b.x0 <= x <= b.x1 - 1 and b.y0 <= y <= b.y1 - 1))
    rates = {name: float(np.mean(h)) for name, h in hits.items()}
    assert min(len(h) for h in hits.values()) >= 30, {k: len(v) for k, v in hits.items()}
    assert min(rates.values()) >= 0.9, rates
    # explain's own numbers agree, and beat the centre baseline.
    game = written["pointing_game"]
    for name, rate in rates.items():
        assert abs(game["per_class"][name]["strict_hit_rate"] - rate) < 1e-9
    assert game["strict_hit_rate"] > game["centre_strict_hit_rate"] + 0.3
    assert (out / "report" / "index.html").is_file()

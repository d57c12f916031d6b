"""The product end to end: train ResNet18 from scratch on the demo data, explain, score the CAMs.

The slowest test (a few minutes on 2 CPU cores): it is the one that shows each class's map finds
its own object.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from helpers import compare_config, explain_cfg, make_config
from PIL import Image

from catdog.explain.pipeline import explain
from catdog.pipelines.compare import compare
from catdog.pipelines.train import train


@pytest.mark.slow
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

# A hostile-input corpus, generated here, goes through train, explain and compare. The corpus: zero-byte,
# truncated, text-as-image, CMYK, 16-bit, palette-with-transparency and EXIF-rotated files, a 1x1 and a
# 70000x8 image (valid, beyond JPEG's size limit), and class and file names with Unicode, HTML, quotes and
# ``$``. Every broken file must be listed with a reason, every readable one used, the names kept exactly and
# escaped in the report; nothing may crash.
HOSTILE_CLASSES = ["chat <script>noir $^$", "dög & 'co'"]
BROKEN = {"zero.png", "truncated.jpg", "text.jpg", "half.png"}



def _png(array: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", array)
    assert ok
    return encoded.tobytes()


def write_corpus(root: Path) -> dict[str, set[str]]:
    """Per class: 5 ordinary photos plus hostile files; returns the file names expected readable / broken."""
    rng = np.random.default_rng(0)
    readable: set[str] = set()
    for c, name in enumerate(HOSTILE_CLASSES):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(5):
            weird = ["<img src=x onerror=alert(1)>", "$HOME", "ünï cödé", "a'b\"c", "x&amp;y"][i]
            file = folder / f"{weird} {i}.png"
            file.write_bytes(_png(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)))
            readable.add(file.name)
        if c == 0:
            photo = Image.fromarray(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8))
            buffer = io.BytesIO()
            photo.convert("CMYK").save(buffer, format="JPEG")
            (folder / "cmyk.jpg").write_bytes(buffer.getvalue())
            (folder / "16bit.png").write_bytes(_png(rng.integers(0, 65536, (20, 30), dtype=np.uint16)))
            exif = Image.Exif()
            exif[0x0112] = 6  # rotated 90 degrees
            buffer = io.BytesIO()
            photo.save(buffer, format="JPEG", exif=exif.tobytes())
            (folder / "exif.jpg").write_bytes(buffer.getvalue())
            palette = Image.fromarray(rng.integers(0, 4, (16, 16), dtype=np.uint8), mode="L").convert("P")
            palette.info["transparency"] = 0
            palette.save(folder / "palette.png", transparency=0)
            (folder / "tiny.png").write_bytes(_png(np.full((1, 1, 3), 200, np.uint8)))
            (folder / "tall.png").write_bytes(_png(np.full((70000, 8, 3), 90, np.uint8)))
            readable |= {"cmyk.jpg", "16bit.png", "exif.jpg", "palette.png", "tiny.png", "tall.png"}
        else:
            (folder / "zero.png").write_bytes(b"")
            good = folder / next(iter(sorted(p.name for p in folder.iterdir())))
            (folder / "truncated.jpg").write_bytes(
                cv2.imencode(".jpg", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))[1].tobytes()[:200]
            )
            (folder / "text.jpg").write_text("<html>not an image</html>")
            (folder / "half.png").write_bytes(good.read_bytes()[:60])
    return {"readable": readable, "broken": set(BROKEN)}


@pytest.mark.slow
def test_hostile_corpus_through_train_explain_and_compare(tmp_path: Path) -> None:
    root = tmp_path / "data"
    expected = write_corpus(root)
    run = tmp_path / "run"
    cfg = make_config(
        "train",
        [
            f"paths.output_dir={run}",
            "data=folder",
            f"data.root={root}",
            "model.weights=null",
            "data.image_size=32",
            "data.batch_size=8",
            "data.num_workers=0",
            "data.val_fraction=0.2",
            "data.test_fraction=0.2",
            "trainer.max_epochs=1",
            "trainer.accelerator=cpu",
            "~callbacks.rich_progress_bar",
        ],
    )
    train(cfg)
    skipped = pd.read_csv(run / "skipped.csv", dtype=str, keep_default_na=False)
    assert {Path(p).name for p in skipped["path"]} == expected["broken"]
    assert skipped["reason"].str.len().gt(0).all()
    split = pd.read_csv(run / "split.csv", dtype=str, keep_default_na=False)
    assert {Path(p).name for p in split["path"]} == expected["readable"]
    assert sorted(set(split["label"])) == sorted(HOSTILE_CLASSES)

    first = explain(explain_cfg(run, "data.split=all"))
    out = Path(first["out_dir"])
    explained = pd.read_csv(out / "predictions.csv", dtype=str, keep_default_na=False)
    skipped_by_explain = pd.read_csv(out / "skipped.csv", dtype=str, keep_default_na=False)
    # Unreadable files never reached split.csv; the 70000-px image is drawn on a bounded copy (overlay.max_size).
    assert skipped_by_explain.empty
    assert {Path(p).name for p in explained["path"]} == expected["readable"]
    assert set(explained["true"]) == set(HOSTILE_CLASSES)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["class_names"] == sorted(HOSTILE_CLASSES) and summary["labelled"] == len(explained)

    second = explain(explain_cfg(run, "data.split=all", "topk=2"))
    result = compare(compare_config(tmp_path, runs=[str(out), second["out_dir"]]))
    compared = Path(result["out_dir"])
    assert len(pd.read_csv(compared / "per_image.csv")) == len(explained)
    for page in (compared / "report" / "index.html", out / "report" / "index.html"):
        html = page.read_text()
        assert "<img src=x" not in html and "<script>noir" not in html  # escaped in the page and in its data
        assert "chat &lt;script&gt;noir $^$" in html

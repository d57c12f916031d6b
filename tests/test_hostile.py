"""Guarantee (issue #9): a hostile-input corpus, generated here, goes through train, explain and compare.

The corpus: zero-byte, truncated, text-as-image, CMYK, 16-bit, palette-with-transparency and EXIF-rotated
files, a 1x1 and a 70000x8 image (valid, beyond JPEG's size limit), and class and file names with Unicode,
HTML, quotes and ``$``. Every broken file must be listed with a reason, every readable one used, the names
kept exactly and escaped in the report; nothing may crash.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from helpers import compare_config, make_config
from PIL import Image
from test_reliability import explain_cfg

from catdog.explain.pipeline import explain
from catdog.pipelines.compare import compare
from catdog.pipelines.train import train

CLASSES = ["chat <script>noir $^$", "dög & 'co'"]
BROKEN = {"zero.png", "truncated.jpg", "text.jpg", "half.png"}


def _png(array: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", array)
    assert ok
    return encoded.tobytes()


def write_corpus(root: Path) -> dict[str, set[str]]:
    """Per class: 5 ordinary photos plus hostile files; returns the file names expected readable / broken."""
    rng = np.random.default_rng(0)
    readable: set[str] = set()
    for c, name in enumerate(CLASSES):
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
            (folder / "truncated.jpg").write_bytes(cv2.imencode(".jpg", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))[1].tobytes()[:200])
            (folder / "text.jpg").write_text("<html>not an image</html>")
            (folder / "half.png").write_bytes(good.read_bytes()[:60])
    return {"readable": readable, "broken": set(BROKEN)}


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
    assert sorted(set(split["label"])) == sorted(CLASSES)

    first = explain(explain_cfg(run, "data.split=all"))
    out = Path(first["out_dir"])
    explained = pd.read_csv(out / "predictions.csv", dtype=str, keep_default_na=False)
    skipped_by_explain = pd.read_csv(out / "skipped.csv", dtype=str, keep_default_na=False)
    # Unreadable files never reached split.csv; the 70000-px image is drawn on a bounded copy (overlay.max_size).
    assert skipped_by_explain.empty
    assert {Path(p).name for p in explained["path"]} == expected["readable"]
    assert set(explained["true"]) == set(CLASSES)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["class_names"] == sorted(CLASSES) and summary["labelled"] == len(explained)

    second = explain(explain_cfg(run, "data.split=all", "topk=2"))
    result = compare(compare_config(tmp_path, runs=[str(out), second["out_dir"]]))
    compared = Path(result["out_dir"])
    assert len(pd.read_csv(compared / "per_image.csv")) == len(explained)
    for page in (compared / "report" / "index.html", out / "report" / "index.html"):
        html = page.read_text()
        assert "<img src=x" not in html and "<script>noir" not in html  # escaped in the page and in its data
        assert "chat &lt;script&gt;noir $^$" in html

"""Fuzzing the readers of user files (hypothesis, small budget so the suite stays fast).

Properties: the image reader returns an RGB uint8 array or raises BadImageError, whatever the bytes; the
CSV readers return a table or raise a one-line CatdogError, whatever the text; and any text a class name
can be survives a write/read round trip unchanged (no NA or number guessing).
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from catdog.data.demo import load_boxes
from catdog.data.images import BadImageError, load_rgb
from catdog.errors import CatdogError
from catdog.readers import read_csv
from catdog.report import read_predictions

# derandomize: the same examples on every run (CI never flakes); database=None: no .hypothesis folder.
FUZZ = settings(
    max_examples=40, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)
# Text a file can hold: any Unicode except lone surrogates (not encodable as UTF-8).
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)


def _valid_image_bytes(fmt: str, mode: str) -> bytes:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


SEEDS = [
    _valid_image_bytes(f, m) for f, m in (("PNG", "RGB"), ("JPEG", "RGB"), ("PNG", "P"), ("TIFF", "CMYK"), ("GIF", "L"))
]


def _check_image(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "x.img"
        path.write_bytes(data)
        try:
            rgb = load_rgb(path)
        except BadImageError as err:
            assert str(err) and "\n" not in str(err)
            return
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.flags.c_contiguous


@FUZZ
@given(st.binary(max_size=300))
def test_image_reader_on_random_bytes(data: bytes) -> None:
    _check_image(data)


@FUZZ
@given(
    st.sampled_from(range(len(SEEDS))),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
    st.integers(0, 10_000),
)
def test_image_reader_on_mutated_images(seed: int, flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(SEEDS[seed])
    for position, value in flips:
        data[position % len(data)] = value
    _check_image(bytes(data[: max(1, len(data) - cut % len(data))]))


@FUZZ
@given(st.text(max_size=200))
def test_csv_readers_on_random_text(text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        data = text.encode("utf-8", "replace")
        (Path(folder) / "f.csv").write_bytes(data)
        (Path(folder) / "boxes.csv").write_bytes(data)
        for reader in (
            lambda: read_csv(Path(folder) / "f.csv", required=("path",), text=("path",)),
            lambda: read_predictions(Path(folder) / "f.csv"),
            lambda: load_boxes(Path(folder)),
        ):
            try:
                reader()
            except CatdogError as err:
                assert "\n" not in str(err)


@FUZZ
@given(st.lists(st.tuples(TEXT, TEXT), min_size=1, max_size=5))
def test_class_names_survive_a_round_trip(rows: list[tuple[str, str]]) -> None:
    frame = pd.DataFrame(rows, columns=["path", "label"])
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "split.csv"
        frame.to_csv(path, index=False)
        back = read_csv(path, text=("path", "label"))
    assert list(zip(back["path"], back["label"])) == rows


@pytest.mark.parametrize("name", ["0", "1", "NA", "None", "nan", "null", "True", "", " ", "1e3", "#N/A"])
def test_named_tricky_class_names_round_trip(tmp_path: Path, name: str) -> None:
    pd.DataFrame({"path": ["a.png"], "label": [name]}).to_csv(tmp_path / "s.csv", index=False)
    assert read_csv(tmp_path / "s.csv", text=("path", "label"))["label"].tolist() == [name]

"""catdog.readers: the one validating reader for user files (CSV, JSON, YAML, checkpoints, images)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from catdog.data.images import BadImageError
from catdog.errors import CatdogError
from catdog.readers import (
    as_bool,
    read_checkpoint,
    read_csv,
    read_image,
    read_json,
    read_yaml,
)


def one_line(err: pytest.ExceptionInfo) -> str:
    assert "\n" not in str(err.value)
    return str(err.value)


def test_csv_keeps_text_as_written(tmp_path: Path) -> None:
    file = tmp_path / "p.csv"
    file.write_text("path,true,pred,p_0,loss,correct,note\nx.png,NA,0,0.25,,True,None\ny.png,,1,1e-3,2,False,7\n")
    table = read_csv(file, text=["path", "pred"], optional_text=["true"], booleans=["correct"])
    assert table["pred"].tolist() == ["0", "1"] and table["true"].tolist() == ["NA", None]
    assert table["p_0"].tolist() == [0.25, 0.001]  # numbers where every cell is one
    assert math.isnan(table["loss"][0]) and table["loss"][1] == 2.0
    assert table["correct"].tolist() == [True, False]
    assert table["note"].tolist() == ["None", "7"]  # mixed: stays text, "None" is not guessed as missing


def test_csv_drops_a_written_index_column(tmp_path: Path) -> None:
    file = tmp_path / "s.csv"
    file.write_text(",path,label\n0,a.png,cat\n")
    assert list(read_csv(file, text="*").columns) == ["path", "label"]


@pytest.mark.parametrize(
    ("content", "kwargs", "message"),
    [
        (None, {}, "does not exist"),
        ("path\n", {"required": ["path", "label"]}, "lacks column"),
        ("path,x0\na,1\nb,oops\n", {"numeric": ["x0"]}, "not a number"),
        ("path,correct\na,maybe\n", {"booleans": ["correct"]}, "not True/False"),
        ('path,label\n"a,b\n', {}, "not a readable CSV"),
        ("path,label\na,b,c,d\n", {}, "not a readable CSV"),
    ],
)
def test_csv_errors_are_one_line(tmp_path: Path, content: str | None, kwargs: dict, message: str) -> None:
    file = tmp_path / "bad.csv"
    if content is not None:
        file.write_text(content)
    with pytest.raises(CatdogError, match=message) as err:
        read_csv(file, what="split file", **kwargs)
    assert "split file" in one_line(err)


def test_csv_not_utf8_is_one_line(tmp_path: Path) -> None:
    file = tmp_path / "latin.csv"
    file.write_bytes("path,label\nb\xe9b\xe9.png,chat\n".encode("latin-1"))
    with pytest.raises(CatdogError, match="not a readable CSV") as err:
        read_csv(file)
    one_line(err)


def test_json(tmp_path: Path) -> None:
    file = tmp_path / "summary.json"
    file.write_text('{"images": 3}')
    assert read_json(file) == {"images": 3}
    file.write_text('{"images": ')
    with pytest.raises(CatdogError, match="not valid JSON") as err:
        read_json(file, what="summary")
    one_line(err)
    file.write_text("[1, 2]")
    with pytest.raises(CatdogError, match="not an object"):
        read_json(file)


def test_yaml_is_not_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CATDOG_READERS_SECRET", "s3cr3t")
    file = tmp_path / "config.yaml"
    file.write_text("a: ${oc.env:CATDOG_READERS_SECRET}\nb: ${a}\nc: [1, '${b}']\n")
    data = read_yaml(file)
    assert data == {"a": "${oc.env:CATDOG_READERS_SECRET}", "b": "${a}", "c": [1, "${b}"]}
    file.write_text("a: [unclosed\n")
    with pytest.raises(CatdogError, match="not valid YAML") as err:
        read_yaml(file)
    one_line(err)


class Evil:
    def __reduce__(self):  # would run code if unpickled without weights_only
        return (print, ("pwned",))


def test_checkpoint_weights_only(tmp_path: Path) -> None:
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "hyper_parameters": {"class_names": ["a", "b"]}}, good)
    assert read_checkpoint(good)["hyper_parameters"]["class_names"] == ["a", "b"]
    evil = tmp_path / "evil.ckpt"
    torch.save({"x": Evil()}, evil)
    with pytest.raises(CatdogError, match="could not be read") as err:
        read_checkpoint(evil)
    one_line(err)
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(good.read_bytes()[:100])
    with pytest.raises(CatdogError, match="could not be read"):
        read_checkpoint(corrupt)
    listed = tmp_path / "list.ckpt"
    torch.save([1, 2], listed)
    with pytest.raises(CatdogError, match="not a checkpoint"):
        read_checkpoint(listed)


def test_image_reader_is_load_rgb(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(BadImageError, match="zero-byte"):
        read_image(tmp_path / "empty.png")
    import cv2

    cv2.imwrite(str(tmp_path / "ok.png"), np.zeros((3, 4, 3), np.uint8))
    assert read_image(tmp_path / "ok.png").shape == (3, 4, 3)


def test_as_bool() -> None:
    assert [as_bool(v) for v in (True, "true", "False", "1", 0, None, float("nan"), "maybe")] == [
        True, True, False, True, False, None, None, None
    ]


def test_predictions_class_columns_stay_text(tmp_path: Path) -> None:
    from catdog.report import read_predictions

    file = tmp_path / "predictions.csv"
    file.write_text("path,true,pred,pred_gradcam,p_0,p_1,correct,overlay\na.png,1,0,1,0.6,0.4,False,x.jpg\nb.png,,1,1,0.2,0.8,,y.jpg\n")
    frame = read_predictions(file)
    assert frame["pred"].tolist() == ["0", "1"] and frame["pred_gradcam"].tolist() == ["1", "1"]
    assert frame["true"].tolist() == ["1", None] and frame["correct"].tolist() == [False, None]
    assert frame["p_0"].tolist() == [0.6, 0.2]


def test_a_table_with_a_thousand_class_columns_is_read_in_one_piece(tmp_path: Path) -> None:
    # ImageNet mode writes 1,001 p_ columns: a table left in per-column pieces made pandas warn
    # (PerformanceWarning: highly fragmented) on the report's reset_index.
    import warnings

    import pandas as pd

    from catdog.report import read_predictions, restrict_to_paths

    names = [f"class {i}" for i in range(1001)]
    frame = pd.DataFrame({"path": ["a.jpg", "b.jpg"], "true": ["", ""], "pred": names[:2], "loss": ["", ""]})
    frame = pd.concat([frame, pd.DataFrame({f"p_{n}": [0.001, 0.002] for n in names})], axis=1)
    frame.drop(columns="pred").to_csv(tmp_path / "incomplete.csv", index=False)
    with pytest.raises(CatdogError, match=r"lacks column\(s\) pred,? .*\.\.\. \(992 more\)\)") as error:
        read_predictions(tmp_path / "incomplete.csv")
    assert "\n" not in str(error.value) and len(str(error.value)) < 600  # one readable line
    frame["overlay"] = ["a.jpg", "b.jpg"]
    frame.to_csv(tmp_path / "predictions.csv", index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.PerformanceWarning)
        table = restrict_to_paths(read_predictions(tmp_path / "predictions.csv"), ["b.jpg", "a.jpg"])
    assert table["path"].tolist() == ["b.jpg", "a.jpg"] and table["p_class 1000"].tolist() == [0.002, 0.001]


def test_csv_text_prefixes(tmp_path: Path) -> None:
    """A name ending in * keeps every column starting so as text (per-method predictions: pred_gradcam)."""
    file = tmp_path / "p.csv"
    file.write_text("path,pred_cam,pred_gradcam,predx,p_0\na.png,0,1,2,3\n")
    table = read_csv(file, text=["path", "pred_*"])
    assert table["pred_cam"].tolist() == ["0"] and table["pred_gradcam"].tolist() == ["1"]
    assert table["predx"].tolist() == [2.0] and table["p_0"].tolist() == [3.0]
    assert all(isinstance(v, str) for v in read_csv(file, text="*").iloc[0])

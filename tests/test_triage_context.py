"""Context reliance: keep / remove the highlighted region, survival, "right for the wrong reason", aggregation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import ChannelNet
from PIL import Image
from torch import nn

from catdog.errors import CatdogError
from catdog.maps.explainers import ExactCAM, Explanation
from catdog.maps.geometry import grid_centres
from catdog.quality.faithfulness import perturbation_baseline
from catdog.triage.context import (
    CONTEXT_COLUMNS,
    ContextReliance,
    ContextSettings,
    add_verdicts,
    run_context,
    summarize_context,
    write_context,
)

SIDE = 16


class TopLeft(nn.Module):
    """Class 1's logit is 4x the energy of the top-left 8x8 quadrant, class 0's is 2: a decision we know."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = 4 * x[:, :, :8, :8].pow(2).mean(dim=(1, 2, 3))
        return torch.stack([torch.full_like(score, 2.0), score], dim=1)


def _board(batch: int) -> torch.Tensor:
    board = (torch.arange(SIDE)[:, None] + torch.arange(SIDE)[None, :]) % 2 * 2.0 - 1
    return board.expand(batch, 3, SIDE, SIDE).clone()


def _quadrant(top: bool, left: bool) -> torch.Tensor:
    region = torch.zeros(SIDE, SIDE, dtype=torch.bool)
    rows = slice(0, 8) if top else slice(8, SIDE)
    cols = slice(0, 8) if left else slice(8, SIDE)
    region[rows, cols] = True
    return region


def _reference(model: nn.Module, x: torch.Tensor, region: torch.Tensor, baseline: torch.Tensor, pred: int) -> dict:
    """Keep / remove by hand: the region as a boolean mask, one image at a time."""
    keep = torch.where(region, x, baseline)
    remove = torch.where(region, baseline, x)
    out = {}
    for name, image in (("keep", keep), ("remove", remove)):
        probs = model(image[None]).softmax(dim=1)[0]
        out[f"{name}_region_p"] = float(probs[pred])
        out[f"survives_{name}"] = bool(probs.argmax() == pred)
    return out


@pytest.mark.parametrize("baseline", ["blur", "mean"])
def test_keep_and_remove_the_highlighted_quadrant_against_a_hand_computation(baseline: str) -> None:
    model = TopLeft()
    x = _board(2)
    logits = model(x)
    assert logits.argmax(dim=1).tolist() == [1, 1]  # the whole board: class 1 (4 > 2)
    # Maps at the input's resolution (identity geometry): image 0's map highlights the top-left quadrant,
    # where the evidence is; image 1's map highlights the bottom-right one, where it is not.
    right, wrong = _quadrant(True, True).float(), _quadrant(False, False).float()
    maps = torch.stack([right, wrong])[:, None]
    explained = Explanation(logits, torch.tensor([[1], [1]]), maps)
    settings = ContextSettings(area=0.25, baseline=baseline, batch_size=3)
    rows = ContextReliance(model, settings, grid_centres((SIDE, SIDE), (SIDE, SIDE))).columns(x, explained)
    base = perturbation_baseline(x, baseline) if baseline == "blur" else torch.zeros_like(x)
    for row, region, image, base_image in zip(rows, (right, wrong), x, base):
        expected = _reference(model, image, region.bool(), base_image, 1)
        assert row["survives_keep"] == expected["survives_keep"]
        assert row["survives_remove"] == expected["survives_remove"]
        assert row["keep_region_p"] == pytest.approx(expected["keep_region_p"], abs=1e-4)
        assert row["remove_region_p"] == pytest.approx(expected["remove_region_p"], abs=1e-4)
        assert row["region_area"] == pytest.approx(0.25)
    # The right map: the prediction lives in its region. The wrong map: it lives outside it.
    assert (rows[0]["survives_keep"], rows[0]["survives_remove"]) == (True, False)
    assert (rows[1]["survives_keep"], rows[1]["survives_remove"]) == (False, True)


def test_right_for_the_wrong_reason_flags_only_correct_predictions() -> None:
    frame = pd.DataFrame(
        {
            "path": list("abcdef"),
            "label": ["dog", "dog", "cat", "dog", None, "cat"],
            "pred": ["dog", "dog", "dog", "dog", "dog", "cat"],
            "survives_keep": [False, True, False, False, False, True],
            "survives_remove": [True, True, True, False, True, False],
        }
    )
    flagged = add_verdicts(frame)
    assert flagged["correct"].tolist()[:4] == [True, True, False, True]
    assert pd.isna(flagged.loc[4, "correct"]) and pd.isna(flagged.loc[4, "right_for_wrong_reason"])
    # a: correct, survives removing its region but not keeping only it; c: the same pattern, but wrong.
    assert flagged["right_for_wrong_reason"].tolist()[:4] == [True, False, False, False]
    assert flagged.loc[5, "right_for_wrong_reason"] == False  # noqa: E712 (a numpy/pandas bool)


def test_summaries_per_class_and_per_slice_match_pandas() -> None:
    rng = np.random.default_rng(0)
    n = 40
    frame = add_verdicts(
        pd.DataFrame(
            {
                "path": [f"{i}.jpg" for i in range(n)],
                "label": rng.choice(["cat", "dog"], n),
                "pred": rng.choice(["cat", "dog"], n),
                "keep_region_p": rng.uniform(0, 1, n),
                "remove_region_p": rng.uniform(0, 1, n),
                "survives_keep": rng.random(n) < 0.6,
                "survives_remove": rng.random(n) < 0.5,
                "slice": rng.integers(0, 3, n),
            }
        )
    )
    by_class = summarize_context(frame, "label").set_index("label")
    for name, group in frame.groupby("label"):
        correct = group[group["correct"].astype(bool)]
        assert by_class.loc[name, "images"] == len(group)
        assert by_class.loc[name, "survives_keep"] == pytest.approx(group["survives_keep"].mean(), abs=1e-4)
        assert by_class.loc[name, "survives_remove"] == pytest.approx(group["survives_remove"].mean(), abs=1e-4)
        assert by_class.loc[name, "keep_region_p"] == pytest.approx(group["keep_region_p"].mean(), abs=1e-4)
        wrong_reason = int((correct["survives_remove"] & ~correct["survives_keep"]).sum())
        assert by_class.loc[name, "right_for_wrong_reason"] == wrong_reason
        assert by_class.loc[name, "right_for_wrong_reason_rate"] == pytest.approx(wrong_reason / len(correct), abs=1e-4)
    assert by_class.loc["all", "images"] == n
    by_slice = summarize_context(frame, "slice")
    assert sorted(by_slice["slice"].astype(str)) == ["0", "1", "2", "all"]
    with pytest.raises(CatdogError, match="no column 'split'"):
        summarize_context(frame, "split")


def test_settings_are_checked() -> None:
    cases = ((dict(area=0.0), "context.area"), (dict(area=1.0), "context.area"), (dict(baseline="grey"), "baseline"))
    for bad, match in cases:
        values = dict(area=0.25, baseline="blur", batch_size=8) | bad
        with pytest.raises(CatdogError, match=match):
            ContextSettings(**values).check()


def _write(path: Path, image: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return str(path)


def test_run_context_on_images_matches_the_columns_of_each_batch(tmp_path: Path) -> None:
    # Red objects on green or blue surroundings: the classes are read from colours at known places.
    rng = np.random.default_rng(1)
    rows = []
    for i in range(6):
        image = np.zeros((SIDE, SIDE, 3), dtype=np.uint8)
        image[..., int(rng.integers(1, 3))] = 160
        y, x = rng.integers(0, SIDE - 6, 2)
        image[y : y + 6, x : x + 6] = (255, 0, 0)
        rows.append(
            {
                "path": _write(tmp_path / f"img{i}.png", image),
                "label": ["red", "green", "blue"][i % 3],
                "split": "train",
            }
        )
    (tmp_path / "broken.png").write_bytes(b"")
    rows.append({"path": str(tmp_path / "broken.png"), "label": "red", "split": "test"})
    images = pd.DataFrame(rows)

    def transform(rgb: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.array(rgb)).permute(2, 0, 1).float() / 255

    net = ChannelNet(cell=4).eval()
    explainer = ExactCAM(net, "features", "fc")
    centres = grid_centres((4, 4), (SIDE, SIDE))
    settings = ContextSettings(area=0.25, baseline="blur", batch_size=4)
    frame, skipped = run_context(net, explainer, transform, images, ["red", "green", "blue"], centres, settings)
    assert len(frame) == 6 and skipped["path"].tolist() == [str(tmp_path / "broken.png")]
    assert set(CONTEXT_COLUMNS) <= set(frame.columns) and frame["split"].tolist() == ["train"] * 6
    x = torch.stack([transform(np.asarray(Image.open(p).convert("RGB"))) for p in frame["path"]])
    explained = explainer.explain(x, topk=1)
    direct = ContextReliance(net, settings, centres).columns(x, explained)
    for (_, row), ref in zip(frame.iterrows(), direct):
        assert row["survives_keep"] == ref["survives_keep"] and row["survives_remove"] == ref["survives_remove"]
        assert row["keep_region_p"] == pytest.approx(ref["keep_region_p"], abs=1e-4)
    assert frame["pred"].tolist() == [["red", "green", "blue"][i] for i in explained.logits.argmax(1).tolist()]
    out = write_context(frame, tmp_path / "out")
    assert out == tmp_path / "out" / "context.csv" and len(pd.read_csv(out)) == 6


@pytest.mark.slow
def test_triage_writes_context_csv_summary_pictures_and_the_report_section(tmp_path: Path) -> None:
    from test_triage import colour_images, save_run, splits_of, triage_cfg

    from catdog.triage.pipeline import triage

    data = tmp_path / "data"
    images = colour_images(data, 20)
    rows = [(p, label, s) for (p, label), s in zip(images, splits_of(len(images)))]
    run = save_run(tmp_path / "run", rows, data, seed=3)
    summary = triage(triage_cfg(run, tmp_path / "triage", "context.pictures=50"))
    out = Path(summary["out_dir"])
    context = pd.read_csv(out / "context.csv")
    tested = [p for p, _, s in rows if s == "test"]
    assert context["path"].tolist() == tested and set(context["split"]) == {"test"}
    assert set(CONTEXT_COLUMNS) <= set(context.columns) and {"key", "slice", "pred", "correct"} <= set(context.columns)
    saved = json.loads((out / "summary.json").read_text())["context"]
    flagged = context[context["right_for_wrong_reason"].astype(str) == "True"]
    assert saved["images"] == len(tested) and saved["overall"]["right_for_wrong_reason"] == len(flagged)
    assert sorted(saved["pictures"]) == sorted(flagged["path"])
    assert all((out / rel).is_file() for rel in saved["pictures"].values())
    assert {row["label"] for row in saved["per_class"]} == set(context["label"])
    assert {str(row["slice"]) for row in saved["per_slice"]} == {str(s) for s in context["slice"]}  # "0", not "0.0"
    page = (out / "report" / "index.html").read_text()
    assert "right for the wrong reason" in page and "Per class" in page
    everything = triage(triage_cfg(run, tmp_path / "all", "context.split=all", "context.pictures=0"))
    assert everything["context"]["images"] == len(rows) and everything["context"]["pictures"] == {}
    off = triage(triage_cfg(run, tmp_path / "off", "triage.context=false"))
    assert off["context"] is None and not (Path(off["out_dir"]) / "context.csv").exists()
    with pytest.raises(CatdogError, match="context.split=dogs is not one of"):
        triage(triage_cfg(run, tmp_path / "bad", "context.split=dogs"))


def test_pictures_show_the_photo_its_map_and_both_copies(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from catdog.data import load_rgb
    from catdog.triage.context import draw_context_pictures

    image = np.zeros((SIDE, SIDE, 3), dtype=np.uint8)
    image[:6, :6] = (255, 0, 0)
    path = _write(tmp_path / "a b.png", image)
    model = SimpleNamespace(
        hparams=SimpleNamespace(
            class_names=["red", "green", "blue"], image_size=SIDE, mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0]
        )
    )
    net = ChannelNet(cell=4).eval()
    reliance = ContextReliance(
        net, ContextSettings(area=0.25, baseline="mean", batch_size=2), grid_centres((4, 4), (SIDE, SIDE))
    )
    written = draw_context_pictures(
        model, ExactCAM(net, "features", "fc"), reliance, [path, str(tmp_path / "gone.png")], tmp_path
    )
    assert list(written) == [path]  # an unreadable photo is left out
    picture = load_rgb(tmp_path / written[path])
    assert picture.shape[1] > 3.5 * picture.shape[0]  # four square panels side by side

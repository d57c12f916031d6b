"""scripts/evaluate.py: any checkpoint, on its run's split or on a plain folder, checked against
predictions computed here independently (load_classifier + the eval transform)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import make_config, run_command_here, run_script, script_env
from torch.utils.data import DataLoader

from catdog.data import ImageDataset, build_transform
from catdog.errors import CatdogError
from catdog.models import load_classifier
from catdog.pipelines.evaluate import evaluate


@pytest.fixture
def run(tiny_run: Path) -> Path:
    """The session's tiny trained run (conftest.py)."""
    return tiny_run


def _expected(checkpoint: Path, paths: list[str], labels: list[str]) -> tuple[float, list[str]]:
    model = load_classifier(checkpoint)
    hp = model.hparams
    dataset = ImageDataset(paths, None, build_transform(hp.image_size, hp.mean, hp.std, train=False))
    images = next(iter(DataLoader(dataset, batch_size=len(dataset))))[0]
    with torch.no_grad():
        preds = [hp.class_names[i] for i in model(images).argmax(1).tolist()]
    return sum(p == t for p, t in zip(preds, labels)) / len(labels), preds


def _cfg(*overrides: str):
    # precision=32: the references here are computed in float32 (the default, auto, is bf16 on bf16 CPUs).
    return make_config("evaluate", ["progress=false", "data.num_workers=0", "precision=32", *overrides])


def test_evaluate_a_run_on_its_own_split(run: Path) -> None:
    result = evaluate(_cfg(f"ckpt={run}", "data.split=val"))
    out = Path(result["out_dir"])
    assert out.parent == run / "evaluate"
    split = pd.read_csv(run / "split.csv")
    val = split[split["split"] == "val"]
    accuracy, preds = _expected(run / "checkpoints" / "best.ckpt", val["path"].tolist(), val["label"].tolist())
    metrics = json.loads((out / "test_metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(accuracy)
    assert metrics["num_images"] == len(val) and sum(map(sum, metrics["confusion_matrix"])) == len(val)
    assert set(metrics["per_class"]) == set(split["label"])  # every class of the run
    assert {"precision", "recall", "support"} <= set(metrics["per_class"]["cat"])
    assert (out / "confusion_matrix.png").is_file()
    assert pd.read_csv(out / "predictions.csv")["pred"].tolist() == preds
    # A second evaluation never overwrites the first; the malloc tuning (as explain's) is recorded.
    again = evaluate(_cfg(f"ckpt={run}", "data.split=val", "tune_malloc=false"))
    assert again["out_dir"] != result["out_dir"] and (out / "test_metrics.json").is_file()
    assert metrics["malloc"] == result["malloc"] and "tuned" in metrics["malloc"]
    assert again["malloc"] == {"tuned": False, "reason": "tune_malloc=false"}
    assert pd.read_csv(Path(again["out_dir"]) / "predictions.csv")["pred"].tolist() == preds


def test_evaluate_any_checkpoint_on_a_plain_folder_via_the_script(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    folder = tmp_path / "photos"
    split = pd.read_csv(run / "split.csv")
    for path, label in zip(split["path"][:10], split["label"][:10]):
        (folder / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / label / Path(path).name)
    (folder / "cat" / "broken.png").write_bytes(b"")
    (folder / "loose.png").write_bytes((folder / "cat").iterdir().__next__().read_bytes())
    out = tmp_path / "eval"
    # scripts/evaluate.py's command in this process (the slow test below runs the script as a child).
    status = run_command_here(
        monkeypatch, tmp_path, "evaluate", f"ckpt={run / 'checkpoints' / 'last.ckpt'}", f"data.root={folder}",
        f"out_dir={out}", "progress=false", "data.num_workers=0", "precision=32",
    )
    assert status == 0, capfd.readouterr().err[-2000:]
    metrics = json.loads((out / "test_metrics.json").read_text())
    predictions = pd.read_csv(out / "predictions.csv")
    accuracy, _ = _expected(
        run / "checkpoints" / "last.ckpt", predictions["path"].tolist(), predictions["true"].tolist()
    )
    assert metrics["num_images"] == 10 and metrics["accuracy"] == pytest.approx(accuracy)
    reasons = pd.read_csv(out / "skipped.csv").set_index("path")["reason"]
    assert "zero-byte" in reasons[str(folder / "cat" / "broken.png")]
    assert "no label" in reasons[str(folder / "loose.png")]


@pytest.mark.slow
def test_the_evaluate_script_runs_as_a_child(run: Path, tmp_path: Path) -> None:
    """scripts/evaluate.py as a user runs it, in a process of its own (the tests above call its command here)."""
    out = tmp_path / "eval"
    args = (f"ckpt={run}", "data.split=val", f"out_dir={out}", "progress=false", "data.num_workers=0")
    result = run_script("evaluate", *args, cwd=tmp_path, env=script_env(), timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((out / "test_metrics.json").read_text())["num_images"] > 0


def test_evaluate_folder_without_class_folders_is_one_clear_error(run: Path, tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    shutil.copy(pd.read_csv(run / "split.csv")["path"][0], tmp_path / "x" / "a.png")
    with pytest.raises(CatdogError, match="no readable labelled images"):
        evaluate(_cfg(f"ckpt={run}", f"data.root={tmp_path / 'x'}"))


# --- issue 19 item 1: overwrite=true never deletes inputs, refused before the evaluation runs --------
def test_overwrite_of_the_input_folder_is_refused_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pytorch_lightning as pl
    from helpers import file_bytes, one_line, users_photos_and_run

    photos, run = users_photos_and_run(tmp_path)
    before = file_bytes(tmp_path)
    monkeypatch.setattr(pl.Trainer, "test", lambda *a, **k: pytest.fail("evaluated before refusing out_dir"))
    for out_dir in (photos, run, tmp_path):
        overrides = [f"ckpt={run}", f"data.root={photos}", f"out_dir={out_dir}", "overwrite=true", "data.num_workers=0"]
        cfg = make_config("evaluate", overrides)
        with pytest.raises(CatdogError, match="cannot be replaced") as err:
            evaluate(cfg)
        one_line(err)
    assert file_bytes(tmp_path) == before

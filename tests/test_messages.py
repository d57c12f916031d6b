"""Issue 20 item 9: messages that name the fix and say what was picked; failed runs leave no empty folders;
a sweep ends with a table of its jobs and the compare command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import run_command_here, tiny_train_cfg

from catdog.callbacks.sweep_summary import sweep_table
from catdog.errors import CatdogError
from catdog.pipelines.train import train
from catdog.runs import resolve_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def _ckpt(path: Path, age_s: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    stamp = time.time() - age_s
    os.utime(path, (stamp, stamp))
    return path


def test_latest_looks_in_multirun_too_and_says_what_it_picked(tmp_path: Path, capsys) -> None:
    _ckpt(tmp_path / "runs" / "train" / "A" / "checkpoints" / "best.ckpt", 600)
    job = _ckpt(tmp_path / "multirun" / "train" / "S" / "1" / "checkpoints" / "best.ckpt", 60)
    assert resolve_checkpoint("latest", tmp_path / "runs", tmp_path / "multirun") == job
    assert capsys.readouterr().out.strip() == f"ckpt=latest: {job} (the newest of 2 run(s), written 1 min ago)"
    with pytest.raises(CatdogError, match=r"below .*nothing or .*none: train first"):
        resolve_checkpoint("latest", tmp_path / "nothing", tmp_path / "multirun" / "none")


def test_a_run_that_fails_before_its_first_checkpoint_leaves_no_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    # scripts/train.py's command in this process (test_cli.py and test_resume.py run the script as a child).
    status = run_command_here(monkeypatch, tmp_path, "train", "data=folder")
    assert status == 2 and "data.root is required" in capfd.readouterr().err
    assert not (tmp_path / "runs" / "train").exists() or list((tmp_path / "runs" / "train").iterdir()) == []


def test_a_failed_run_keeps_a_folder_it_did_not_create(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(CatdogError):
        train(tiny_train_cfg(tmp_path, "data=folder", f"data.root={tmp_path / 'missing'}", demo=False))
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"


def test_sweep_ends_with_a_table_of_its_jobs_and_the_compare_command(tmp_path: Path) -> None:
    sweep = tmp_path / "multirun" / "train" / "2026-01-01_00-00-00"
    for num, (lr, acc) in enumerate([("0.001", 0.9), ("0.0003", 0.8)]):
        job = sweep / str(num)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(f"- data=folder\n- optimizer.lr={lr}\n")
        _ckpt(job / "checkpoints" / "best.ckpt", 0)
        (job / "metrics.csv").write_text("epoch,val/acc\n0,0.5\n1,0.75\n")
        (job / "test_metrics.json").write_text(json.dumps({"accuracy": acc, "best_epoch": 2}))
    (sweep / "2" / ".hydra").mkdir(parents=True)
    lines = sweep_table(sweep).splitlines()
    assert lines[0] == f"Sweep {sweep}: 3 job(s)"
    assert lines[1] == "  every job: data=folder"  # shared by the jobs: said once; the table shows what differs
    lines = lines[1:]
    assert lines[2].split() == ["0", "optimizer.lr=0.001", "2", "0.750", "90.00%"]
    assert lines[3].split() == ["1", "optimizer.lr=0.0003", "2", "0.750", "80.00%"]
    assert lines[4].split()[:2] == ["2", "-"] and "failed: no checkpoint" in lines[4]
    assert lines[-1] == f"Compare them on the same images: catdog compare sweep={sweep}"


def test_a_1001_class_weights_file_says_how_it_is_normalised(tmp_path: Path, caplog) -> None:
    import torch
    import torchvision

    from catdog.models import ClassifierModule

    weights = tmp_path / "mobilenet_tf_slim.pth"
    torch.save(torchvision.models.resnet18(num_classes=1001).state_dict(), weights)
    with caplog.at_level("WARNING"):
        module = ClassifierModule(arch="resnet18", class_names=["cat", "dog"], weights=str(weights), image_size=32)
    assert module.hparams.mean == [0.485, 0.456, 0.406]  # unchanged behaviour, now said
    assert any("1001-class head" in r.message and "model.mean=[0.5,0.5,0.5]" in r.message for r in caplog.records)
    caplog.clear()
    with caplog.at_level("WARNING"):
        ClassifierModule(arch="resnet18", class_names=["cat", "dog"], weights=str(weights), image_size=32,
                         mean=[0.5] * 3, std=[0.5] * 3)
    assert not any("1001-class" in r.message for r in caplog.records)


@pytest.mark.slow
def test_a_real_sweep_prints_its_table_and_the_compare_command(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "catdog",
            "train",
            "-m",
            f"data.root={tmp_path / 'demo'}",
            "data.num_per_class=12",
            "data.image_size=32",
            "data.num_workers=0",
            "trainer.max_epochs=1",
            "seed=1,2",
            "~callbacks.rich_progress_bar",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=900,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Sweep multirun/train/"))
    assert [line.split()[:2] for line in lines[start + 3 : start + 5]] == [["0", "seed=1"], ["1", "seed=2"]]
    assert lines[-1].startswith("Compare them on the same images: catdog compare sweep=multirun/train/")
    assert lines[start + 2].split() == ["job", "overrides", "best", "epoch", "val", "acc", "test", "acc"]

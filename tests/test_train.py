"""Train pipeline end to end on tiny demo data: run folder contents, checkpoint contract, reload."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import HEAD_ONLY, make_config, one_line, run_command_here, tiny_train_cfg, write_images
from torch.utils.data import DataLoader

from catdog.data import DEMO_CLASSES, ImageDataset, build_transform
from catdog.errors import CatdogError
from catdog.models import load_classifier
from catdog.pipelines.train import train


def test_train_writes_the_run_folder_and_a_reloadable_checkpoint(tiny_training: dict, tiny_run: Path) -> None:
    summary, run = tiny_training, tiny_run
    for name in ("split.csv", "skipped.csv", "metrics.csv", "curves.png", "test_metrics.json", "confusion_matrix.png"):
        assert (run / name).is_file(), name
    assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert any((run / "tensorboard").rglob("events.out.tfevents.*"))

    split = pd.read_csv(run / "split.csv")
    classes = sorted(DEMO_CLASSES)
    assert set(split["split"]) == {"train", "val", "test"} and len(split) == 12 * len(classes)
    assert sorted(split["label"].unique()) == classes

    metrics = json.loads((run / "test_metrics.json").read_text())
    assert metrics["class_names"] == classes
    assert sum(map(sum, metrics["confusion_matrix"])) == (split["split"] == "test").sum()
    assert set(metrics["per_class"]) == set(classes)
    assert summary["best_checkpoint"].endswith("best.ckpt")

    # The checkpoint alone rebuilds model and preprocessing, loads with weights_only, predicts the same.
    raw = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    hp = raw["hyper_parameters"]
    assert hp["arch"] == "resnet18" and hp["class_names"] == classes and hp["image_size"] == 32
    assert len(hp["mean"]) == 3 and len(hp["std"]) == 3
    assert hp["data"]["split_csv"] == str((run / "split.csv").resolve())
    assert hp["feature_layer"] == "layer4" and hp["fc_layer"] == "fc"

    model = load_classifier(run / "checkpoints" / "best.ckpt")
    test = split[split["split"] == "test"]
    dataset = ImageDataset(test["path"].tolist(), None, build_transform(32, hp["mean"], hp["std"], train=False))
    images = next(iter(DataLoader(dataset, batch_size=len(dataset))))[0]
    again = load_classifier(run / "checkpoints" / "best.ckpt")
    with torch.no_grad():
        assert torch.equal(model(images), again(images))
        expected = torch.tensor([metrics["class_names"].index(label) for label in test["label"]])
        accuracy = (model(images).argmax(1) == expected).float().mean().item()
    assert accuracy == pytest.approx(metrics["accuracy"])


def test_bad_images_are_skipped_and_listed_before_training(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    write_images(root, {"cats": 20, "dogs": 20}, size=(40, 40))
    (root / "cats" / "truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF")
    (root / "dogs" / "zero.png").write_bytes(b"")
    cfg = tiny_train_cfg(
        tmp_path, "data=folder", f"data.root={root}", "model.weights=null", "test=false", HEAD_ONLY, demo=False
    )
    train(cfg)
    skipped = pd.read_csv(tmp_path / "run" / "skipped.csv")
    assert sorted(Path(p).name for p in skipped["path"]) == ["truncated.jpg", "zero.png"]
    split = pd.read_csv(tmp_path / "run" / "split.csv")
    assert len(split) == 40 and sorted(split["label"].unique()) == ["cats", "dogs"]


def test_single_class_is_a_clear_error(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    write_images(root, {"cats": 4}, size=(40, 40))
    with pytest.raises(CatdogError, match=r"only one class \('cats'\)"):
        train(tiny_train_cfg(tmp_path, "data=folder", f"data.root={root}", "model.weights=null", demo=False))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data=folder", "data.root=/no/such/folder", "model.weights=null"], "does not exist"),
        (["data=folder"], "data.root is required"),
        (["data.rooot=x"], "data.rooot"),  # a typo in a config key: Hydra's own one-line error
    ],
)
def test_cli_user_mistakes_are_one_line(
    tmp_path: Path, overrides: list[str], message: str, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    # scripts/train.py's command in this process (test_cli.py and test_resume.py run the script as a child).
    status = run_command_here(monkeypatch, tmp_path, "train", f"paths.runs_dir={tmp_path}", *overrides)
    stderr = capfd.readouterr().err
    assert status != 0
    assert message in stderr
    assert "Traceback" not in stderr


# --- #9 regressions -------------------------------------------------------------------------


def test_a_class_whose_images_are_all_unreadable_is_an_error_not_a_vanished_class(tmp_path: Path) -> None:
    """#9 item 2: the class used to disappear from class_names, silently training a 2-class model."""
    root = tmp_path / "photos"
    write_images(root, {"birds": 0, "cats": 12, "dogs": 12}, size=(40, 40))
    for i in range(4):
        (root / "birds" / f"b{i}.jpg").write_bytes(b"")
    cfg = tiny_train_cfg(tmp_path, "data=folder", f"data.root={root}", "model.weights=null", demo=False)
    with pytest.raises(CatdogError, match=r"no readable image of class\(es\) \['birds'\]"):
        train(cfg)


def test_sweep_objective_is_the_best_validation_score_not_test_accuracy(tiny_training: dict, tiny_run: Path) -> None:
    """#9 item 12: scripts/train.py returns summary['objective'] to Hydra sweepers."""
    metrics = pd.read_csv(tiny_run / "metrics.csv").dropna(subset=["val/acc"])
    assert metrics["epoch"].nunique() == 2  # two val/acc to choose from
    assert tiny_training["objective"] == pytest.approx(metrics["val/acc"].max())
    # scripts/train.py and `catdog train` run the registry's train command, whose task returns the objective.
    from catdog.cli import COMMANDS

    assert COMMANDS["train"].result == "objective"


def test_resume_reuses_the_split_of_the_run_it_continues(tmp_path: Path) -> None:
    """#9 item 13: resuming after images were added trains on exactly the original split."""
    train(tiny_train_cfg(tmp_path, "test=false", HEAD_ONLY))
    original = (tmp_path / "run" / "split.csv").read_text()
    write_images(tmp_path / "demo" / "cat", {"extra": 6}, size=(32, 32))  # new images appear
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    cfg = tiny_train_cfg(tmp_path, "test=false", HEAD_ONLY, "trainer.max_epochs=2", f"ckpt_path={last}",
                         f"paths.output_dir={tmp_path / 'resumed'}")
    train(cfg)
    assert (tmp_path / "resumed" / "split.csv").read_text() == original
    hp = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert hp["epoch"] == 1  # it continued (epoch 0 came from the checkpoint)


def test_checkpointing_and_early_stopping_watch_the_same_metric_and_can_fire() -> None:
    """#9 item 15: early stopping watched val/loss with patience 5 in 5-epoch runs."""
    cfg = make_config("train", [])
    checkpoint, stopping = cfg.callbacks.model_checkpoint, cfg.callbacks.early_stopping
    assert (checkpoint.monitor, checkpoint.mode) == (stopping.monitor, stopping.mode)
    assert stopping.patience < cfg.trainer.max_epochs


def test_confusion_plot_does_not_claim_a_best_checkpoint_when_there_is_none(tmp_path: Path, monkeypatch) -> None:
    """#9 item 15: without a checkpoint callback the final weights are tested; say so."""
    import catdog.pipelines.train as pipeline

    titles: list[str] = []
    real = pipeline.plot_confusion_matrix

    def recording(*args, **kwargs):
        titles.append(kwargs["title"])
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "plot_confusion_matrix", recording)
    train(tiny_train_cfg(tmp_path, "~callbacks.model_checkpoint", "~callbacks.early_stopping", HEAD_ONLY))
    metrics = json.loads((tmp_path / "run" / "test_metrics.json").read_text())
    assert metrics["checkpoint"] is None and metrics["weights"] == "final weights"
    assert "best checkpoint" not in titles[0] and "final weights" in titles[0]


class _Exploit:
    """Unpickling this runs code (writes a marker file): what a hostile checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def test_resume_refuses_a_checkpoint_that_would_run_code(tmp_path: Path) -> None:
    """#9 item 16: Trainer.fit(ckpt_path=...) loaded checkpoints without weights_only."""
    marker, evil = tmp_path / "pwned", tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"class_names": ["a", "b"]}, "x": _Exploit(marker)}, evil)
    with pytest.raises(CatdogError, match="could not be read as a torch file"):
        train(tiny_train_cfg(tmp_path, f"ckpt_path={evil}"))
    assert not marker.exists()


@pytest.mark.parametrize(
    ("key", "target"),
    [
        ("optimizer", "builtins.exec"),
        ("optimizer", "os.system"),
        ("scheduler", "torch.optim.AdamW"),
        ("optimizer", "torch.optim.lr_scheduler.StepLR"),
        ("scheduler", "subprocess.Popen"),
    ],
)
def test_checkpoint_optimizer_and_scheduler_targets_are_restricted_to_torch(
    tiny_run: Path, tmp_path: Path, key: str, target: str
) -> None:
    """#9 item 16: a checkpoint's optimizer/scheduler _target_ is instantiated on resume."""
    checkpoint = torch.load(tiny_run / "checkpoints" / "last.ckpt", weights_only=True)
    checkpoint["hyper_parameters"][key] = {"_target_": target, "lr": 0.1}
    evil = tmp_path / "evil.ckpt"
    torch.save(checkpoint, evil)
    with pytest.raises(CatdogError, match=rf"{key}._target_='{target}' is not a torch.optim"):
        load_classifier(evil)


def test_lr_finder_plots_into_the_run_folder_and_trains_with_its_suggestion(tmp_path: Path) -> None:
    summary = train(
        tiny_train_cfg(
            tmp_path,
            HEAD_ONLY,  # the range test over the head alone: the same finder, far cheaper steps
            "lr_find.enabled=true",
            "lr_find.num_training=20",
            "lr_find.max_lr=0.01",
            "test=false",
            "data.num_per_class=20",
        )
    )
    found = summary["lr_find"]
    assert (tmp_path / "run" / "lr_find.png").stat().st_size > 0
    assert found["suggestion"] is not None and found["applied"]
    hp = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["hyper_parameters"]
    assert hp["optimizer"]["lr"] == pytest.approx(found["suggestion"])


def test_reused_run_folder_is_refused_before_training(tmp_path: Path) -> None:
    """Issue #19 item 10: training into a run folder that holds checkpoints saved best-v1.ckpt beside the old
    best.ckpt, which later stages loaded with the new split.csv."""
    cfg = tiny_train_cfg(tmp_path)
    old = tmp_path / "run" / "checkpoints" / "best.ckpt"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"an earlier run's checkpoint")
    with pytest.raises(CatdogError, match="hydra.run.dir") as err:
        train(cfg)
    one_line(err)
    assert old.read_bytes() == b"an earlier run's checkpoint" and not (tmp_path / "run" / "split.csv").exists()


def test_best_checkpoint_is_overwritten_not_versioned() -> None:
    cfg = make_config("train", [])
    assert cfg.callbacks.model_checkpoint.enable_version_counter is False


# --- issue 19 item 18: the SIGTERM resume command survives the shell and Hydra ---------------------
@pytest.mark.parametrize(
    "last",
    [
        "/runs/train/2026-12-03_14-10-54/checkpoints/last.ckpt",
        "/data/my runs/last.ckpt",
        "/x/it's,odd[1]=2/last.ckpt",
        "/x/back\\slash end\\/last.ckpt",
    ],
)
def test_resume_command_is_quoted_for_the_shell_and_for_hydra(last: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import shlex

    from hydra.core.override_parser.overrides_parser import OverridesParser

    from catdog.pipelines import train as train_module

    typed = ["data.root=/my photos/cats & dogs", "trainer.max_epochs=3"]
    monkeypatch.setattr(train_module, "_task_overrides", lambda: list(typed), raising=False)
    words = shlex.split(train_module._resume_command(Path(last)))
    assert words[:2] == ["python", "scripts/train.py"]
    assert words[2:-1] == typed  # each override back as one word, as the user typed it
    assert OverridesParser.create().parse_override(words[-1]).value() == last
    assert words[-1].startswith("ckpt_path=")

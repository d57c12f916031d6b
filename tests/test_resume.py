"""Exact resume (#11 item 1, #9): SIGTERM mid-epoch, resume from last.ckpt, same final weights.

Everything runs in subprocesses through scripts/train.py, as a user or a scheduler would run it.
The kill is a real SIGTERM, sent by a test callback at a fixed step (tests/sigterm_callback.py).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import run_script, script_env

ROOT = Path(__file__).resolve().parents[1]

# Tiny but complete: dropout (mobilenet_v2), a linear probe epoch then unfreezing, strong
# augmentation, a per-step one-cycle schedule, a decoding worker process.
TINY = [
    "model=mobilenet_v2",
    "model.weights=null",
    "model.freeze_epochs=1",
    "model.label_smoothing=0.1",
    "scheduler=onecycle",
    "data.num_per_class=10",
    "data.image_size=32",
    "data.batch_size=4",
    "data.num_workers=1",
    "data.augment=trivialaugment",
    "trainer.max_epochs=3",
    "trainer.accelerator=cpu",
    "trainer.deterministic=true",
    "+trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "~callbacks.rich_progress_bar",
    "~logger.tensorboard",
    "test=false",
]


def _train(tmp_path: Path, run: str, *overrides: str) -> subprocess.CompletedProcess:
    # The same thread count in every run: bitwise-equal float sums. tests/ on the path: the SIGTERM callback.
    env = script_env(OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], str(ROOT / "tests")])
    args = (f"data.root={tmp_path / 'demo'}", f"hydra.run.dir={tmp_path / run}", *TINY, *overrides)
    return run_script("train", *args, cwd=tmp_path, env=env, timeout=300)


def _weights(checkpoint: Path, key: str = "state_dict") -> dict[str, torch.Tensor]:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)[key]
    return {k: v for k, v in state.items() if k.startswith("net.")}


def _epoch_rows(run: Path) -> pd.DataFrame:
    metrics = pd.read_csv(run / "metrics.csv")
    return metrics.groupby("epoch").last()[["train/loss", "train/acc", "val/loss", "val/acc"]]


# With callbacks.ema the checkpoint's state_dict is the EMA of the weights and current_model_state
# the raw weights: both must come out of the resumed run as out of the uninterrupted one.
EMA = ["callbacks.ema={_target_:catdog.models.EMAWeights,decay:0.9}"]


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], EMA], ids=["plain", "ema"])
def test_sigterm_mid_epoch_then_resume_gives_the_uninterrupted_weights(tmp_path: Path, extra: list[str]) -> None:
    full = _train(tmp_path, "full", *extra)
    assert full.returncode == 0, full.stderr[-2000:]

    # Kill after the first batch of the second epoch (the first one after unfreezing the backbone).
    train_images = (pd.read_csv(tmp_path / "full" / "split.csv")["split"] == "train").sum()
    steps_per_epoch = train_images // 4  # data.batch_size=4, the remainder is dropped
    assert steps_per_epoch >= 2
    kill_step = steps_per_epoch + 1
    killed = _train(
        tmp_path,
        "killed",
        *extra,
        "+callbacks.kill._target_=sigterm_callback.SigtermAtStep",
        f"+callbacks.kill.step={kill_step}",
    )
    assert killed.returncode != 0, "a terminated run must not look finished to a scheduler"
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    assert "Resume with: python scripts/train.py" in killed.stderr
    assert f"ckpt_path={last.resolve()}" in killed.stderr
    state = torch.load(last, map_location="cpu", weights_only=True)
    assert state["global_step"] == kill_step and state["epoch"] == 1  # saved at the step, mid-epoch

    resumed = _train(tmp_path, "resumed", *extra, f"ckpt_path={last}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    for key in ("state_dict", "current_model_state") if extra else ("state_dict",):
        expected = _weights(tmp_path / "full" / "checkpoints" / "last.ckpt", key)
        got = _weights(tmp_path / "resumed" / "checkpoints" / "last.ckpt", key)
        assert expected.keys() == got.keys()
        different = [k for k in expected if not torch.equal(expected[k], got[k])]
        assert not different, f"{key}: {len(different)} tensors differ, first: {different[:3]}"
    if extra:  # the EMA is not the raw weights (else this test would not test it)
        final = tmp_path / "full" / "checkpoints" / "last.ckpt"
        averaged, raw = _weights(final, "state_dict"), _weights(final, "current_model_state")
        assert any(not torch.equal(averaged[k], raw[k]) for k in averaged)
    # The epochs the resumed run logged, including the interrupted one, match the full run's.
    resumed_rows = _epoch_rows(tmp_path / "resumed")
    pd.testing.assert_frame_equal(resumed_rows, _epoch_rows(tmp_path / "full").loc[resumed_rows.index])
    # ... and it trained on exactly the split of the run it continues.
    assert (tmp_path / "resumed" / "split.csv").read_text() == (tmp_path / "killed" / "split.csv").read_text()

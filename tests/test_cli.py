"""Issue 20 items 1 and 9: the installed ``catdog`` command, each command's own --help, did-you-mean."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from catdog import cli

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_pyproject_installs_the_catdog_command_and_it_lists_the_subcommands(capsys) -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["catdog"] == "catdog.cli:main"
    with pytest.raises(SystemExit) as stop:
        cli.main(["--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    for name in ("train", "explain", "evaluate", "compare"):
        assert f"\n  {name} " in out and name in cli.COMMANDS
    assert (cli.config_dir() / "train.yaml").is_file()


def test_an_unknown_command_names_the_closest(capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        cli.main(["trian"])
    assert stop.value.code == 2
    assert (
        capsys.readouterr().err.strip() == "catdog: error: 'trian' is not a catdog command: did you mean catdog train?"
    )


def test_explain_help_lists_explains_settings_not_trains_groups() -> None:
    result = _run("scripts/explain.py", "--help")
    assert result.returncode == 0, result.stderr
    assert "ckpt: ???" in result.stdout and "# a checkpoint file" in result.stdout  # its settings, with comments
    for group in ("experiment:", "optimizer:", "callbacks:", "Configuration groups"):
        assert group not in result.stdout, group
    train = _run("-m", "catdog", "train", "--help")
    assert "  experiment: finetune" in train.stdout and "  model: " in train.stdout


def test_a_typo_in_a_setting_says_did_you_mean() -> None:
    result = _run("scripts/train.py", "trainer.max_epoch=1")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "catdog: error: trainer.max_epoch is not a setting: did you mean trainer.max_epochs? "
        "(+trainer.max_epoch=... would add it as a new key)"
    ]


def test_overrides_that_exist_pass_the_check(tmp_path: Path) -> None:
    folder = cli.config_dir()
    cli.check_overrides(
        folder,
        "train",
        [
            "data=folder",
            "data.root=x",
            "trainer.max_epochs=1",
            "+foo=1",
            "-m",
            "model=resnet18,mobilenet_v2",
            "hydra.job.chdir=false",
            "~callbacks.ema",
        ],
    )
    cli.check_overrides(folder, "explain", ["ckpt=latest", "data.max_images=4", "overlay.alpha=0.3"])
    with pytest.raises(cli.CatdogError, match=r"did you mean data\.max_images\?"):
        cli.check_overrides(folder, "explain", ["data.max_image=4"])
    with pytest.raises(cli.CatdogError, match=r"did you mean model\.weights\?"):
        cli.check_overrides(folder, "train", ["modle.weights=null"])

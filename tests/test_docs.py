"""Every command in the README and in docs/ works: each fenced shell command is checked here.

``python scripts/<name>.py ...`` (also under torchrun or srun): its config is composed with the command's
overrides (placeholders such as ``<timestamp>`` and ``...`` filled in), so a renamed key or option fails;
the cheap explain and evaluate commands also run, on the session's tiny run (slow tier). ``make <target>``:
the target exists. ``ruff``: runs.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import CONF_DIR, ROOT, make_config, write_images
from omegaconf import DictConfig

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "data" / "README.md"]
FENCE = re.compile(r"^```(bash|sh|shell)\n(.*?)^```", re.M | re.S)
SCRIPTS = {p.stem for p in CONF_DIR.glob("*.yaml")}  # each entry-point config has its scripts/<name>.py
# Settings that make a command expensive (several processes, downloads, every method or metric): composed only.
EXPENSIVE = re.compile(
    r"^(devices|num_nodes|weights|metrics|localization|grid|layers)=|imagenet:|method=(scorecam|ablationcam)"
)


def commands() -> list[tuple[str, list[str]]]:
    """(where, argv) of every command in a fenced bash block of the docs; ``a && b`` gives two."""
    found = []
    for doc in DOCS:
        for block in FENCE.finditer(doc.read_text()):
            text = block.group(2).replace("\\\n", " ")
            for line in text.splitlines():
                words = [os.path.expandvars(w) for w in shlex.split(line, comments=True)]  # as the shell does
                while words:
                    cut = words.index("&&") if "&&" in words else len(words)
                    found.append((f"{doc.relative_to(ROOT)}: {line.strip()}", words[:cut]))
                    words = words[cut + 1 :]
    return found


def script_call(argv: list[str]) -> tuple[str, list[str]] | None:
    """The config name and overrides of ``catdog <command> ...`` or ``scripts/<name>.py ...`` (also behind
    torchrun, srun or python); None for anything else, and for help requests."""
    from catdog.cli import COMMANDS

    if argv[0] == "catdog" and len(argv) > 1 and argv[1] in COMMANDS and "--help" not in argv:
        return COMMANDS[argv[1]].config, argv[2:]
    for i, word in enumerate(argv):
        match = re.fullmatch(r"scripts/(\w+)\.py", word)
        if match:
            return match.group(1), argv[i + 1 :]
    return None


def _fill(value: str) -> str:
    """A placeholder (``<timestamp>``, ``...``) as a plain value."""
    return re.sub(r"<[^>]*>|\.\.\.", "X", value)


def compose(name: str, arguments: list[str]) -> DictConfig:
    """The command's config: flags (``-m``, ``--cfg job``) dropped, a sweep's first value taken."""
    sweep = "-m" in arguments or "--multirun" in arguments
    overrides = []
    skip = False
    for word in arguments:
        if skip or word in ("-m", "--multirun"):
            skip = False
            continue
        if word == "--cfg":
            skip = True
            continue
        key, _, value = _fill(word).partition("=")
        if sweep and "," in value and not value.startswith("["):
            value = value.split(",")[0]
        overrides.append(f"{key}={value}")
    return make_config(name, overrides)


ALL = commands()


def test_the_docs_have_commands() -> None:
    where = {w.split(":")[0] for w, _ in ALL}
    assert {"README.md", "docs/training.md", "docs/explain.md", "docs/evaluate-and-compare.md"} <= where
    assert ["make", "demo"] in [argv for _, argv in ALL] and ["make", "test"] in [argv for _, argv in ALL]


@pytest.mark.parametrize(("where", "argv"), ALL, ids=[w for w, _ in ALL])
def test_command_is_valid(where: str, argv: list[str]) -> None:
    call = script_call(argv)
    if call is not None:
        name, arguments = call
        assert name in SCRIPTS and (ROOT / "scripts" / f"{name}.py").is_file(), where
        compose(name, arguments)
        if argv[0] == "catdog":  # its own did-you-mean check of the keys
            from catdog.cli import check_overrides

            check_overrides(CONF_DIR, name, [_fill(a) for a in arguments if a not in ("-m", "--multirun")])
    elif argv[0] == "catdog":  # catdog --help, catdog <command> --help
        from catdog.cli import main

        try:
            main(argv[1:])
        except SystemExit as stop:
            assert stop.code in (0, None), where
    elif argv == ["source", ".venv/bin/activate"]:
        assert "VENV ?= .venv" in (ROOT / "Makefile").read_text()  # make install creates it
    elif argv[0] == "make":
        targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
        assert set(argv[1:]) <= targets, where
    elif argv[0].endswith("ruff"):
        ruff = Path(sys.executable).parent / "ruff"  # the venv's
        result = subprocess.run([str(ruff), *argv[1:]], cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout[-2000:]
    else:
        pytest.fail(f"{where}: no rule checks this command; add one to tests/test_docs.py")


CHEAP = [
    (where, argv)
    for where, argv in ALL
    if (call := script_call(argv))
    and call[0] in ("explain", "evaluate")
    and not any(EXPENSIVE.search(a) for a in call[1])
]


@pytest.mark.slow
@pytest.mark.parametrize(("where", "argv"), CHEAP, ids=[w for w, _ in CHEAP])
def test_cheap_command_runs(where: str, argv: list[str], tiny_run: Path, tmp_path: Path) -> None:
    """explain and evaluate commands, as written, on the tiny run and a few 32 px photos of its classes."""
    from catdog.explain.pipeline import explain
    from catdog.pipelines.evaluate import evaluate

    name, arguments = script_call(argv)
    photos = tmp_path / "photos"
    write_images(photos, {"cat": 2, "dog": 2}, size=(32, 32))
    values = {"ckpt": str(tiny_run), "data.root": str(photos), "input": str(photos / "cat" / "cat_0.png")}
    rewritten = []
    for word in arguments:
        key = word.partition("=")[0]
        rewritten.append(f"{key}={values[key]}" if key in values else word)
    if not any(w.startswith("ckpt=") for w in rewritten):
        rewritten.append(f"ckpt={tiny_run}")
    cfg = compose(name, [*rewritten, "data.num_workers=0", f"out_dir={tmp_path / 'out'}"])
    result = (explain if name == "explain" else evaluate)(cfg)
    assert Path(result["out_dir"]).is_dir(), where

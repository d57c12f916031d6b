"""Guarantee (issue #9): explain or compare killed mid-run leaves nothing that looks complete; a rerun completes.

The run is a real subprocess killed with SIGKILL (no clean-up code can run) at a deterministic point: the
child wraps a function the pipeline calls part-way (writing the 3rd overlay, or starting the report) so it
kills itself there.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import CONF_DIR, compare_config, write_images
from test_reliability import explain_cfg, make_trained_run
from test_report import make_images, make_run

from catdog.errors import CatdogError
from catdog.explain.pipeline import explain
from catdog.pipelines.compare import compare, resolve_source

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import os, signal, sys
from hydra import compose, initialize_config_dir
import {module} as target
import {pipeline_module} as pipeline_module

calls = 0
real = getattr(target, {name!r})

def killing(*args, **kwargs):
    global calls
    calls += 1
    if calls == {kill_at}:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)

setattr(target, {name!r}, killing)
with initialize_config_dir(config_dir={conf!r}, version_base="1.3"):
    cfg = compose(config_name={config!r}, overrides={overrides!r})
pipeline_module.{pipeline}(cfg)
"""


def run_killed(
    module: str,
    name: str,
    kill_at: int,
    config: str,
    pipeline: str,
    overrides: list[str],
    pipeline_module: str | None = None,
) -> None:
    """Run a pipeline in a child process that SIGKILLs itself on the kill_at-th call of module.name.

    ``pipeline_module`` holds the pipeline function (default: ``module`` itself).
    """
    code = CHILD.format(
        module=module,
        name=name,
        kill_at=kill_at,
        conf=str(CONF_DIR),
        config=config,
        overrides=overrides,
        pipeline=pipeline,
        pipeline_module=pipeline_module or module,
    )
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]


def test_killed_explain_leaves_nothing_complete_and_a_rerun_completes(tmp_path: Path) -> None:
    images = tmp_path / "photos"
    write_images(images, {"cat": 6, "dog": 6}, size=(32, 32))
    run = make_trained_run(tmp_path / "run", images, ["cat", "dog"])
    overrides = [f"ckpt={run}", "data.num_workers=0", "data.batch_size=4", "overlay.writers=1"]
    # Overlays are drawn and written by catdog.explain.render.
    run_killed("catdog.explain.render", "save_image", 3, "explain", "explain", overrides, "catdog.explain.pipeline")

    from catdog.runs import explain_dirs_of

    # Nothing at a final path: only the hidden staging folder, which neither the run nor compare accepts.
    folders = list((run / "explain").iterdir())
    assert len(folders) == 1 and folders[0].name.startswith(".")
    assert any(folders[0].rglob("*.jpg")) and not (folders[0] / "summary.json").exists()  # killed mid-run
    assert explain_dirs_of(run) == []
    with pytest.raises(CatdogError, match="interrupted"):
        resolve_source(folders[0])
    final = folders[0].name.removeprefix(".").removesuffix(".partial")
    assert not (run / "explain" / final).exists()

    # Rerunning into the same folder needs no overwrite and gives the full result.
    summary = explain(explain_cfg(run, f"out_dir={run / 'explain' / final}"))
    out = Path(summary["out_dir"])
    assert summary["images"] == 12 and explain_dirs_of(run) == [out]
    assert len(pd.read_csv(out / "predictions.csv")) == 12 and len(list(out.rglob("*.jpg"))) >= 12
    assert [p.name for p in (run / "explain").iterdir()] == [final]


def test_killed_compare_leaves_nothing_complete_and_a_rerun_completes(tmp_path: Path) -> None:
    paths = make_images(tmp_path / "photos", [("cat", "a.jpg"), ("cat", "b.jpg"), ("dog", "c.jpg")])
    cams = np.arange(3 * 4, dtype=np.float32).reshape(3, 2, 2)
    a = make_run(tmp_path / "runs", "A", paths, ["cat", "dog", "dog"], [0.9, 0.8, 0.7], cams)
    b = make_run(tmp_path / "runs", "B", paths, ["cat", "cat", "dog"], [0.9, 0.8, 0.7], -cams)
    out = tmp_path / "cmp"
    overrides = [f"runs=[{a},{b}]", f"out_dir={out}"]
    run_killed("catdog.pipelines.compare", "write_report", 1, "compare", "compare", overrides)
    assert not out.exists()
    partial = [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert len(partial) == 1 and (partial[0] / "pairs.csv").is_file()  # killed after its tables, before the report

    result = compare(compare_config(tmp_path, runs=[str(a), str(b)], out_dir=str(out)))
    assert Path(result["out_dir"]) == out and (out / "report" / "index.html").is_file()
    assert len(pd.read_csv(out / "per_image.csv")) == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

"""catdog.runs: which checkpoint a run folder means, what catdog may replace, and staging (issue 19 items 1, 10, 15,
and the no-data-loss guarantee).

The property test builds random folder trees (photos, runs, catdog's own outputs, user files dropped into
outputs, stale staging folders) and points ``out_dir`` anywhere in them: whatever happens, no file catdog
did not write is deleted or changed.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

import pytest
from helpers import explain_cfg, file_bytes, make_trained_run, one_line, users_photos_and_run, write_images
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catdog.errors import CatdogError
from catdog.explain.pipeline import explain
from catdog.runs import (
    OUTPUT_MARKER,
    replace_refusal,
    resolve_checkpoint,
    staged_output_dir,
)

KINDS = ("photos", "run", "output", "empty", "staging_ours", "staging_theirs")
NODES = st.lists(st.tuples(st.integers(0, 20), st.sampled_from(KINDS)), min_size=1, max_size=7)


def _build(root: Path, nodes: list[tuple[int, str]]) -> tuple[list[Path], list[Path]]:
    """Folders d0, d1, ... each below an earlier one (or root). Returns (folders, user input folders)."""
    folders: list[Path] = [root]
    inputs: list[Path] = []
    for i, (parent, kind) in enumerate(nodes):
        folder = folders[parent % len(folders)] / f"d{i}"
        if kind == "output":
            with staged_output_dir(folder) as out:  # catdog's own, with its genuine marker
                (out / "predictions.csv").write_text("path\n")
                (out / "correct").mkdir()
                (out / "correct" / "0001_x.jpg").write_bytes(b"overlay")
        elif kind == "staging_ours":  # a killed run's staging folder (marker without the list of files)
            folder.mkdir(parents=True, exist_ok=True)
            staging = folder.with_name(f".{folder.name}.partial")
            staging.mkdir()
            (staging / OUTPUT_MARKER).write_text('{"written_by": "catdog", "pid": 1}')
            (staging / "part.jpg").write_bytes(b"partial")
        else:
            folder.mkdir(parents=True, exist_ok=True)
        if kind == "photos":
            (folder / "cat.1.jpg").write_bytes(os.urandom(8))
            (folder / "NOTES.txt").write_text("mine")
            inputs.append(folder)
        elif kind == "run":
            (folder / ".hydra").mkdir()
            (folder / ".hydra" / "config.yaml").write_text("a: 1\n")
            (folder / "checkpoints").mkdir()
            (folder / "checkpoints" / "best.ckpt").write_bytes(b"weights")
            (folder / "split.csv").write_text("path,label,split\n")
            inputs.append(folder)
        elif kind == "staging_theirs":  # a user's folder that merely looks like a staging name
            theirs = folder.with_name(f".{folder.name}.partial")
            theirs.mkdir()
            (theirs / "keep.txt").write_text("mine")
        folders.append(folder)
    return folders, inputs


def _user_files(root: Path) -> dict[Path, bytes]:
    """Every file catdog did not write: not inside a folder whose marker lists it."""
    catdog: set[Path] = set()
    for marker in root.rglob(OUTPUT_MARKER):
        text = marker.read_text()
        if '"files"' in text:
            import json

            catdog |= {marker.parent / f for f in json.loads(text)["files"]} | {marker}
        else:  # a killed run's staging folder: all of it is catdog's
            catdog |= {p for p in marker.parent.rglob("*")}
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and p not in catdog}


@settings(max_examples=60, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(NODES, st.integers(0, 40), st.sampled_from(["plain", "dotdot", "dot", "new", "file", "parent"]), st.booleans())
def test_nothing_catdog_did_not_write_is_ever_deleted_or_changed(
    nodes: list[tuple[int, str]], pick: int, form: str, overwrite: bool
) -> None:
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        root = Path(tmp) / "world"
        root.mkdir()
        folders, inputs = _build(root, nodes)
        # Some user files dropped into catdog's outputs later: those outputs are no longer catdog's alone.
        for folder in folders[1 + pick % 3 :: 3]:
            if (folder / OUTPUT_MARKER).is_file():
                (folder / "my_notes.txt").write_text("mine")
        before = _user_files(Path(tmp))
        target = folders[pick % len(folders)]
        out_dir = {
            "plain": str(target),
            "dotdot": f"{target}/../{target.name}",
            "dot": ".",
            "new": str(target / "new_out"),
            "file": str(next(iter(before), target)),
            "parent": f"{target}/..",
        }[form]
        cwd = os.getcwd()
        os.chdir(target)
        try:
            with staged_output_dir(Path(out_dir), overwrite=overwrite, keep=inputs) as out:
                (out / "result.txt").write_text("new")
        except CatdogError as err:
            assert "\n" not in str(err)
        finally:
            os.chdir(cwd)
        after = {p: p.read_bytes() for p in before if p.is_file()}
        assert after == before, f"lost or changed: {sorted(set(before) - set(after))}"


def test_replace_refusal_names_why() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folders, inputs = _build(Path(tmp), [(0, "photos"), (0, "run"), (0, "output"), (3, "photos")])
        photos, run, output = folders[1:4]
        assert "not written by catdog" in replace_refusal(photos)
        assert "not written by catdog" in replace_refusal(run)
        assert "holds" in replace_refusal(Path(tmp), keep=inputs)
        assert "holds" in replace_refusal(output, keep=inputs)  # an input below the output folder
        assert replace_refusal(output, keep=inputs[:2]) is not None  # ...and its files are not catdog's
        assert replace_refusal(Path(tmp) / "missing") is None


# --- item 1: overwrite=true never deletes inputs, runs or their ancestors --------------------------
@pytest.mark.slow  # explain end to end, several times
def test_overwrite_refuses_inputs_runs_ancestors_and_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    photos, run = users_photos_and_run(tmp_path)
    before = file_bytes(tmp_path)
    for out_dir in [photos, run, run / "..", run / "checkpoints"]:
        with pytest.raises(CatdogError, match="cannot be replaced") as err:
            explain(explain_cfg(run, f"data.root={photos}", f"out_dir={out_dir}", "overwrite=true"))
        one_line(err)
    monkeypatch.chdir(photos / "cat")
    with pytest.raises(CatdogError, match="cannot be replaced") as err:
        explain(explain_cfg(run, f"data.root={photos}", "out_dir=.", "overwrite=true"))
    one_line(err)
    assert file_bytes(tmp_path) == before
    assert not [p for p in tmp_path.rglob(".*partial")]  # refused before any work

    # catdog's own output is still replaced, and the folder it writes carries the marker listing its files
    out = tmp_path / "out"
    explain(explain_cfg(run, f"data.root={photos}", f"out_dir={out}"))
    assert (out / OUTPUT_MARKER).is_file()
    explain(explain_cfg(run, f"data.root={photos}", f"out_dir={out}", "overwrite=true"))
    (out / "my_notes.txt").write_text("mine")  # a user file dropped into it: no longer catdog's alone
    with pytest.raises(CatdogError, match="did not write"):
        explain(explain_cfg(run, f"data.root={photos}", f"out_dir={out}", "overwrite=true"))
    assert (out / "my_notes.txt").read_text() == "mine"


# --- item 15: two runs into the same out_dir ----------------------------------------------------
@pytest.mark.slow  # explain end to end, several times
def test_a_second_run_into_the_same_out_dir_stops_with_one_line_and_leaves_the_first_alone(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    write_images(photos, {"cat": 2, "dog": 2}, size=(32, 32))
    run = make_trained_run(tmp_path / "run", photos, ["cat", "dog"])
    out = tmp_path / "out"
    with staged_output_dir(out) as first:  # the first run, still writing
        (first / "half.jpg").write_bytes(b"first run's work")
        with pytest.raises(CatdogError, match="being written by another catdog run") as err:
            explain(explain_cfg(run, f"data.root={photos}", f"out_dir={out}", "overwrite=true"))
        one_line(err)
        assert (first / "half.jpg").read_bytes() == b"first run's work"
    assert (out / "half.jpg").is_file()  # the first run completed
    # A killed run's staging folder (not locked) is replaced by the next run.
    staging = tmp_path / ".again.partial"
    staging.mkdir()
    (staging / OUTPUT_MARKER).write_text('{"written_by": "catdog", "pid": 1}')
    explain(explain_cfg(run, f"data.root={photos}", f"out_dir={tmp_path / 'again'}"))
    assert not staging.exists() and (tmp_path / "again" / "predictions.csv").is_file()


def test_run_folder_resolves_to_its_newest_best_checkpoint(tmp_path: Path) -> None:
    """A run folder reused by an older catdog holds best.ckpt (stale) and best-v1.ckpt (the new run's)."""
    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    stale, fresh = checkpoints / "best.ckpt", checkpoints / "best-v1.ckpt"
    stale.write_bytes(b"old")
    fresh.write_bytes(b"new")
    os.utime(stale, (1_000_000, 1_000_000))
    assert resolve_checkpoint(tmp_path / "run") == fresh
    os.utime(fresh, (900_000, 900_000))
    assert resolve_checkpoint(tmp_path / "run") == stale


@pytest.mark.parametrize("length", [247, 250, 255])
def test_out_dir_names_up_to_255_bytes_are_staged(tmp_path: Path, length: int) -> None:
    """Issue #19 item 5: the staging name ``.<name>.partial`` of a 247-255 byte name is too long."""
    final = tmp_path / ("é" * ((length - 1) // 2) + "x" * ((length - 1) % 2 + 1))
    assert len(final.name.encode()) == length
    with staged_output_dir(final) as out:
        (out / "a.txt").write_text("done")
    assert (final / "a.txt").read_text() == "done"
    with staged_output_dir(final, overwrite=True) as out:
        (out / "a.txt").write_text("again")
    assert (final / "a.txt").read_text() == "again"
    assert sorted(p.name for p in tmp_path.iterdir()) == [final.name]


def test_out_dir_name_too_long_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(CatdogError, match="255") as err, staged_output_dir(tmp_path / ("x" * 256)):
        pass
    one_line(err)


def test_disk_full_while_writing_is_a_one_line_error_and_keeps_the_old_result(tmp_path: Path) -> None:
    final = tmp_path / "out"
    with staged_output_dir(final) as out:  # an earlier result catdog wrote (only such a folder is replaced)
        (out / "old.txt").write_text("old result")
    with pytest.raises(CatdogError, match="No space left") as err, staged_output_dir(final, overwrite=True) as out:
        (out / "half.txt").write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")
    one_line(err)
    assert sorted(p.name for p in final.iterdir()) == [OUTPUT_MARKER, "old.txt"]

"""catdog.names: every file name catdog writes is derived injectively from its input (issue 19 item 6, 11).

Property tests (hypothesis) over hostile strings, plus an explain run on a hostile corpus.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from helpers import HOSTILE_CLASSES, explain_cfg, save_checkpoint, write_hostile_corpus
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catdog.explain.pipeline import explain
from catdog.explain.render import class_folders, overlay_location, overlay_names
from catdog.names import HASH_SEP, distinct_labels, pair_name, safe_name, unique_names

PROPERTY = settings(
    max_examples=200, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
# A small alphabet makes collisions of the naive cleaning likely: space vs "_", case, dots, "$", accents.
NEAR = st.lists(st.sampled_from(list("aA _.$/-é~") + ["e\u0301"]), max_size=6).map("".join)


def _portable(name: str) -> bool:
    return (
        bool(name)
        and "/" not in name
        and "\\" not in name
        and ".." not in name
        and not name.startswith((".", "_" * 2))
        and len(name.encode()) <= 112
        and all(ch.isprintable() for ch in name)
    )


@PROPERTY
@given(TEXT, TEXT)
def test_safe_name_is_injective_portable_and_bounded(a: str, b: str) -> None:
    assert _portable(safe_name(a))
    if a != b:
        assert safe_name(a) != safe_name(b)
    assert safe_name(a) == safe_name(a)


@PROPERTY
@given(NEAR, NEAR)
def test_safe_name_is_injective_on_near_collisions(a: str, b: str) -> None:
    if a != b:
        assert safe_name(a) != safe_name(b)


def test_safe_name_keeps_portable_names_and_hashes_the_rest() -> None:
    for kept in ["cat", "Great_Pyrenees", "cat.123", "chat_noir_é", "5", "a-b"]:
        assert safe_name(kept) == kept
    for hostile, head in [
        ("../x", "x"),
        ("a/b", "a_b"),
        ("..", "unnamed"),
        ("", "unnamed"),
        ("con", "_con"),
        ("<img src=x onerror=alert(1)>", "img_src_x_onerror_alert_1"),
        ("new\nline\x00\x1b[31m", "new_line_31m"),
        ("a b", "a_b"),
        ("$5", "5"),
        ("e\u0301t", "ét"),  # NFD: the NFC spelling "ét" keeps its own name
    ]:
        name = safe_name(hostile)
        assert re.fullmatch(re.escape(head) + HASH_SEP + "[0-9a-f]{10}", name), (hostile, name)
    long_a, long_b = "é" * 200 + "a", "é" * 200 + "b"
    assert len(safe_name(long_a).encode()) <= 111 and safe_name(long_a) != safe_name(long_b)


@PROPERTY
@given(st.lists(st.tuples(NEAR, NEAR), max_size=12))
def test_unique_names_differ_even_ignoring_case_and_do_not_depend_on_processes(parts: list[tuple[str, str]]) -> None:
    paths = [f"/{folder}/{stem}.jpg" for folder, stem in parts]
    names = unique_names([Path(p).stem for p in paths], paths)
    assert len({n.casefold() for n in names}) == len(names)
    assert all(_portable(n) for n in names)
    # Each process of a multi-process run computes the names from the full list: a pure function of it.
    assert unique_names([Path(p).stem for p in paths], paths) == names


@PROPERTY
@given(st.lists(NEAR, unique=True, min_size=2, max_size=8))
def test_class_folders_and_mistake_folders_are_injective(classes: list[str]) -> None:
    folders = class_folders(classes)
    assert len({f.casefold() for f in folders}) == len(classes)
    pairs = {pair_name(a, b, folders).casefold() for a in folders for b in folders if a != b}
    assert len(pairs) == len(folders) * (len(folders) - 1)


def test_mistake_folders_that_read_two_ways_get_a_hash() -> None:
    folders = ["a", "b_as_c", "a_as_b", "c"]
    assert pair_name("a", "b_as_c", folders) != pair_name("a_as_b", "c", folders)
    assert pair_name("a", "c", folders) == "a_as_c"


@PROPERTY
@given(st.lists(st.sampled_from(["x", "x #2", "x #3", "y"]), max_size=8))
def test_distinct_labels_never_repeat(labels: list[str]) -> None:
    result = distinct_labels(labels)
    assert len(set(result)) == len(result)
    assert [r for r, label in zip(result, labels) if r == label][:1] == [label for label in labels][:1]


def test_overlay_names_keep_the_full_stem_and_are_the_same_for_any_share_of_the_images() -> None:
    paths = [f"/d/{'ab'[i % 2]}/cat.{i}.jpg" for i in range(40)] + ["/d/a/x.jpg", "/d/b/x.jpg", "/d/b/X.png"]
    names = overlay_names(paths)
    assert names[:40] == [f"cat.{i}" for i in range(40)]  # the full stem, not what precedes the first dot
    folders = class_folders(["a", "b"])
    one_process = [overlay_location(0, 0, 0.9, names[i], folders) for i in range(len(paths))]
    # Two processes each place their half (in any order): the same names, none shared.
    halves = [overlay_location(0, 0, 0.9, names[i], folders) for i in reversed(range(len(paths)))][::-1]
    assert halves == one_process
    assert len({p.casefold() for p in one_process}) == len(paths)


@pytest.mark.slow  # explain end to end
def test_explain_writes_one_overlay_per_image_and_one_folder_per_class_pair(tmp_path: Path) -> None:
    write_hostile_corpus(tmp_path / "photos")
    ckpt = save_checkpoint(tmp_path / "model.ckpt", HOSTILE_CLASSES, favourite=0)  # always predicts "a b"
    out = Path(explain(explain_cfg(ckpt, f"data.root={tmp_path / 'photos'}", f"out_dir={tmp_path / 'out'}"))["out_dir"])
    rows = pd.read_csv(out / "predictions.csv", dtype=str, keep_default_na=False)
    assert len(rows) == 4 * 3 + 1
    overlays = rows["overlay"].tolist()
    assert len({o.casefold() for o in overlays}) == len(overlays)  # no two images share an overlay file
    assert all((out / o).is_file() for o in overlays)
    for path, overlay in zip(rows["path"], overlays):
        if Path(path).name.startswith("cat."):
            assert Path(path).stem in Path(overlay).name  # cat.3.png -> ..._cat.3.jpg
    folder_of = {(t, p): str(Path(o).parent) for t, p, o in zip(rows["true"], rows["pred"], overlays)}
    assert len(set(folder_of.values())) == len(folder_of)  # "$5" and "5" mistakes never share a folder
    assert "incorrect/a_b_as_a_b" not in folder_of.values()

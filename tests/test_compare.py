"""Compare: alignment, labels, flips, CAM similarity, the pipeline on hand-made explain folders (no model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import (
    CLASSES,
    compare_config,
    make_images,
    make_run,
    make_trained_run,
    one_line,
    run_killed,
    write_images,
)

from catdog.errors import CatdogError
from catdog.names import safe_name
from catdog.pipelines import compare_sources
from catdog.pipelines.compare import (
    align,
    check_class_names,
    compare,
    experiment_labels,
    flip_counts,
    read_run_settings,
    spearman,
    to_common_size,
    top_region_iou,
)
from catdog.report import Experiment


# --- numbers by hand ------------------------------------------------------------------------
def test_flip_counts_by_hand() -> None:
    a = [True, True, False, False, None, True]
    b = [True, False, True, False, True, None]
    assert flip_counts(a, b) == (1, 1)  # image 1 broke, image 2 was fixed; unlabelled ones do not count
    assert flip_counts(b, a) == (1, 1)
    assert flip_counts([True, True], [False, False]) == (2, 0)


def test_spearman_by_hand() -> None:
    a = np.array([[[1.0, 2.0], [3.0, 4.0]]])
    # Ranks 1,2,4,3: d^2 sums to 2, rho = 1 - 6*2 / (4 * (16 - 1)) = 0.8.
    assert spearman(a, np.array([[[1.0, 2.0], [4.0, 3.0]]]))[0] == pytest.approx(0.8)
    assert spearman(a, 10 * a + 3)[0] == pytest.approx(1.0)  # only the order matters
    assert spearman(a, -a)[0] == pytest.approx(-1.0)
    # Ties share their mean rank: ranks (1.5, 1.5, 3, 4) vs (1, 2, 3, 4) -> 4.5 / sqrt(4.5 * 5).
    tied = spearman(np.array([[[1.0, 1.0], [2.0, 3.0]]]), a)[0]
    assert tied == pytest.approx(4.5 / np.sqrt(4.5 * 5))
    assert np.isnan(spearman(np.ones((1, 2, 2)), a)[0])  # a flat map ranks nothing


def test_spearman_batch_matches_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, size=(6, 4, 4)).astype(np.float32)  # many ties
    b = rng.normal(size=(6, 4, 4)).astype(np.float32)
    expected = [stats.spearmanr(x.ravel(), y.ravel()).statistic for x, y in zip(a, b)]
    np.testing.assert_allclose(spearman(a, b), expected, atol=1e-9)


def test_top_region_iou_by_hand() -> None:
    a = np.arange(10, dtype=np.float32).reshape(1, 5, 2)  # top 20% = the 2 highest pixels: 8 and 9
    b = a.copy().ravel()
    b[[8, 0]] = b[[0, 8]]  # now the highest are 9 and 0
    assert top_region_iou(a, b.reshape(1, 5, 2))[0] == pytest.approx(1 / 3)  # {8,9} vs {9,0}
    assert top_region_iou(a, a)[0] == 1.0
    assert top_region_iou(a, -a)[0] == 0.0
    # ceil(0.2 * 9) = 2 pixels of a 3x3 map
    c = np.arange(9, dtype=np.float32).reshape(1, 3, 3)
    d = c.ravel().copy()
    d[[7, 1]] = d[[1, 7]]
    assert top_region_iou(c, d.reshape(1, 3, 3))[0] == pytest.approx(1 / 3)


def test_maps_of_different_sizes_are_resized() -> None:
    small = np.arange(4, dtype=np.float32).reshape(1, 2, 2)
    large = np.zeros((1, 4, 4), dtype=np.float32)
    resized = to_common_size([small, large])
    assert resized[0].shape == resized[1].shape == (1, 4, 4)
    assert resized[1] is large
    assert spearman(resized[0], to_common_size([small, large])[0])[0] == pytest.approx(1.0)


# --- alignment and labels -----------------------------------------------------------------
def _experiment(label: str, paths: list[str], correct: list[bool]) -> Experiment:
    frame = pd.DataFrame(
        {
            "path": paths,
            "true": "cat",
            "pred": ["cat" if c else "dog" for c in correct],
            "p_cat": 0.5,
            "p_dog": 0.5,
            "correct": correct,
            "overlay": "x.jpg",
        }
    )
    return Experiment(label, Path("."), frame, {}, CLASSES)


def test_align_matches_by_path_whatever_the_order() -> None:
    a = _experiment("A", ["/p/1.jpg", "/p/2.jpg", "/p/3.jpg"], [True, True, False])
    b = _experiment("B", ["/p/3.jpg", "/p/4.jpg", "/p/1.jpg"], [True, False, False])
    assert align([a, b]) == ["/p/1.jpg", "/p/3.jpg"]
    assert list(a.predictions["path"]) == list(b.predictions["path"]) == ["/p/1.jpg", "/p/3.jpg"]
    # Image 1: A right, B wrong; image 3: A wrong, B right.
    assert flip_counts(list(a.predictions["correct"]), list(b.predictions["correct"])) == (1, 1)
    assert align([a, b], ["/p/3.jpg", "/p/9.jpg"]) == ["/p/3.jpg"]
    with pytest.raises(CatdogError, match="share no"):
        align([a, _experiment("C", ["/q/1.jpg"], [True])])


def _settings(overrides: list[str], config: dict[str, str], choices: dict[str, str] | None = None) -> tuple:
    typed = dict(item.split("=", 1) for item in overrides)
    return typed, {**config, **(choices or {})}


def test_labels_from_what_differs() -> None:
    base = {"optimizer.lr": "0.001", "model.freeze_backbone": "False", "paths.output_dir": "x", "seed": "42"}
    sweep = [
        _settings(["model.freeze_backbone=true", "data=folder"], {**base, "paths.output_dir": "a"}),
        _settings(["model.freeze_backbone=false", "data=folder"], {**base, "paths.output_dir": "b"}),
    ]
    assert experiment_labels(["0", "1"], sweep) == ["freeze_backbone=true", "freeze_backbone=false"]
    # A run with defaults against one with a typed value: the default comes from its config.
    lr = [_settings([], base), _settings(["optimizer.lr=3e-4"], {**base, "optimizer.lr": "0.0003"})]
    assert experiment_labels(["A", "B"], lr) == ["lr=0.001", "lr=3e-4"]
    # Same short name twice: full keys.
    two = [_settings(["optimizer.lr=1", "model.lr=2"], {}), _settings(["optimizer.lr=3", "model.lr=4"], {})]
    assert experiment_labels(["A", "B"], two) == ["optimizer.lr=1 model.lr=2", "optimizer.lr=3 model.lr=4"]
    # Nothing typed differs: config values do; group choices count too.
    groups = [_settings([], base, {"model": "resnet18"}), _settings([], base, {"model": "mobilenet_v2"})]
    assert experiment_labels(["A", "B"], groups) == ["model=resnet18", "model=mobilenet_v2"]
    # No settings, or nothing differs: folder names, made unique.
    assert experiment_labels(["run", "run"], [None, sweep[0]]) == ["run", "run #2"]
    assert experiment_labels(["x", "y"], [sweep[0], sweep[0]]) == ["x", "y"]


def test_different_class_lists_are_a_user_error() -> None:
    assert check_class_names(["A", "B"], [["cat", "dog"], ["dog", "cat"]]) == ["cat", "dog"]
    with pytest.raises(CatdogError, match="different classes") as err:
        check_class_names(["A", "B"], [["cat", "dog"], ["cat", "fox"]])
    assert "\n" not in str(err.value) and "fox" in str(err.value)


# --- the pipeline ---------------------------------------------------------------------------
@pytest.fixture
def two_runs(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """Runs that differ in lr; the second breaks image 0, fixes image 3, and looks elsewhere on image 1."""
    paths = make_images(tmp_path / "photos", [("cat", "a.jpg"), ("cat", "b.jpg"), ("dog", "c.jpg"), ("dog", "d.jpg")])
    cams = np.arange(4 * 16, dtype=np.float32).reshape(4, 4, 4)
    other = cams.copy()
    other[1] = -other[1]
    runs = tmp_path / "runs"
    lr = {"optimizer": {"lr": 0.001}}
    a = make_run(runs, "A", paths, ["cat", "cat", "dog", "cat"], [0.9, 0.8, 0.7, 0.6], cams, config=lr)
    b = make_run(
        runs, "B", paths, ["dog", "cat", "dog", "dog"], [0.95, 0.8, 0.7, 0.6], other,
        overrides=["optimizer.lr=3e-4"], config={"optimizer": {"lr": 0.0003}},
    )  # fmt: skip
    return a, b, paths


def test_compare_run_folders(tmp_path: Path, two_runs: tuple[Path, Path, list[str]]) -> None:
    a, b, paths = two_runs
    result = compare(compare_config(tmp_path, runs=[str(a.parent.parent), str(b.parent.parent)]))
    out = Path(result["out_dir"])
    assert result["labels"] == ["lr=0.001", "lr=3e-4"]
    assert result["explain_dirs"] == [str(a), str(b)]  # existing explain folders reused

    experiments = pd.read_csv(out / "experiments.csv")
    assert experiments["accuracy"].tolist() == pytest.approx([0.75, 0.75])
    assert experiments["recall_cat"].tolist() == pytest.approx([1.0, 0.5])

    pairs = pd.read_csv(out / "pairs.csv").iloc[0]
    assert (pairs["correct_to_incorrect"], pairs["incorrect_to_correct"]) == (1, 1)
    assert pairs["same_prediction"] == pytest.approx(0.5)
    # Maps equal on 3 images, reversed on one: Spearman 1, 1, 1, -1; IoU 1, 1, 1, 0.
    assert pairs["spearman_mean"] == pytest.approx(0.5) and pairs["spearman_median"] == pytest.approx(1.0)
    assert pairs["iou_top20_mean"] == pytest.approx(0.75)

    per_image = pd.read_csv(out / "per_image.csv")
    assert per_image["path"].tolist() == sorted(paths)
    assert per_image["flipped"].tolist() == [True, False, False, True]
    assert per_image["cam_disagreement"].tolist() == pytest.approx([0.0, 2.0, 0.0, 0.0])
    for picture in (
        "cam_similarity.png",
        "flipped.png",
        "cam_disagreement.png",
        f"confident_mistakes_{safe_name('lr=0.001')}.png",  # the label's injective file name
        "report/index.html",
    ):
        assert (out / picture).is_file(), picture


def test_compare_picks_the_newest_covering_explain_folder_and_explains_the_rest(
    tmp_path: Path, two_runs: tuple[Path, Path, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b, paths = two_runs
    cams = np.ones((2, 4, 4), dtype=np.float32)
    # A newer explain folder of A that covers only half the images is passed over.
    make_run(
        tmp_path / "runs",
        "A",
        paths[:2],
        ["cat", "cat"],
        [0.9, 0.9],
        cams,
        stamp="2026-02-01_00-00-00",
        run_files=False,
    )
    # C has no explain folder at all: compare runs explain on its test split.
    c_run = tmp_path / "runs" / "C"
    c_explain = make_run(
        tmp_path / "runs",
        "C",
        paths,
        ["cat"] * 4,
        [0.6] * 4,
        np.ones((4, 4, 4), np.float32),
        overrides=["optimizer.lr=1e-2"],
        config={"optimizer": {"lr": 0.01}},
        stamp="later",
    )
    hidden = c_explain.parent.parent / "explain_done"
    c_explain.parent.rename(hidden)
    calls = []

    def fake_explain(cfg: object) -> dict:
        calls.append(cfg)
        hidden.rename(c_run / "explain")
        return {"out_dir": str(c_run / "explain" / "later")}

    monkeypatch.setattr(compare_sources, "explain", fake_explain)  # compare_sources re-explains such runs
    result = compare(compare_config(tmp_path, runs=[str(a.parent.parent), str(b.parent.parent), str(c_run)]))
    assert result["explain_dirs"][0] == str(a)
    assert len(calls) == 1
    assert Path(calls[0].ckpt) == c_run / "checkpoints" / "best.ckpt" and calls[0].data.split == "test"
    assert calls[0].data.batch_size == 32 and calls[0].save_cams is True  # conf/explain.yaml plus compare's settings
    assert len(pd.read_csv(Path(result["out_dir"]) / "pairs.csv")) == 3
    # C's numbers are computed by compare from the explain folder it got (all "cat": 2 of 4 right).
    experiments = pd.read_csv(Path(result["out_dir"]) / "experiments.csv")
    assert experiments["accuracy"].tolist()[2] == pytest.approx(0.5)
    assert experiments["recall_cat"].tolist()[2] == 1.0 and experiments["recall_dog"].tolist()[2] == 0.0
    assert result["labels"][2] == "lr=1e-2"


def test_compare_user_errors(tmp_path: Path, two_runs: tuple[Path, Path, list[str]]) -> None:
    a, _, paths = two_runs
    fox = make_run(
        tmp_path / "runs",
        "F",
        paths[:2],
        ["cat"] * 2,
        [0.6] * 2,
        np.ones((2, 2, 2), np.float32),
        class_names=["cat", "fox"],
    )
    with pytest.raises(CatdogError, match="different classes"):
        compare(compare_config(tmp_path, runs=[str(a), str(fox)]))
    other = make_run(tmp_path / "runs", "O", paths[:1], ["cat"], [0.6], np.ones((1, 2, 2), np.float32))
    elsewhere = str(tmp_path / "elsewhere" / "cat" / "x.jpg")
    pd.DataFrame({"path": [elsewhere], "label": "cat", "split": "test"}).to_csv(other.parent.parent / "split.csv")
    with pytest.raises(CatdogError, match="share no image"):
        compare(compare_config(tmp_path, runs=[str(a.parent.parent), str(other.parent.parent)]))
    with pytest.raises(CatdogError, match="does not exist"):
        compare(compare_config(tmp_path, runs=[str(tmp_path / "missing")]))
    with pytest.raises(CatdogError, match="Nothing to compare"):
        compare(compare_config(tmp_path))
    with pytest.raises(CatdogError, match="numbered"):
        compare(compare_config(tmp_path, sweep=str(tmp_path / "runs")))


def test_compare_refuses_incomplete_folders(tmp_path: Path) -> None:
    paths = make_images(tmp_path / "photos", [("cat", "a.jpg"), ("dog", "b.jpg")])
    a = make_run(tmp_path / "runs", "A", paths, ["cat", "dog"], [0.9, 0.8], np.ones((2, 2, 2), np.float32))
    b = make_run(tmp_path / "runs", "B", paths, ["cat", "cat"], [0.9, 0.8], np.ones((2, 2, 2), np.float32))
    staging = a.with_name(f".{a.name}.partial")
    a.rename(staging)
    cfg = compare_config(tmp_path, runs=[str(staging), str(b)])
    with pytest.raises(CatdogError, match="interrupted") as err:
        compare(cfg)
    one_line(err)
    staging.rename(a)
    (a / "summary.json").unlink()  # a folder killed before summary.json (written last)
    with pytest.raises(CatdogError, match="incomplete"):
        compare(compare_config(tmp_path, runs=[str(a), str(b)]))


def test_compare_does_not_resolve_interpolations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CATDOG_TEST_SECRET", "hunter2-secret")
    paths = make_images(tmp_path / "photos", [("cat", "a.jpg"), ("dog", "b.jpg")])
    cams = np.ones((2, 2, 2), np.float32)
    a = make_run(tmp_path / "runs", "A", paths, ["cat", "dog"], [0.9, 0.8], cams, overrides=["optimizer.lr=0.1"])
    b = make_run(
        tmp_path / "runs",
        "B",
        paths,
        ["cat", "cat"],
        [0.9, 0.8],
        cams,
        overrides=["optimizer.lr=${oc.env:CATDOG_TEST_SECRET}"],
        config={"optimizer": {"lr": "${oc.env:CATDOG_TEST_SECRET}"}, "note": "${oc.env:CATDOG_TEST_SECRET}"},
    )
    overrides, settings = read_run_settings(b.parent.parent)
    assert overrides["optimizer.lr"] == "${oc.env:CATDOG_TEST_SECRET}"
    assert settings["note"] == "${oc.env:CATDOG_TEST_SECRET}"
    result = compare(compare_config(tmp_path, runs=[str(a.parent.parent), str(b.parent.parent)]))
    out = Path(result["out_dir"])
    for file in [*out.glob("*.csv"), out / "report" / "index.html"]:
        assert "hunter2" not in file.read_text(), file


def test_compare_reexplains_sweep_folders_with_override_syntax(tmp_path: Path) -> None:
    images = tmp_path / "photos"
    write_images(images, {"cat": 2, "dog": 2}, size=(32, 32))
    runs = [make_trained_run(tmp_path / "sweep" / name, images, ["cat", "dog"], favourite=f)
            for f, name in enumerate(["lr=0.1,bs=32", "lr='0.2' $x"])]
    cfg = compare_config(tmp_path, runs=[str(r) for r in runs])
    cfg.explain.data.num_workers = 0
    result = compare(cfg)
    # Independent reference: run 0 always says cat, run 1 always dog; half the images are cats.
    assert [Path(d).parent.parent for d in result["explain_dirs"]] == runs
    assert [row["accuracy"] for row in result["experiments"]] == [0.5, 0.5]
    assert result["pairs"][0]["correct_to_incorrect"] == 2 and result["pairs"][0]["incorrect_to_correct"] == 2


def test_corrupt_checkpoint_and_truncated_summary_in_compare(tmp_path: Path) -> None:
    paths = make_images(tmp_path / "photos", [("cat", "a.jpg"), ("dog", "b.jpg")])
    cams = np.ones((2, 2, 2), np.float32)
    a = make_run(tmp_path / "runs", "A", paths, ["cat", "dog"], [0.9, 0.8], cams)
    b = make_run(tmp_path / "runs", "B", paths, ["cat", "cat"], [0.9, 0.8], cams)
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    with pytest.raises(CatdogError, match="could not be read") as err:
        compare(compare_config(tmp_path, runs=[str(a), str(corrupt)]))
    one_line(err)
    text = (b / "summary.json").read_text()
    (b / "summary.json").write_text(text[: len(text) // 2])
    with pytest.raises(CatdogError, match="not valid JSON") as err:
        compare(compare_config(tmp_path, runs=[str(a), str(b)]))
    one_line(err)


@pytest.mark.slow
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


def test_class_names_that_look_like_rich_markup_print_literally(capsys: pytest.CaptureFixture[str]) -> None:
    """Issue #19 item 5: a class named ``[/]`` crashed the terminal table and ``[other]`` vanished from it."""
    from catdog.pipelines.compare import print_tables

    classes = ["[/]", "[other]", "[bold]x"]
    table = pd.DataFrame(
        [{"experiment": "a", "images": 3, "accuracy": 0.5, **{f"recall_{c}": 0.5 for c in classes},
          "mean_confidence": 0.7, "pointing_game": float("nan")}]
    )
    print_tables(table, pd.DataFrame(), classes)
    out = capsys.readouterr().out
    assert "[/]" in out and "[other]" in out and "[bold]x" in out


def test_terminal_table_of_many_classes_has_one_recall_column(capsys: pytest.CaptureFixture[str]) -> None:
    from catdog.pipelines.compare import print_tables

    classes = [f"c{i}" for i in range(500)]
    recalls = {f"recall_{c}": 1.0 for c in classes} | {"recall_c7": 0.0}
    table = pd.DataFrame([{"experiment": "a", "images": 3, "accuracy": 0.5, **recalls, "mean_confidence": 0.7,
                           "pointing_game": float("nan")}])
    print_tables(table, pd.DataFrame(), classes)
    out = capsys.readouterr().out
    assert "recall c499" not in out and "c7 0.0%" in out


# --- issue 20 item 7: nothing clipped, nothing truncated -------------------------------------
def _drawn_outside(fig: object) -> bool:
    """Whether anything matplotlib draws (titles, tick labels, legends) reaches past the figure's edges,
    i.e. is cut off in the PNG: the tight box of what is drawn must lie inside the figure's box."""
    fig.canvas.draw()
    drawn = fig.get_tightbbox(fig.canvas.get_renderer())
    page = fig.bbox_inches
    slack = 1 / fig.dpi  # one pixel
    outside_low = drawn.x0 < page.x0 - slack or drawn.y0 < page.y0 - slack
    return outside_low or drawn.x1 > page.x1 + slack or drawn.y1 > page.y1 + slack


@pytest.fixture
def long_label_runs(tmp_path: Path) -> list[str]:
    """Two runs whose experiments have the long names of real sweeps."""
    paths = make_images(tmp_path / "photos", [("cat", "a.jpg"), ("cat", "b.jpg"), ("dog", "c.jpg"), ("dog", "d.jpg")])
    cams = np.arange(4 * 16, dtype=np.float32).reshape(4, 4, 4)
    runs = []
    for name, preds in (
        ("mobilenet_local_weights", ["cat", "dog", "dog", "cat"]),
        ("finetune_lowlr_backbone", ["cat"] * 4),
    ):
        run = make_run(
            tmp_path / "runs", name, paths, preds, [0.9, 0.8, 0.7, 0.6], cams,
            overrides=[f"experiment={name}"], config={"experiment": name},
        )  # fmt: skip
        runs.append(str(run.parent.parent))
    return runs


def test_compare_figures_keep_every_text_inside(
    tmp_path: Path, long_label_runs: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from matplotlib.figure import Figure

    checked: list[str] = []
    clipped: list[str] = []
    savefig = Figure.savefig

    def check_then_save(fig: Figure, *args: object, **kwargs: object) -> object:
        checked.append(str(args[0]) if args else "?")
        if _drawn_outside(fig):
            clipped.append(checked[-1])
        return savefig(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", check_then_save)
    result = compare(compare_config(tmp_path, runs=long_label_runs))
    assert result["labels"] == ["experiment=mobilenet_local_weights", "experiment=finetune_lowlr_backbone"]
    assert any("confusion_0" in name for name in checked) and any("cam_similarity" in name for name in checked)
    assert clipped == []  # e.g. "xperiment=mobilenet_local_weights: accuracy" cut at both ends


def test_compare_tables_are_whole_when_piped(
    tmp_path: Path, long_label_runs: list[str], capsys: pytest.CaptureFixture
) -> None:
    compare(compare_config(tmp_path, runs=long_label_runs))
    printed = capsys.readouterr().out  # not a terminal: Rich used to cut the tables at 80 columns
    assert "…" not in printed
    header = next(line for line in printed.splitlines() if "Spearman" in line)
    assert "top-20% IoU" in header  # the pairs table keeps its map columns
    pair = [line for line in printed.splitlines() if "mobilenet_local_weights" in line and "finetune_lowlr" in line]
    assert len(pair) == 1 and "experiment=mobilenet_local_weights" in pair[0] and "[1.00, 1.00, 1.00]" in pair[0]


@pytest.mark.parametrize("damage", ["truncated", "missing_key", "missing_rows"])
def test_damaged_cams_npz_is_a_one_line_error(tmp_path: Path, damage: str) -> None:
    """Issue #19 item 5: a truncated cams.npz, or one without a key or rows, gave BadZipFile/KeyError/IndexError."""
    paths = make_images(tmp_path / "photos", [("cat", "a.jpg"), ("dog", "b.jpg")])
    cams = np.ones((2, 2, 2), np.float32)
    a = make_run(tmp_path / "runs", "A", paths, ["cat", "dog"], [0.9, 0.8], cams)
    b = make_run(tmp_path / "runs", "B", paths, ["cat", "cat"], [0.9, 0.8], cams)
    file = b / "cams.npz"
    if damage == "truncated":
        file.write_bytes(file.read_bytes()[: len(file.read_bytes()) // 2])
    else:
        with np.load(file) as npz:
            arrays = {key: npz[key] for key in npz.files}
        if damage == "missing_key":
            del arrays["class_idx"]
        else:
            arrays["cams"] = arrays["cams"][:1]  # paths name two images, maps for one
        np.savez_compressed(file, **arrays)
    with pytest.raises(CatdogError, match="cams.npz") as err:
        compare(compare_config(tmp_path, runs=[str(a), str(b)]))
    one_line(err)


# --- issue 19 item 2: compare reads and copies only files inside each explain/run folder -----------
def test_compare_never_copies_or_reads_a_file_a_symlink_points_to(
    tmp_path: Path, two_runs: tuple[Path, Path, list[str]]
) -> None:
    a, b, _ = two_runs
    secret = tmp_path / "elsewhere" / "passwd"
    secret.parent.mkdir(exist_ok=True)
    payload = b"\xff\xd8root:x:0:0 " + bytes(range(40))
    secret.write_bytes(payload)
    overlay = pd.read_csv(a / "predictions.csv")["overlay"][0]
    (a / "thumbs" / overlay).parent.mkdir(parents=True)
    (a / "thumbs" / overlay).symlink_to(secret)  # the demonstrated attack: -> report/assets/thumb_0_0.jpg
    secret_config = tmp_path / "elsewhere" / "config.yaml"
    secret_config.write_text("optimizer:\n  lr: TOPSECRET\n")
    config = a.parent.parent / ".hydra" / "config.yaml"
    config.unlink()
    config.symlink_to(secret_config)  # run metadata that is another file
    result = compare(compare_config(tmp_path, runs=[str(a.parent.parent), str(b.parent.parent)]))
    out = Path(result["out_dir"])
    written = [p.read_bytes() for p in out.rglob("*") if p.is_file()]
    assert all(payload not in data and b"TOPSECRET" not in data for data in written)
    assert "TOPSECRET" not in " ".join(result["labels"])
    (a / "cams.npz").rename(tmp_path / "elsewhere" / "cams.npz")
    (a / "cams.npz").symlink_to(tmp_path / "elsewhere" / "cams.npz")
    with pytest.raises(CatdogError, match="cams.npz inside it") as err:
        runs = [str(a.parent.parent), str(b.parent.parent)]
        compare(compare_config(tmp_path, runs=runs, out_dir=str(tmp_path / "c2")))
    assert "\n" not in str(err.value)


# --- issue 19 item 1: compare's overwrite never deletes a run, an explain folder or their ancestors ---
def test_compare_refuses_to_replace_inputs_before_any_work(
    tmp_path: Path, two_runs: tuple[Path, Path, list[str]]
) -> None:
    a, b, _ = two_runs
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    for out_dir in (a, a.parent.parent, tmp_path / "runs", tmp_path / "photos"):
        runs = [str(a.parent.parent), str(b.parent.parent)]
        cfg = compare_config(tmp_path, runs=runs, out_dir=str(out_dir), overwrite=True)
        with pytest.raises(CatdogError, match="cannot be replaced") as err:
            compare(cfg)
        one_line(err)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before

"""Scale: 1 vs 2 processes give the same explain folder, precision=auto, bounded originals, shards.

Tiny synthetic images and a random ResNet18 at 32 px; no timing assertions (speed lives in bench/).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import helpers
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import run_two_processes, save_checkpoint, write_images

from catdog.data import build_transform, load_rgb
from catdog.explain import engine as predict
from catdog.explain.engine import resolve_precision, share_of
from catdog.explain.pipeline import explain
from catdog.maps.cam import select_classes

CLASSES = ["cat", "dog"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random (untrained) ResNet18 whose maps and probabilities differ from image to image."""
    return save_checkpoint(tmp_path_factory.mktemp("run") / "checkpoints" / "best.ckpt", CLASSES, favourite=None)


def explain_cfg(ckpt: Path, *overrides: str):
    return helpers.explain_cfg(ckpt, *overrides, batch_size=3)


def reference_cams(ckpt: Path, paths: list[str], labels: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Probabilities, class indices and CAMs computed directly, image by image (batch 1), from the fc weights."""
    from catdog.models import load_classifier

    model = load_classifier(ckpt)
    net = model.net.eval()
    transform = build_transform(32, model.hparams.mean, model.hparams.std, train=False)
    body = torch.nn.Sequential(*list(net.children())[:-2])  # resnet: everything before avgpool and fc
    probs, classes, maps = [], [], []
    with torch.no_grad():
        for path, label in zip(paths, labels):
            x = transform(load_rgb(path))[None]
            features = body(x)[0]  # [K, h, w]
            logits = net(x)
            idx = select_classes(logits, topk=1, true_labels=torch.tensor([label]))[0]
            probs.append(logits.softmax(1)[0].numpy())
            classes.append(idx.numpy())
            maps.append(torch.einsum("mk,khw->mhw", net.fc.weight[idx], features).numpy())
    return np.stack(probs), np.stack(classes), np.stack(maps)


@pytest.mark.slow
def test_two_processes_write_the_same_explain_folder_as_one(checkpoint: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    write_images(images, {"cat": 5, "dog": 4}, size=(48, 40))
    write_images(images / "more", {"cat": 2}, size=(40, 48), seed=3)  # the same file names in another folder
    (images / "dog" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    for k in range(4):  # dotted stems: overlay names keep the full stem, the same with 1 or 2 processes
        (images / "cat" / f"cat.{k}.png").write_bytes((images / "cat" / f"cat_{k}.png").read_bytes())

    one = Path(explain(explain_cfg(checkpoint, f"data.root={images}", f"out_dir={tmp_path / 'one'}"))["out_dir"])
    args = (f"ckpt={checkpoint}", f"data.root={images}", f"out_dir={tmp_path / 'two'}", "data.batch_size=3")
    result = run_two_processes("explain", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    two = tmp_path / "two"
    assert json.loads((two / "summary.json").read_text())["processes"] == 2
    assert json.loads((one / "summary.json").read_text())["processes"] == 1
    assert not (two / ".shards").exists()

    a = pd.read_csv(one / "predictions.csv").sort_values("path", ignore_index=True)
    b = pd.read_csv(two / "predictions.csv").sort_values("path", ignore_index=True)
    assert len(a) == 15 and a["path"].is_unique  # every readable image once: none lost, none twice
    pd.testing.assert_frame_equal(a, b, check_exact=False, atol=1e-4)
    assert b["overlay"].is_unique and all((two / rel).is_file() for rel in b["overlay"])  # issue 19 item 6
    assert pd.read_csv(one / "skipped.csv")["path"].tolist() == pd.read_csv(two / "skipped.csv")["path"].tolist()
    for rel in b["overlay"]:
        assert (two / rel).is_file() and (two / "thumbs" / rel).is_file()

    with np.load(one / "cams.npz") as npz_one, np.load(two / "cams.npz") as npz_two:
        assert npz_one["paths"].tolist() == npz_two["paths"].tolist()  # input order, not rank order
        assert np.array_equal(npz_one["class_idx"], npz_two["class_idx"])
        assert np.allclose(npz_one["cams"].astype(np.float32), npz_two["cams"].astype(np.float32), atol=1e-2)
        # and both are right: against CAMs computed independently, one image at a time
        order = npz_one["paths"].tolist()
        labels = [CLASSES.index(Path(p).parent.name) for p in order]
        probs, classes, maps = reference_cams(checkpoint, order, labels)
        assert np.array_equal(npz_one["class_idx"], classes)
        assert np.allclose(npz_one["cams"].astype(np.float32), maps, rtol=2e-3, atol=2e-3)
    by_path = a.set_index("path").loc[order]
    assert np.allclose(by_path[["p_cat", "p_dog"]].to_numpy(), probs, atol=1e-5)


def test_share_of_splits_every_index_exactly_once() -> None:
    for count in (0, 1, 5, 11, 100):
        for world in (1, 2, 3, 8):
            shares = [share_of(count, rank, world) for rank in range(world)]
            covered = [i for start, stop in shares for i in range(start, stop)]
            assert covered == list(range(count))


def test_precision_auto_follows_the_cpu_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(predict, "cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
    assert resolve_precision("auto", "cpu")[0] == "bf16-mixed"
    monkeypatch.setattr(predict, "cpu_flags", lambda: {"avx2", "amx_bf16", "amx_tile"})
    assert resolve_precision("auto", "cpu")[0] == "bf16-mixed"
    monkeypatch.setattr(predict, "cpu_flags", lambda: {"avx2", "fma"})
    name, record = resolve_precision("auto", "cpu")
    assert name == "32-true" and record["used"] == "32" and "neither" in record["reason"]
    assert resolve_precision("bf16", "cpu")[1]["reason"] == "requested"
    monkeypatch.setattr(predict, "cpu_flags", lambda: None)  # no flags: the timed check decides
    predict._bf16_speedup_cpu.cache_clear()
    first = resolve_precision("auto", "cpu")[1]
    assert first["reason"].startswith("timed check")
    # explain asks twice (BatchNorm folding, then the run): one timing, so one answer.
    assert resolve_precision("auto", "cpu")[1] == first
    assert predict._bf16_speedup_cpu.cache_info().misses == 1


def test_huge_and_extreme_images_are_drawn_from_a_bounded_copy(checkpoint: Path, tmp_path: Path) -> None:
    images = tmp_path / "images" / "cat"
    images.mkdir(parents=True)
    cv2.imwrite(str(images / "strip.png"), np.full((8, 70000, 3), 120, np.uint8))
    cv2.imwrite(str(images / "big.png"), np.random.default_rng(0).integers(0, 255, (300, 200, 3), dtype=np.uint8))
    summary = explain(
        explain_cfg(checkpoint, f"data.root={images.parent}", "overlay.max_size=64", "precision=auto")
    )
    out = Path(summary["out_dir"])
    assert summary["images"] == 2 and summary["skipped"] == 0
    assert summary["precision_check"]["requested"] == "auto" and summary["precision"] in ("32", "bf16")
    predictions = pd.read_csv(out / "predictions.csv")
    for row in predictions.itertuples():
        overlay = cv2.imread(str(out / row.overlay))
        assert max(overlay.shape[:2]) <= 2 * 64 + 4  # at most two panels of a 64 px copy
        height, width = (8, 70000) if row.path.endswith("strip.png") else (300, 200)
        assert 0 <= row.peak_x < width and 0 <= row.peak_y < height  # peaks in the original's pixels


def test_bounded_copy_keeps_the_aspect_and_looks_like_area_interpolation() -> None:
    # A smooth picture with detail at every scale the pyramid passes (gradients plus a soft blob).
    yy, xx = np.mgrid[0:900, 0:1300].astype(np.float32)
    blob = 128 + 100 * np.exp(-((xx - 650) ** 2 + (yy - 450) ** 2) / 1e5)
    picture = np.stack([xx / 1300 * 255, yy / 900 * 255, blob], -1)
    picture = picture.astype(np.uint8)
    small = predict.bounded_copy(picture, 220)
    assert small.shape == (152, 220, 3)  # longest side 220, aspect 900/1300 kept (152.3 -> 152)
    reference = cv2.resize(picture, (220, 152), interpolation=cv2.INTER_AREA)
    assert np.abs(small.astype(int) - reference.astype(int)).mean() < 1.5
    assert predict.bounded_copy(picture, 2000) is picture  # small enough: no copy
    strip = predict.bounded_copy(np.zeros((8, 70000, 3), np.uint8), 64)
    assert max(strip.shape[:2]) == 64 and min(strip.shape[:2]) >= 1


def test_originals_travel_packed_in_one_shared_buffer_and_come_back_unchanged(tmp_path: Path) -> None:
    paths = [str(p) for p in write_images(tmp_path, {"cat": 3}, size=(50, 30))]
    paths += [str(p) for p in write_images(tmp_path / "more", {"dog": 2}, size=(41, 67), seed=1)]
    (tmp_path / "broken.png").write_bytes(b"not an image")
    paths.insert(2, str(tmp_path / "broken.png"))
    dataset = predict.ExplainDataset(paths, build_transform(32, [0.5] * 3, [0.5] * 3, train=False))
    loader = torch.utils.data.DataLoader(dataset, batch_size=6, num_workers=1, collate_fn=predict.collate_explain)
    (batch,) = list(loader)
    assert batch.indices == [0, 1, 3, 4, 5] and [index for index, _ in batch.errors] == [2]
    assert batch.packed_originals.is_shared()  # one shared-memory segment for the whole batch
    for view, index in zip(batch.originals, batch.indices, strict=True):
        np.testing.assert_array_equal(view.numpy(), load_rgb(paths[index]))
    assert batch.images.shape == (5, 3, 32, 32) and batch.images.is_shared()

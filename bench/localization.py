"""Localization and faithfulness of catdog's maps on every localization set, both alignments side by side.

Sets (each made here, from data the developer machine has):
- ``demo``: the demo run's test split with its boxes.csv (cat, dog; "none" has no box);
- ``coral``: ../shared/data/coral/dog_segmentation.bmp with its mask (a trimap: value 0 is the dog);
- ``pasted``: held-out photos of ../shared/data/catdog pasted at a random place and scale (40-60% of the
  side) onto a heavily blurred other photo, with the pasted box as boxes.csv;
- ``mosaic``: ``localization=mosaic`` on the held-out photos (2x2 mosaics, two classes).

For each set it runs ``scripts/explain.py`` with ``align=cell`` and ``align=receptive_field`` (and the
``contrast`` options with ``--contrast``), then prints one markdown table row per run::

    python bench/localization.py --demo-run runs/demo/<ts> --photo-run runs/mnv2/<ts> --out runs/bench
    python bench/localization.py --photo-run runs/mnv2/<ts> --faithfulness --limit 64

Results are written down in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from catdog.data import load_rgb

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def make_coral(out: Path) -> Path | None:
    """The coral photo under dogs/ (the class folder of the catdog models) and a masks.csv."""
    photo, mask = SHARED / "coral" / "dog_segmentation.bmp", SHARED / "coral" / "dog_segmentation_mask.bmp"
    if not photo.is_file():
        return None
    (out / "dogs").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out / "dogs" / "dog_segmentation.png"), cv2.imread(str(photo)))
    # The coral mask is a trimap (Oxford-IIIT Pet style, shifted): 0 dog, 1 background, 2 border.
    trimap = cv2.imread(str(mask))[..., 0]
    cv2.imwrite(str(out / "dog_segmentation_mask.png"), np.where(trimap == 0, 255, 0).astype(np.uint8))
    pd.DataFrame({"path": ["dogs/dog_segmentation.png"], "mask": ["dog_segmentation_mask.png"]}).to_csv(
        out / "masks.csv", index=False
    )
    return out


def make_pasted(split_csv: Path, out: Path, size: int = 448, seed: int = 0) -> Path:
    """Held-out photos pasted onto blurred other photos, with boxes.csv."""
    split = pd.read_csv(split_csv)
    test = split[split["split"] == "test"].reset_index(drop=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i, row in test.iterrows():
        photo = load_rgb(row["path"])
        other = load_rgb(test["path"][(i + 1 + int(rng.integers(len(test) - 1))) % len(test)])
        canvas = cv2.GaussianBlur(cv2.resize(other, (size, size)), (0, 0), sigmaX=size / 12)
        scale = rng.uniform(0.4, 0.6) * size / max(photo.shape[:2])
        w, h = max(1, round(photo.shape[1] * scale)), max(1, round(photo.shape[0] * scale))
        x0, y0 = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
        canvas[y0 : y0 + h, x0 : x0 + w] = cv2.resize(photo, (w, h), interpolation=cv2.INTER_AREA)
        relative = f"{row['label']}/{Path(row['path']).stem}.png"
        (out / row["label"]).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out / relative), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
        rows.append((relative, x0, y0, x0 + w, y0 + h))
    pd.DataFrame(rows, columns=["path", "x0", "y0", "x1", "y1"]).to_csv(out / "boxes.csv", index=False)
    return out


def run_explain(ckpt: Path, out_dir: Path, *overrides: str) -> tuple[dict, float]:
    """One explain run into a fresh folder; its summary and wall time."""
    start = time.perf_counter()
    command = [sys.executable, str(ROOT / "scripts" / "explain.py"), f"ckpt={ckpt}", f"out_dir={out_dir}", *overrides]
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return json.loads((out_dir / "summary.json").read_text()), time.perf_counter() - start


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def pointing_row(name: str, overrides: list[str], summary: dict) -> str:
    game = summary.get("pointing_game") or {}
    classes = game.get("per_class") or {}
    per_class = "; ".join(
        f"{c} {pct(t['strict_hit_rate'])}/{pct(t['hit_rate'])}" for c, t in classes.items()
    )
    return (
        f"| {name} | {' '.join(overrides)} | {game.get('images')} | {pct(game.get('strict_hit_rate'))} | "
        f"{pct(game.get('hit_rate'))} | {pct(game.get('centre_strict_hit_rate'))} | "
        f"{pct(game.get('centre_hit_rate'))} | "
        f"{pct(game.get('energy_in_box'))} | {per_class} |"
    )


def mosaic_row(overrides: list[str], summary: dict) -> str:
    mosaic = summary["mosaic"]
    per_class = "; ".join(
        f"{c} {pct(t['peak_on_own_tile'])}/{pct(t['energy_on_own_tiles'])}" for c, t in mosaic["per_class"].items()
    )
    return (
        f"| mosaic | {' '.join(overrides)} | {mosaic['mosaics']} | {pct(mosaic['peak_on_own_tile'])} | "
        f"{pct(mosaic['energy_on_own_tiles'])} | {per_class} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo-run", type=Path, help="a demo training run folder")
    parser.add_argument("--photo-run", type=Path, help="a run fine-tuned on ../shared/data/catdog")
    parser.add_argument("--ckpt-name", default="best.ckpt", help="checkpoint file in <run>/checkpoints")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_localization")
    parser.add_argument("--contrast", nargs="*", default=["none"], help="contrast options to compare")
    parser.add_argument("--faithfulness", action="store_true", help="time each faithfulness metric instead")
    parser.add_argument("--limit", type=int, default=64, help="images for the faithfulness timing")
    parser.add_argument("--mosaics", type=int, default=100)
    parser.add_argument("--max-images", type=int, default=None, help="explain a class-balanced sample of each set")
    parser.add_argument("--sets", nargs="*", default=["demo", "coral", "pasted", "mosaic"], help="which sets")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%H%M%S")
    common = ["data.num_workers=1", "overlay.writers=1"]
    if args.max_images and not args.faithfulness:
        common.append(f"data.max_images={args.max_images}")

    if args.faithfulness:
        ckpt = args.photo_run / "checkpoints" / args.ckpt_name
        print("| metrics | images | seconds | s/image | extra s/image over plain explain | summary |")
        print("| --- | --- | --- | --- | --- | --- |")
        base = None
        for metrics in ([], ["deletion"], ["insertion"], ["drop_increase"], ["sanity"]):
            out = args.out / f"faith-{stamp}-{'_'.join(metrics) or 'none'}"
            over = [*common, f"data.max_images={args.limit}", f"metrics=[{','.join(metrics)}]"]
            summary, seconds = run_explain(ckpt, out, *over)
            base = seconds if base is None else base
            faith = summary.get("faithfulness") or {}
            values = ", ".join(f"{k} {v:.3f}" for k, v in faith.items() if k != "images" and v is not None)
            print(
                f"| {','.join(metrics) or '(none)'} | {summary['images']} | {seconds:.1f} | "
                f"{seconds / summary['images']:.3f} | {(seconds - base) / summary['images']:.3f} | {values} |",
                flush=True,
            )
        return

    print(
        "| set | settings | images | strict % | tolerance % | centre strict % | centre tol. % | energy % "
        "| per class strict/tol. % |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    sets: list[tuple[str, Path, list[str]]] = []
    if args.demo_run:
        sets.append(("demo", args.demo_run / "checkpoints" / args.ckpt_name, []))
    if args.photo_run:
        ckpt = args.photo_run / "checkpoints" / args.ckpt_name
        coral = make_coral(args.out / "coral") if "coral" in args.sets else None
        if coral:
            sets.append(("coral", ckpt, [f"data.root={coral}"]))
        if "pasted" in args.sets:
            pasted = make_pasted(args.photo_run / "split.csv", args.out / "pasted")
            sets.append(("pasted", ckpt, [f"data.root={pasted}"]))
    mosaic_rows = []
    for name, ckpt, extra in sets:
        for contrast in args.contrast:
            for align in ("cell", "receptive_field"):
                over = [f"align={align}", f"contrast={contrast}"]
                out = args.out / f"{name}-{stamp}-{align}-{contrast}"
                summary, _ = run_explain(ckpt, out, *common, *extra, *over)
                print(pointing_row(name, over, summary), flush=True)
    if args.photo_run and "mosaic" in args.sets:
        ckpt = args.photo_run / "checkpoints" / args.ckpt_name
        for contrast in args.contrast:
            for align in ("cell", "receptive_field"):
                over = [f"align={align}", f"contrast={contrast}"]
                out = args.out / f"mosaic-{stamp}-{align}-{contrast}"
                summary, _ = run_explain(
                    ckpt, out, *common, *over, "localization=mosaic", f"mosaic.count={args.mosaics}"
                )
                mosaic_rows.append(mosaic_row(over, summary))
        print("\n| set | settings | mosaics | peak on own tiles % | energy on own tiles % | per class peak/energy % |")
        print("| --- | --- | --- | --- | --- | --- |")
        print("\n".join(mosaic_rows))


if __name__ == "__main__":
    main()

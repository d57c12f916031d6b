"""Peak memory of a whole ``scripts/explain.py`` process at two dataset sizes (flat memory check).

The images are the photos of ``--images`` repeated through symlinks (``--sizes 2000,20000``: each photo
listed 1 and 10 times, under distinct names), explained with the same settings at both sizes. Resident
memory is sampled every 0.1 s from /proc: the explain process alone, and the explain process plus its
DataLoader workers (the sum over the process tree). Linux only.

    python bench/explain_memory.py --images ../shared/data/catdog --sizes 2000,20000

Results are written down in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from catdog.data import IMAGE_EXTENSIONS
from catdog.models import ClassifierModule

ROOT = Path(__file__).resolve().parents[1]


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        todo += children(current)
    return pids


def run_and_watch(command: list[str]) -> tuple[float, int, int]:
    """Run ``command``; return its wall time, peak RSS of the process and of its process tree (KiB)."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peaks = {"main": 0, "tree": 0}

    def watch() -> None:
        while process.poll() is None:
            peaks["main"] = max(peaks["main"], rss_kib(process.pid))
            peaks["tree"] = max(peaks["tree"], sum(rss_kib(p) for p in tree(process.pid)))
            time.sleep(0.1)

    start = time.perf_counter()
    watcher = threading.Thread(target=watch)
    watcher.start()
    _, stderr = process.communicate()  # read as it comes: a full pipe would block the process
    code = process.returncode
    watcher.join()
    if code:
        raise SystemExit(f"{' '.join(command)} failed with exit code {code}:\n{stderr[-2000:]}")
    return time.perf_counter() - start, peaks["main"], peaks["tree"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", required=True)
    parser.add_argument("--sizes", default="2000,20000")
    parser.add_argument("--image-size", type=int, default=64, help="model input (small: the check is memory)")
    parser.add_argument("--max-size", type=int, default=128, help="overlay.max_size")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=2)
    args = parser.parse_args()

    photos = sorted(p for p in Path(args.images).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    class_names = sorted({p.parent.name for p in photos})
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        model = ClassifierModule(arch="resnet18", class_names=class_names, weights=None, image_size=args.image_size)
        ckpt = Path(tmp, "run", "checkpoints", "best.ckpt")
        ckpt.parent.mkdir(parents=True)
        torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, ckpt)
        rows = []
        for size in sizes:
            folder = Path(tmp, f"images_{size}")
            for i in range(size):
                photo = photos[i % len(photos)]
                link = folder / photo.parent.name / f"{photo.stem}_{i // len(photos)}{photo.suffix}"
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(photo.resolve())  # a relative target would resolve against the link
            command = [
                sys.executable,
                str(ROOT / "scripts" / "explain.py"),
                f"ckpt={ckpt}",
                f"data.root={folder}",
                f"out_dir={Path(tmp, f'out_{size}')}",
                f"data.batch_size={args.batch_size}",
                f"data.num_workers={args.num_workers}",
                f"overlay.max_size={args.max_size}",
                "accelerator=cpu",
            ]
            seconds, main_kib, tree_kib = run_and_watch(command)
            rows.append((size, seconds, main_kib, tree_kib))
            print(f"{size} images: {seconds:.0f} s, peak RSS {main_kib / 1024:.0f} MiB (process), "
                  f"{tree_kib / 1024:.0f} MiB (with workers)", flush=True)
    print(f"\nresnet18 {args.image_size}px, overlay.max_size={args.max_size}, batch {args.batch_size}, "
          f"{args.num_workers} workers")
    print("| images | seconds | peak RSS, explain process | peak RSS, with DataLoader workers |")
    print("| --- | --- | --- | --- |")
    for size, seconds, main_kib, tree_kib in rows:
        print(f"| {size} | {seconds:.0f} | {main_kib / 1024:.0f} MiB | {tree_kib / 1024:.0f} MiB |")
    first, last = rows[0], rows[-1]
    ratios = f"process {last[2] / first[2]:.3f}, with workers {last[3] / first[3]:.3f}"
    print(f"ratio {last[0]} / {first[0]} images: {ratios}")


if __name__ == "__main__":
    main()

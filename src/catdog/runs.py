"""Run folders, explain folders and checkpoints: the one place that knows their paths.

Train writes ``runs/<task>/<timestamp>/`` (see README), a sweep ``<multirun folder>/<job number>/``;
explain writes ``<run>/explain/<timestamp>/``; compare writes ``compare/<timestamp>/``. Explain, compare
and the report resolve every such path through this module, and create output folders through
:func:`staged_output_dir`, which writes into a hidden temporary sibling and renames it into place only
when the work completed, so a killed run never leaves a folder that looks complete.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from catdog.errors import CatdogError

log = logging.getLogger(__name__)

__all__ = [
    "COMPLETE_MARKER",
    "OUTPUT_MARKER",
    "check_output_dir",
    "contained",
    "explain_dirs_of",
    "explain_dirs_with_cams",
    "holds_catdog_runs",
    "is_catdog_output_dir",
    "is_complete_explain_dir",
    "is_staging_dir",
    "normalised",
    "replace_refusal",
    "resolve_checkpoint",
    "run_dir_of",
    "run_dir_of_explain",
    "staged_output_dir",
    "sweep_runs",
    "timestamped_dir",
    "triage_dirs_of",
]

# Written last into every explain folder: its presence means the folder is complete.
COMPLETE_MARKER = "summary.json"
_STAGING_PREFIX = "."
_STAGING_SUFFIX = ".partial"


def resolve_checkpoint(ckpt: str | Path, runs_dir: str | Path = "runs", multirun_dir: str | Path | None = None) -> Path:
    """Turn ``ckpt=`` (a checkpoint file, a run folder, or ``latest``) into a checkpoint file.

    ``latest`` is the most recently written ``best.ckpt`` below ``runs_dir`` and ``multirun_dir`` (the jobs of
    sweeps); the choice is printed, so that the user sees which run was picked.

    Raises:
        CatdogError: nothing usable at that path.
    """
    if str(ckpt) == "latest":
        return _latest_checkpoint([Path(d) for d in (runs_dir, multirun_dir) if d is not None])
    path = Path(ckpt).expanduser()
    if path.is_dir():
        for folder in (path / "checkpoints", path):
            best = _newest_best(folder)
            if best is not None:
                return best
        if (path / "checkpoints" / "last.ckpt").is_file():
            return path / "checkpoints" / "last.ckpt"
        raise CatdogError(
            f"ckpt={ckpt} is a folder without checkpoints/best.ckpt: pass a .ckpt file or a run folder "
            "written by scripts/train.py"
        )
    if not path.is_file():
        raise CatdogError(f"ckpt={ckpt} does not exist: pass a .ckpt file or a run folder written by scripts/train.py")
    return path


def _newest_best(folder: Path) -> Path | None:
    """The most recently written ``best.ckpt`` or ``best-v<N>.ckpt`` in a folder, or None.

    Train overwrites best.ckpt, but a run folder reused by an older catdog (or another Lightning setup) may
    hold a stale best.ckpt beside the newer run's best-v1.ckpt: the newest is the one that matches split.csv.
    """
    found = [p for p in folder.glob("best*.ckpt") if re.fullmatch(r"best(-v\d+)?\.ckpt", p.name) and p.is_file()]
    return max(found, key=lambda p: (p.stat().st_mtime, p.name)) if found else None


def _latest_checkpoint(folders: list[Path]) -> Path:
    """The newest ``checkpoints/best.ckpt`` below ``folders``, printed with its run folder and age."""
    candidates = [p for folder in folders for p in folder.glob("**/checkpoints/best.ckpt")]
    if not candidates:
        where = " or ".join(str(folder) for folder in folders)
        raise CatdogError(f"ckpt=latest found no checkpoints/best.ckpt below {where}: train first, or pass ckpt=")
    latest = max(candidates, key=lambda p: p.stat().st_mtime)
    age = datetime.now() - datetime.fromtimestamp(latest.stat().st_mtime)
    minutes = int(age.total_seconds() // 60)
    when = f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"
    print(f"ckpt=latest: {latest} (the newest of {len(candidates)} run(s), written {when} ago)", flush=True)
    return latest


def run_dir_of(checkpoint: Path) -> Path:
    """The run folder a checkpoint belongs to (``<run>/checkpoints/best.ckpt`` -> ``<run>``)."""
    checkpoint = Path(checkpoint)
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent


def run_dir_of_explain(folder: Path, summary: dict[str, Any]) -> Path | None:
    """The run folder an explain folder belongs to, or None (a lone checkpoint's explain)."""
    if folder.parent.name == "explain":  # the default <run>/explain/<timestamp>
        return folder.parent.parent
    checkpoint = (summary.get("checkpoint") or {}).get("path")
    return run_dir_of(Path(checkpoint)) if checkpoint else None


def contained(folder: str | os.PathLike[str], relative: str | os.PathLike[str]) -> Path | None:
    """``folder/relative`` resolved, only when it is a file inside ``folder``: the one check before catdog
    reads or copies a file of an explain, run or compare folder (report, compare, readers).

    Those folders are user-editable: a ``..``, an absolute path or a symbolic link leading out of the folder
    must never make catdog read (and publish) another file. Such a path is skipped with a logged note.

    Returns:
        The resolved file; None when it is missing or leads outside ``folder``.
    """
    base = Path(os.path.realpath(folder))
    candidate = Path(os.path.realpath(base / relative))
    if not candidate.is_relative_to(base):
        if os.path.lexists(base / relative):
            log.warning("skipped %s: it leads outside %s (to %s)", Path(folder, relative), folder, candidate)
        return None
    return candidate if candidate.is_file() else None


def is_complete_explain_dir(folder: Path) -> bool:
    """A finished explain folder: not a staging folder, and its summary.json (written last) exists."""
    return not folder.name.startswith(_STAGING_PREFIX) and (folder / COMPLETE_MARKER).is_file()


def is_staging_dir(folder: Path) -> bool:
    """A hidden staging folder of :func:`staged_output_dir` (an unfinished or interrupted run)."""
    name = Path(folder).name
    return name.startswith(_STAGING_PREFIX) and (name.endswith(_STAGING_SUFFIX) or ".old-" in name)


# Files that only catdog's explain and compare folders hold (explain writes its config first).
_OUTPUT_SIGNATURES = (("explain_config.yaml",), ("predictions.csv", "summary.json"), ("pairs.csv", "per_image.csv"))


def is_catdog_output_dir(folder: Path) -> bool:
    """An explain, evaluate or compare folder (finished or staging) or a run folder: its images are ours
    (overlays, curves), not input data."""
    folder = Path(folder)
    if is_staging_dir(folder) or (folder / OUTPUT_MARKER).is_file() or (folder / ".hydra").is_dir():
        return True  # staging, any folder catdog's marker names, a run folder (curves.png is not a photo)
    return any(all((folder / name).is_file() for name in names) for names in _OUTPUT_SIGNATURES)


def holds_catdog_runs(folder: Path, depth: int = 3) -> bool:
    """``folder`` is, or holds within ``depth`` levels, a run (``.hydra``) or catdog output: the ``runs/`` folder
    Hydra makes in the working directory (``data.root=.``) is never a class of images."""
    folder = Path(folder)
    if is_catdog_output_dir(folder) or (folder / ".hydra").is_dir() or (folder / OUTPUT_MARKER).is_file():
        return True
    if depth <= 0:
        return False
    try:
        children = [entry for entry in os.scandir(folder) if entry.is_dir(follow_symlinks=False)]
    except OSError:
        return False
    return any(holds_catdog_runs(Path(entry.path), depth - 1) for entry in children if not entry.name.startswith("."))


def explain_dirs_of(run_dir: Path) -> list[Path]:
    """The complete explain folders of a run, oldest first."""
    root = Path(run_dir) / "explain"
    if not root.is_dir():
        return []
    return sorted(d for d in root.iterdir() if d.is_dir() and is_complete_explain_dir(d))


def explain_dirs_with_cams(run_dir: Path) -> list[Path]:
    """A run's explain folders that hold predictions and CAMs, newest first."""
    found = [p for p in explain_dirs_of(run_dir) if (p / "cams.npz").is_file()]
    return sorted(found, key=lambda p: ((p / COMPLETE_MARKER).stat().st_mtime, p.name), reverse=True)


def triage_dirs_of(run_dir: Path) -> list[Path]:
    """The complete triage folders of a run (``<run>/triage/<timestamp>``, summary.json written last), newest last."""
    root = Path(run_dir) / "triage"
    if not root.is_dir():
        return []
    return sorted(d for d in root.iterdir() if d.is_dir() and is_complete_explain_dir(d))


def sweep_runs(sweep: str | Path) -> list[Path]:
    """The run folders of a Hydra multirun: its numbered subfolders, in job order.

    Raises:
        CatdogError: the folder does not exist or has no numbered subfolder with a checkpoint.
    """
    folder = Path(sweep).expanduser()
    if not folder.is_dir():
        raise CatdogError(f"sweep={sweep} is not a folder: pass a multirun folder such as multirun/train/<timestamp>")
    jobs = sorted((p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    if not jobs:
        raise CatdogError(f"sweep={sweep} has no numbered job folders (0, 1, ...): pass the folder train -m wrote")
    return jobs


def timestamped_dir(parent: Path) -> Path:
    """``parent/<YYYY-mm-dd_HH-MM-SS>`` (with ``_1``, ``_2`` ... when taken); not created."""
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    path, n = Path(parent) / stamp, 1
    while path.exists() or _staging_path(path).exists():  # two runs in the same second never share a folder
        path, n = Path(parent) / f"{stamp}_{n}", n + 1
    return path


def _staging_path(final: Path) -> Path:
    return final.with_name(_hidden_name(final.name, _STAGING_SUFFIX))


_NAME_MAX = 255  # bytes per file name on Linux, macOS and Windows file systems


def _hidden_name(name: str, suffix: str) -> str:
    """``.<name><suffix>``, within the file system's 255 bytes: a long name is cut and given a hash of itself."""
    hidden = f"{_STAGING_PREFIX}{name}{suffix}"
    if len(hidden.encode()) <= _NAME_MAX:
        return hidden
    tag = "-" + hashlib.sha256(name.encode()).hexdigest()[:12]
    room = _NAME_MAX - len(f"{_STAGING_PREFIX}{tag}{suffix}".encode())
    cut = name.encode()[:room].decode(errors="ignore")  # never half a UTF-8 character
    return f"{_STAGING_PREFIX}{cut}{tag}{suffix}"


# What writing an output folder can meet on a full, read-only or failing disk: said in one line.
_DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS}


# Written first into every folder staged_output_dir makes (and kept): what tells a folder catdog wrote from
# one it must never delete. While a run writes the folder it holds an exclusive lock on this file.
OUTPUT_MARKER = ".catdog-output"
# What a run folder, or a checkpoint, leaves: a folder holding any of these is never replaced.
_RUN_ENTRIES = (".hydra", "checkpoints", "split.csv")


def normalised(path: str | os.PathLike[str]) -> Path:
    """``~`` expanded, absolute, ``.``/``..`` and symbolic links resolved: ``out_dir=.`` and ``<run>/..``
    name the folders they are."""
    return Path(os.path.realpath(os.path.expanduser(os.fspath(path))))


def replace_refusal(folder: str | os.PathLike[str], keep: Sequence[str | os.PathLike[str]] = ()) -> str | None:
    """Why catdog must not delete ``folder`` (None: it may). The one rule for every deletion and overwrite.

    A missing or empty folder may be replaced. Any other only when catdog wrote it: it holds
    :data:`OUTPUT_MARKER` listing the files the completed run wrote, and no other file (an interrupted run's
    staging folder lists none: all of it is catdog's); it holds no run or checkpoint (``.hydra``,
    ``checkpoints/``, ``split.csv``, ``*.ckpt`` at any depth); and it is not, and does not hold, any of
    ``keep`` (the run's inputs, run folder and checkpoint) or the current folder. ``folder`` itself must
    not be a symbolic link. Paths are normalised first (``~``, ``.``, ``..``, links).
    """
    given = Path(os.path.abspath(os.path.expanduser(os.fspath(folder))))
    if given.is_symlink():
        return f"{given} is a symbolic link"
    if not given.exists():
        return None
    if not given.is_dir():
        return f"{given} is a file"
    if not any(given.iterdir()):
        return None
    path = normalised(given)
    for kept in [*keep, os.getcwd()]:
        kept_path = normalised(kept)
        if kept_path == path or kept_path.is_relative_to(path):
            return f"{given} holds {kept_path}"
    written = _written_files(path)
    if written is None:
        return f"{given} was not written by catdog (it has no {OUTPUT_MARKER} file)"
    for root, dirs, files in os.walk(path):  # does not follow symbolic links
        found = [n for n in (*dirs, *files) if n in _RUN_ENTRIES or n.endswith(".ckpt")]
        if found:
            return f"{given} holds {Path(root, found[0])}, a run's or checkpoint's file"
        for name in files:
            rel = Path(root, name).relative_to(path).as_posix()
            if rel != OUTPUT_MARKER and written is not _ANY and rel not in written:  # type: ignore[operator]
                return f"{given} holds {Path(root, name)}, which catdog did not write"
    return None


_ANY = object()  # an interrupted run's staging folder: it never listed its files, all are catdog's


def _written_files(folder: Path) -> frozenset[str] | object | None:
    """The files catdog listed in ``folder``'s marker when it completed it; None: no marker (not catdog's)."""
    try:
        record = json.loads((folder / OUTPUT_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("written_by") != "catdog":
        return None
    files = record.get("files")
    if files is None:
        return _ANY if is_staging_dir(folder) else None
    return frozenset(str(f) for f in files)


def _record_written_files(fd: int, folder: Path) -> None:
    """Complete the marker: the list of files the run wrote (what a later overwrite may delete)."""
    files = sorted(
        Path(root, name).relative_to(folder).as_posix()
        for root, _dirs, names in os.walk(folder)
        for name in names
        if not (root == str(folder) and name == OUTPUT_MARKER)
    )
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"written_by": "catdog", "files": files}).encode(), 0)


def _try_lock(marker: Path) -> int | None:
    """An open descriptor of ``marker`` holding its exclusive lock, or None when another process holds it."""
    import fcntl

    fd = os.open(marker, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _busy(final: Path) -> CatdogError:
    return CatdogError(
        f"out_dir={final} is being written by another catdog run (its staging folder "
        f"{_staging_path(final).name} is locked): wait for it to finish, or choose another out_dir"
    )


def _claim_staging(final: Path, keep: Sequence[str | os.PathLike[str]]) -> tuple[Path, int]:
    """Create ``final``'s staging folder holding the locked marker; a stale one (killed run) is replaced.

    The folder is made under a private name, locked, then renamed into place: no other run ever sees an
    unlocked staging folder of a live run.
    """
    staging = _staging_path(final)
    private = final.with_name(_hidden_name(final.name, f".{os.getpid()}-{uuid.uuid4().hex[:8]}{_STAGING_SUFFIX}"))
    try:
        private.mkdir(parents=True)
    except OSError as err:
        raise CatdogError(f"cannot create the output folder {final}: {err.strerror or err}") from None
    fd = _try_lock(private / OUTPUT_MARKER)
    assert fd is not None  # nobody else knows the private name
    os.write(fd, json.dumps({"written_by": "catdog", "pid": os.getpid()}).encode())
    for _ in range(3):
        try:
            private.rename(staging)
            return staging, fd
        except OSError:  # a staging folder exists: a live run's (locked), or a killed run's
            pass
        if not (staging / OUTPUT_MARKER).is_file():
            shutil.rmtree(private, ignore_errors=True)
            os.close(fd)
            raise CatdogError(
                f"out_dir={final}: {staging} exists but was not made by this version of catdog: remove it, "
                "or choose another out_dir"
            )
        other = _try_lock(staging / OUTPUT_MARKER)
        if other is None:
            shutil.rmtree(private, ignore_errors=True)
            os.close(fd)
            raise _busy(final)
        try:
            refusal = replace_refusal(staging, keep)
            if refusal is not None:
                shutil.rmtree(private, ignore_errors=True)
                raise CatdogError(
                    f"cannot replace the staging folder of out_dir={final}: {refusal}; remove it yourself"
                )
            shutil.rmtree(staging, ignore_errors=True)  # a killed run's partial output (catdog's own)
        finally:
            os.close(other)
    shutil.rmtree(private, ignore_errors=True)
    os.close(fd)
    raise _busy(final)


@contextmanager
def staged_output_dir(
    final: Path, overwrite: bool = False, keep: Sequence[str | os.PathLike[str]] = ()
) -> Iterator[Path]:
    """Yield an empty temporary sibling of ``final``; rename it to ``final`` when the block completes.

    Writers put everything into the yielded folder. Only a block that finishes without an exception
    moves it into place, so ``final`` is either absent, the old complete result, or the new complete
    result: never a mix, never half. With ``overwrite`` an existing ``final`` is replaced whole, and only if
    :func:`replace_refusal` allows it (catdog wrote it; it holds none of ``keep``: inputs, run, checkpoint).
    A block that raises leaves its partial output in the hidden ``.<name>.partial`` folder for inspection;
    the next run into the same folder starts that staging folder afresh. The staging folder stays locked
    while the block runs: a second run into the same ``final`` stops with a one-line error.

    Raises:
        CatdogError: ``final`` is a file, a folder catdog may not replace, non-empty without ``overwrite``,
            being written by another run, or its parent cannot be created.
    """
    final = normalised(final)
    if final.parent == final:
        raise CatdogError(f"out_dir={final} is the file system's root: choose a folder below it")
    _check_writable_target(final, overwrite, keep)
    staging, fd = _claim_staging(final, keep)
    try:
        try:
            yield staging
        except OSError as err:
            if err.errno not in _DISK_ERRORS:
                raise
            raise CatdogError(
                f"writing {final} failed: {err.strerror or err}; nothing was replaced (the partial output is in "
                f"{staging}): free space or choose another out_dir, then run again"
            ) from None
        _record_written_files(fd, staging)
        _check_writable_target(final, overwrite, keep)  # someone may have written it meanwhile
        if final.exists():
            old = final.with_name(_hidden_name(final.name, f".old-{os.getpid()}"))
            final.rename(old)
            staging.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(final)
    finally:
        os.close(fd)


def check_output_dir(
    final: str | os.PathLike[str], overwrite: bool, keep: Sequence[str | os.PathLike[str]] = ()
) -> None:
    """What :func:`staged_output_dir` checks first, for a pipeline to call before its work (not after it).

    Raises:
        CatdogError: ``final`` cannot be written (see :func:`staged_output_dir`).
    """
    _check_writable_target(normalised(final), overwrite, keep)


def _check_writable_target(final: Path, overwrite: bool, keep: Sequence[str | os.PathLike[str]] = ()) -> None:
    if len(final.name.encode()) > _NAME_MAX:
        raise CatdogError(
            f"out_dir={final}: its name is {len(final.name.encode())} bytes, more than the {_NAME_MAX} a file "
            "system allows: choose a shorter name"
        )
    if final.exists() and not final.is_dir():
        raise CatdogError(f"out_dir={final} is a file: choose a folder path")
    for parent in final.parents:
        if parent.exists():
            if not parent.is_dir():
                raise CatdogError(f"out_dir={final}: {parent} is a file, not a folder")
            break
    refusal = replace_refusal(final, keep)
    if refusal is not None:
        raise CatdogError(
            f"out_dir={final} cannot be replaced ({refusal}): catdog only ever replaces a folder it wrote; "
            "choose a new or empty folder"
        )
    if final.is_dir() and any(final.iterdir()) and not overwrite:
        raise CatdogError(
            f"out_dir={final} already holds results: choose a new folder, or add overwrite=true to replace them"
        )

"""Keep glibc's malloc from handing batch-sized buffers back to the kernel after every batch.

By default glibc serves every allocation above a threshold (128 KiB, adapting up to 32 MiB) with its own
``mmap`` and unmaps it on ``free``. An inference loop allocates the same large tensors every batch (a
ResNet's first activations at batch 32 are 100 MB; max pooling also builds a 51 MB index tensor and drops
it), so every batch faults all those pages in again and the kernel zeroes them: ResNet18 at 224 px,
batch 32, faulted ~250 MB per batch, and an explain of 2,000 photos on 2 cores spent 13-14 s of its
~100 CPU seconds in the kernel. With mmap off and a high trim threshold the freed blocks stay in the
heap and the next batch reuses them (bench/RESULTS.md has the measurement).

Only for the length of the batch loop: the heap then holds on to what it has, so afterwards the defaults
come back and the unused heap is returned to the kernel (the tables and the report after the loop grow
with the number of images; a heap that never shrinks would make their peak grow too).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
from collections.abc import Iterator
from typing import Any

# mallopt(3) parameters and glibc's defaults for them (malloc.h, malloc/malloc.c).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_DEFAULT_TRIM_THRESHOLD = 128 * 1024
_DEFAULT_MMAP_MAX = 65536
TRIM_THRESHOLD = 1 << 30  # during the loop: return freed memory at the top of the heap only beyond 1 GiB


def _glibc() -> tuple[ctypes.CDLL | None, str]:
    """glibc's handle, or None and why catdog leaves the allocator alone."""
    if platform.libc_ver()[0] != "glibc":
        return None, f"not glibc ({platform.system()}): the system allocator is used as it is"
    user_settings = sorted(name for name in os.environ if name.startswith(("MALLOC_", "GLIBC_TUNABLES")))
    if user_settings:
        return None, f"left to the user's {', '.join(user_settings)}"
    if "malloc" in os.environ.get("LD_PRELOAD", ""):
        return None, "another allocator is preloaded (LD_PRELOAD)"
    try:
        return ctypes.CDLL("libc.so.6"), ""
    except OSError as err:
        return None, f"libc.so.6 cannot be loaded: {err}"


@contextlib.contextmanager
def reuse_freed_memory(enabled: bool = True) -> Iterator[dict[str, Any]]:
    """Inside the block, glibc keeps freed memory for reuse; DataLoader workers forked inside inherit it.

    Left alone, with the reason recorded, where it does not apply: not glibc (macOS, Windows, musl), the
    user already tuned malloc through ``MALLOC_*`` variables, or another allocator is preloaded.

    Args:
        enabled: False leaves the allocator alone (``tune_malloc=false``).

    Yields:
        What was done, for summary.json: ``{"tuned": True, "mmap_max": 0, "trim_threshold": ...}`` or
        ``{"tuned": False, "reason": ...}``.
    """
    libc, reason = _glibc() if enabled else (None, "tune_malloc=false")
    if libc is None:
        yield {"tuned": False, "reason": reason}
        return
    applied = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    try:
        if applied:
            yield {"tuned": True, "mmap_max": 0, "trim_threshold": TRIM_THRESHOLD}
        else:
            yield {"tuned": False, "reason": "mallopt refused the settings"}
    finally:  # also after a half-applied setting
        libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
        libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
        libc.malloc_trim(0)

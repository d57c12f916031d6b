"""glibc malloc tuning for explain's batch loop: freed buffers are reused, not faulted in again."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import make_config, write_images

from catdog.allocator import reuse_freed_memory
from catdog.explain.pipeline import explain
from catdog.models import ClassifierModule

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")

# Page faults of allocating, filling and freeing a 64 MB buffer (above glibc's largest mmap threshold,
# like a ResNet's first activations at batch 32) in a loop, in a fresh process: glibc's defaults, inside
# reuse_freed_memory, and the memory it keeps, inside and after.
FAULTS_PER_BATCH = """
import json, resource
import torch
from catdog.allocator import reuse_freed_memory

def rss_mib():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) // 1024

def faults_of_last_batches(batches=24, last=4):  # what a loop pays once it runs (the heap grows at first)
    for i in range(batches):
        if i == batches - last:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        buffer = torch.empty(64 << 20, dtype=torch.uint8)
        buffer.fill_(1)
        del buffer
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / last

default = faults_of_last_batches()
with reuse_freed_memory() as record:
    tuned = faults_of_last_batches()
    rss_inside = rss_mib()
print(json.dumps({"default": default, "tuned": tuned, "record": record,
                  "rss_inside": rss_inside, "rss_after": rss_mib()}))
"""


@pytest.mark.slow  # a fresh process: malloc's settings are read when it starts
@glibc_only
def test_tuned_malloc_reuses_a_freed_batch_buffer_instead_of_faulting_it_in_again() -> None:
    env = {"PATH": "/usr/bin:/bin"}  # no MALLOC_* variables: the user's settings would be left alone
    done = subprocess.run([sys.executable, "-c", FAULTS_PER_BATCH], capture_output=True, text=True, env=env, check=True)
    result = json.loads(done.stdout)
    pages = (64 << 20) // 4096
    assert result["record"] == {"tuned": True, "mmap_max": 0, "trim_threshold": 1 << 30}
    assert result["default"] > 0.9 * pages  # glibc's default: every page faults again, every batch
    assert result["tuned"] < 0.05 * pages
    assert result["rss_after"] < result["rss_inside"] - 64  # after the loop the kept heap is returned


def test_users_malloc_settings_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in os.environ if name.startswith("MALLOC_")]:
        monkeypatch.delenv(name)
    monkeypatch.setattr(platform, "libc_ver", lambda: ("glibc", "2.36"))
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    with reuse_freed_memory() as record:
        assert record == {"tuned": False, "reason": "left to the user's MALLOC_ARENA_MAX"}
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
    with reuse_freed_memory() as record:
        assert record["reason"] == "another allocator is preloaded (LD_PRELOAD)"
    monkeypatch.setattr(platform, "libc_ver", lambda: ("", ""))
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    with reuse_freed_memory() as record:
        assert record["reason"].startswith("not glibc (Darwin)")


@glibc_only
def test_explain_records_the_malloc_tuning_in_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in os.environ if name.startswith("MALLOC_")]:
        monkeypatch.delenv(name)
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    torch.manual_seed(0)
    module = ClassifierModule(arch="resnet18", class_names=["cat", "dog"], weights=None, image_size=32)
    ckpt = tmp_path / "best.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, ckpt)
    images = tmp_path / "images"
    write_images(images, {"cat": 1, "dog": 1})
    common = [f"ckpt={ckpt}", f"data.root={images}", "data.num_workers=0", "precision=32"]
    tuned = explain(make_config("explain", [*common, f"out_dir={tmp_path / 'on'}"]))
    assert tuned["malloc"]["tuned"] is True
    off = explain(make_config("explain", [*common, f"out_dir={tmp_path / 'off'}", "tune_malloc=false"]))
    assert off["malloc"] == {"tuned": False, "reason": "tune_malloc=false"}
    assert json.loads((tmp_path / "off" / "summary.json").read_text())["malloc"] == off["malloc"]

"""bench/: the benchmark scripts keep to their own data folders (they never regenerate data/demo)."""

from __future__ import annotations

import re
from pathlib import Path

from helpers import CONF_DIR, ROOT
from omegaconf import OmegaConf


def test_benchmarks_use_their_own_data_folders() -> None:
    demo_root = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "data" / "demo.yaml"))["data"]["root"]
    assert demo_root == "${paths.data_dir}/demo"
    checked = 0
    for script in sorted((ROOT / "bench").glob("*.py")):
        text = script.read_text()
        for argument in re.findall(r"ensure_demo_dataset\(\s*([^,\)]+)", text):
            name = argument.strip()
            assigned = re.search(rf"^{re.escape(name)}\s*=\s*(.+)$", text, re.M)
            value = (assigned.group(1) if assigned else name).strip().strip("\"'")
            folder = Path(value)
            assert folder.name != "demo" and folder.parts[:1] != ("demo",), (script.name, value)
            checked += 1
    assert checked >= 1  # the benchmarks that generate demo-like data do so into their own folder

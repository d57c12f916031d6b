"""catdog: train an image classifier with Lightning + Hydra, then explain it with CAMs."""

from pathlib import Path

__version__ = "0.1.0"

# The Hydra configs (train, explain, evaluate, compare and their groups) ship inside the package, so an
# installed catdog finds them as scripts/*.py in a checkout do: compose with config_dir=str(CONFIG_DIR).
CONFIG_DIR = Path(__file__).resolve().parent / "conf"

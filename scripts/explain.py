"""Explain a checkpoint with CAMs: ``python scripts/explain.py ckpt=<run folder or .ckpt> [key=value ...]``."""

import hydra
from omegaconf import DictConfig

from catdog.cli import exit_on_user_error
from catdog.explain.pipeline import explain


@hydra.main(version_base="1.3", config_path="../src/catdog/conf", config_name="explain")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    explain(cfg)


if __name__ == "__main__":
    main()

"""Compare experiments on the same images: ``python scripts/compare.py runs=[runs/A,runs/B] [key=value ...]``."""

import hydra
from omegaconf import DictConfig

from catdog.cli import exit_on_user_error
from catdog.pipelines.compare import compare


@hydra.main(version_base="1.3", config_path="../src/catdog/conf", config_name="compare")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    compare(cfg)


if __name__ == "__main__":
    main()

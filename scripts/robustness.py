"""Context robustness: ``python scripts/robustness.py ckpt=... [context.backgrounds=<folder>]`` (robustness.yaml)."""

import hydra
from omegaconf import DictConfig

from catdog.cli import exit_on_user_error
from catdog.pipelines.robustness import robustness


@hydra.main(version_base="1.3", config_path="../src/catdog/conf", config_name="robustness")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    robustness(cfg)


if __name__ == "__main__":
    main()

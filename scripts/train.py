"""Train a classifier: ``python scripts/train.py [group=option] [key=value ...]`` (see conf/train.yaml)."""

import hydra
from omegaconf import DictConfig

from catdog.cli import exit_on_user_error
from catdog.pipelines.train import train


@hydra.main(version_base="1.3", config_path="../src/catdog/conf", config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    summary = train(cfg)
    # The best validation score (never the test accuracy, which must not steer model choice)
    # is returned so that Hydra sweepers (e.g. Optuna) can optimise it.
    return summary["objective"]


if __name__ == "__main__":
    main()

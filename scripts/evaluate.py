"""Evaluate a checkpoint: ``python scripts/evaluate.py ckpt=... [data.root=...|data.split=test]`` (see conf/evaluate.yaml)."""

import hydra
from omegaconf import DictConfig

from catdog.cli import exit_on_user_error
from catdog.pipelines.evaluate import evaluate


@hydra.main(version_base="1.3", config_path="../src/catdog/conf", config_name="evaluate")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()

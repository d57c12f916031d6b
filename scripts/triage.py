"""Audit a trained run's data: ``python scripts/triage.py ckpt=<run folder or .ckpt> [key=value ...]``.

Suspected label errors (cleanlab on out-of-sample probabilities), near duplicates and leaks, outliers and
failure slices, in a new triage folder with a report page; see conf/triage.yaml and docs/triage.md.
"""

import hydra
from omegaconf import DictConfig

from catdog.cli import exit_on_user_error
from catdog.triage.pipeline import triage


@hydra.main(version_base="1.3", config_path="../src/catdog/conf", config_name="triage")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    triage(cfg)


if __name__ == "__main__":
    main()

"""Train a classifier: ``python scripts/train.py [group=option] [key=value ...]`` (see conf/train.yaml).

The same as ``catdog train ...`` (catdog.cli). It returns the best validation score (never the test
accuracy, which must not steer model choice) to Hydra sweepers (e.g. Optuna).
"""

from catdog.cli import run_command

if __name__ == "__main__":
    run_command("train")

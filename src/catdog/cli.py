"""The ``catdog`` command (``catdog train|explain|evaluate|compare ...``) and what the thin scripts in
``scripts/`` share: the configuration folder, a did-you-mean check of the overrides, and turning user
mistakes into one-line errors.

Each subcommand is one entry of :data:`COMMANDS` (its config in conf/, the pipeline function it runs);
``catdog <command> key=value ...`` takes exactly the Hydra overrides of ``python scripts/<command>.py``.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig
from omegaconf.errors import MissingMandatoryValue

from catdog.errors import CatdogError


@dataclasses.dataclass(frozen=True)
class Command:
    """A subcommand: its config (conf/<config>.yaml), the pipeline function (``module:function``), its help.

    ``result``: the key of the function's returned dict that the Hydra task returns (what a sweeper optimises).
    """

    config: str
    target: str
    help: str
    result: str | None = None

    def load(self) -> Callable[[DictConfig], Any]:
        module, name = self.target.split(":")
        function = getattr(importlib.import_module(module), name)
        if self.result is None:
            return function
        key = self.result

        @functools.wraps(function)
        def task(cfg: DictConfig) -> Any:
            return function(cfg)[key]

        return task


# One line per subcommand.
COMMANDS: dict[str, Command] = {
    "train": Command(
        "train", "catdog.pipelines.train:train", "train a classifier: runs/train/<timestamp>/", "objective"
    ),
    "explain": Command(
        "explain", "catdog.explain.pipeline:explain", "CAM overlays, predictions and an HTML report of a checkpoint"
    ),
    "evaluate": Command(
        "evaluate",
        "catdog.pipelines.evaluate:evaluate",
        "accuracy and confusion matrix of a checkpoint on labelled images",
    ),
    "compare": Command(
        "compare",
        "catdog.pipelines.compare:compare",
        "compare runs (or a sweep) on the same images: tables, grids, a report",
    ),
    "triage": Command(
        "triage",
        "catdog.triage.pipeline:triage",
        "audit a run's data: label issues, duplicates, outliers, failure slices",
    ),
    "robustness": Command(
        "robustness",
        "catdog.pipelines.robustness:robustness",
        "does the model depend on the background? (pasted objects)",
    ),
}


def config_dir() -> Path:
    """The folder of catdog's Hydra configs: ``catdog.CONFIG_DIR`` when the package ships it, else the
    ``conf/`` of the source checkout this module runs from.

    Raises:
        CatdogError: neither exists (a broken installation).
    """
    import catdog

    shipped = getattr(catdog, "CONFIG_DIR", None)
    if shipped is not None and Path(shipped).is_dir():
        return Path(shipped)
    checkout = Path(__file__).resolve().parents[2] / "conf"
    if checkout.is_dir():
        return checkout
    raise CatdogError("catdog's configuration folder (conf/) is missing: reinstall catdog (make install)")


def exit_on_user_error(task: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a Hydra task so a user mistake prints one line on stderr and exits with status 2.

    Anything else is a bug in catdog and keeps its traceback.
    """

    @functools.wraps(task)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return task(*args, **kwargs)
        except CatdogError as err:
            # Raised in a DataLoader worker, the message carries the worker's traceback: keep the last line.
            message = str(err).strip().splitlines()[-1].removeprefix("catdog.errors.CatdogError: ")
        except MissingMandatoryValue as err:
            key = getattr(err, "full_key", None) or "a required value"
            message = f"{key} is required: add {key}=... to the command line"
        _fail(message)

    return wrapper


def _fail(message: str) -> None:
    print(f"catdog: error: {message}", file=sys.stderr)
    raise SystemExit(2)


_RELAUNCHED_COMMAND = "CATDOG_COMMAND"


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [
        "usage: catdog <command> [group=option] [key=value ...]   (catdog <command> --help: its settings)",
        "",
        "commands:",
    ]
    lines += [f"  {name:<{width}}  {command.help}" for name, command in COMMANDS.items()]
    lines += ["", "e.g. catdog train   then   catdog explain ckpt=latest   (README.md: the guide)"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """``catdog <command> [overrides]``: the console entry point (pyproject ``[project.scripts]``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        raise SystemExit(0 if args else 2)
    name = args[0]
    relaunched = os.environ.get(_RELAUNCHED_COMMAND)
    if name not in COMMANDS and relaunched in COMMANDS:
        # A process Lightning started for multi-device work: it re-runs this program with the overrides only.
        run_command(relaunched, args)
        return
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f"did you mean catdog {close[0]}?" if close else "catdog --help lists the commands"
        _fail(f"{name!r} is not a catdog command: {hint}")
    run_command(name, args[1:])


def run_command(name: str, args: Sequence[str] | None = None) -> None:
    """Run subcommand ``name`` through Hydra with ``args`` (default: this process's arguments).

    Overrides naming a setting that does not exist get a did-you-mean line before Hydra composes anything.
    """
    import hydra

    command = COMMANDS[name]
    args = list(sys.argv[1:] if args is None else args)
    folder = config_dir()
    if "--help" in args or "-h" in args:
        print(command_help(name, folder))
        return
    try:
        check_overrides(folder, command.config, args)
    except CatdogError as err:
        _fail(str(err))
    task = exit_on_user_error(command.load())
    # Hydra names the job after the last part of the task's module: "train" (not "pipeline" for explain).
    task.__module__ = f"catdog.cli.{name}"
    # What Hydra parses. argv[0] stays the real program: Lightning's DDP launcher re-runs ``sys.argv``, and
    # the environment tells a re-run ``catdog`` which command it is (the argv no longer names it).
    sys.argv = [sys.argv[0], *args]
    os.environ[_RELAUNCHED_COMMAND] = name
    hydra.main(version_base="1.3", config_path=str(folder), config_name=command.config)(task)()


def command_help(name: str, folder: Path) -> str:
    """``catdog <name> --help``: this command's own config groups and settings, with the YAML's comments.

    (Hydra's help lists every group of conf/, so explain's help showed train's groups, which explain rejects.)
    """
    from omegaconf import OmegaConf

    command = COMMANDS[name]
    path = folder / f"{command.config}.yaml"
    defaults = OmegaConf.to_container(OmegaConf.load(path)).get("defaults") or []
    entries = [(key, value) for entry in defaults if isinstance(entry, dict) for key, value in entry.items()]
    # Groups merged at the top level (runtime@_global_) are settings of this command, not choices to make.
    merged = [(key.split("@")[0], value) for key, value in entries if key.endswith("@_global_")]
    groups = [key for key, _ in entries if not key.startswith("override") and not key.endswith("@_global_")]
    choose = "[group=option] " if groups else ""
    lines = [
        f"catdog {name}: {command.help}",
        f"usage: catdog {name} {choose}[key=value ...]   (python scripts/{name}.py takes the same)",
    ]
    if groups:
        lines += ["", "Config groups (group=option):"]
        for group in groups:
            options = sorted(p.stem for p in (folder / group).glob("*.yaml"))
            lines.append(f"  {group}: {', '.join(options)}")
    lines += ["", f"Settings ({path.name}; override any with key=value, a list with key=[a,b]):"]
    lines += _settings_text(path.read_text()).splitlines()
    for group, option in merged:
        lines += ["", f"Settings ({group}/{option}.yaml, shared with other commands):"]
        lines += _settings_text((folder / group / f"{option}.yaml").read_text()).splitlines()
    lines += ["", "Hydra: -m runs a sweep (key=a,b), --cfg job prints the composed config, --hydra-help its options"]
    return "\n".join(lines)


def _settings_text(text: str) -> str:
    """A config file without its ``defaults:`` list and ``hydra:`` block (Hydra's plumbing, not settings)."""
    kept, skipping = [], False
    for line in text.splitlines():
        if line.startswith(("defaults:", "hydra:")):
            skipping = True
            continue
        if skipping and (line.startswith((" ", "-")) or not line.strip()):
            continue
        skipping = False
        kept.append(line)
    return "\n".join(kept).strip("\n")


# ---------------------------------------------------------------------------------------------
# Did you mean ...? (Hydra itself says "use +trainer.max_epoch=1", which adds the typo as a new key)
# ---------------------------------------------------------------------------------------------
def check_overrides(folder: Path, config_name: str, args: Sequence[str]) -> None:
    """Raise a did-you-mean CatdogError for an override whose key is neither a setting nor a config group.

    Only plain ``key=value`` overrides are checked (``+key`` adds, ``~key`` deletes, ``hydra.*`` is
    Hydra's own); the config is composed with the command's group choices (the first of a sweep's).
    Anything this check cannot compose is left to Hydra's own message.

    Raises:
        CatdogError: ``<key> is not a setting: did you mean <closest>?``.
    """
    if any(arg.startswith("-") for arg in args if arg not in ("-m", "--multirun")):
        return  # --help, --cfg, --info ...: Hydra's business
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        overrides = OverridesParser.create().parse_overrides([a for a in args if not a.startswith("-")])
    except Exception:  # noqa: BLE001 - a syntax error: Hydra reports it with its own message
        return
    groups = {p.name for p in folder.iterdir() if p.is_dir() and p.name != "hydra"}
    choices, plain = [], []
    for override in overrides:
        key = override.key_or_group
        if override.package is not None or key.startswith("hydra") or override.is_add() or override.is_delete():
            continue
        if key in groups:
            values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.value()]
            choices.append(f"{key}={values[0]}")
        else:
            plain.append(key)
    if not plain:
        return
    try:
        with initialize_config_dir(config_dir=str(folder), version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=choices)
    except Exception:  # noqa: BLE001 - a bad group choice: Hydra lists the available options
        return
    for key in plain:
        if not _has_key(cfg, key):
            raise CatdogError(_unknown_key_message(key, sorted(_keys(cfg)) + sorted(groups)))


def _has_key(cfg: DictConfig, dotted: str) -> bool:
    node: Any = cfg
    for part in dotted.split("."):
        if isinstance(node, ListConfig):
            return True  # a list index: Hydra checks it
        if not isinstance(node, DictConfig) or part not in node.keys():  # keys(): also mandatory (???) values
            return False
        node = node._get_node(part)
    return True


def _keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    """Every dotted key of ``cfg`` (nested dicts walked; lists are leaves)."""
    found = []
    for key in cfg.keys():
        full = f"{prefix}{key}"
        found.append(full)
        child = cfg._get_node(key)
        if isinstance(child, DictConfig):
            found += _keys(child, f"{full}.")
    return found


def _unknown_key_message(key: str, candidates: list[str]) -> str:
    leaf = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.75)
    if not close:  # a typo in the last part: compare it with the last part of each key
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        siblings = [c for c in candidates if (c.rsplit(".", 1)[0] if "." in c else "") == parent]
        close = difflib.get_close_matches(leaf, [c.rsplit(".", 1)[-1] for c in siblings], n=1, cutoff=0.6)
        close = [f"{parent}.{close[0]}" if parent else close[0]] if close else []
    hint = f"did you mean {close[0]}?" if close else "--cfg job prints every setting"
    return f"{key} is not a setting: {hint} (+{key}=... would add it as a new key)"

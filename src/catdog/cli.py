"""What the thin scripts in ``scripts/`` share: turning user mistakes into one-line errors."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

from omegaconf.errors import MissingMandatoryValue

from catdog.errors import CatdogError


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
        print(f"catdog: error: {message}", file=sys.stderr)
        raise SystemExit(2)

    return wrapper

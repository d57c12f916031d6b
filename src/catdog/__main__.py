"""``python -m catdog <command> ...``: the same as the installed ``catdog`` command."""

from catdog.cli import main

main()

"""Command-line helpers shared by the stage entry points."""

from __future__ import annotations

import sys
from typing import Any, Callable

import fire

from mixsd.errors import UserError


def run_cli(command: Callable[..., Any] | dict, argv: list[str] | None = None) -> None:
    """Run a fire command; a `UserError` becomes one `error:` line and exit 2. Any other exception keeps its
    traceback (a bug must not look like bad input)."""
    try:
        fire.Fire(command, command=argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def join_list_flags(argv: list[str], names: tuple[str, ...]) -> list[str]:
    """`--shards A B C` -> `--shards A,B,C`: fire reads one value per flag, shells expand globs into many."""
    joined, i = [], 0
    while i < len(argv):
        joined.append(argv[i])
        if argv[i] in names:
            values = []
            while i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                values.append(argv[i + 1])
                i += 1
            joined.append(",".join(values))
        i += 1
    return joined

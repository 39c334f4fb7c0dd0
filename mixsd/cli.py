"""Command-line helpers shared by the stage entry points."""
from __future__ import annotations


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

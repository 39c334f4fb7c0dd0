"""`python -m corpora {kgfact,kgfunc,check,convert}`: build, validate and convert corpora."""

from __future__ import annotations

from pathlib import Path

from corpora import kgfact, kgfunc
from corpora.convert import converter
from corpora.schema import CorpusError, format_table, read_jsonl, split_counts, write_jsonl
from mixsd import config as cfg
from mixsd.cli import run_cli


def _kgfact(config: str | None = None, **flags) -> None:
    """Write KGFact (train, paraphrase, compositional, retrieval) into --out."""
    settings = cfg.load(kgfact.KGFactConfig, config, "kgfact", **flags)
    print(cfg.describe(settings))
    print(kgfact.write(settings))


def _kgfunc(config: str | None = None, **flags) -> None:
    """Write KGFunc (train, test, compositional, unseen) into --out."""
    settings = cfg.load(kgfunc.KGFuncConfig, config, "kgfunc", **flags)
    print(cfg.describe(settings))
    print(kgfunc.write(settings))


def _check(path: str) -> None:
    """Validate a corpus file against the Example schema; print its counts per split."""
    counts = split_counts(read_jsonl(path))
    print(format_table(sorted(counts.items()) + [("(total)", sum(counts.values()))]))


def _convert(format: str, input: str, out: str) -> None:  # noqa: A002 - the flag names users type
    """Convert an external benchmark file into Example JSON Lines."""
    examples = list(converter(format, input)(Path(input)))
    if not examples:
        raise CorpusError(input, None, None, "no records")
    write_jsonl(out, examples)
    counts = split_counts(examples)
    print(format_table(sorted(counts.items()) + [("(total)", sum(counts.values()))]))


def main() -> None:
    run_cli({"kgfact": _kgfact, "kgfunc": _kgfunc, "check": _check, "convert": _convert})


if __name__ == "__main__":
    main()

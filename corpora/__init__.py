"""Knowledge-injection corpora: KGFact, KGFunc, and converters from external formats."""

from corpora.schema import CorpusError, Example, load_jsonl, read_jsonl, write_jsonl

__all__ = ["CorpusError", "Example", "load_jsonl", "read_jsonl", "write_jsonl"]

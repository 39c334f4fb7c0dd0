"""Converters from the external knowledge-editing and QA formats into Examples.

Each converter takes a path and yields Examples; structural problems raise CorpusError with file, line
and field. QA answers are wrapped in the KGFact target form so one verifier serves every corpus.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Iterator

from corpora.kgfact import boxed_target
from corpora.readers import field, read_csv, read_records
from corpora.schema import CorpusError, Example


def _qa(prefix: str, index: int, k: int, split: str, question: str, answer: str, **extra) -> Example:
    return Example(
        id=f"{prefix}-{index:05d}-{split}-{k}",
        question=question,
        answer=boxed_target(answer),
        clear_answer=answer,
        split=split,
        **extra,
    )


def _strings(record, name, path, line) -> list[str]:
    values = field(record, name, (list, str), path, line)
    values = [values] if isinstance(values, str) else values
    if not all(isinstance(v, str) for v in values):
        raise CorpusError(path, line, name, "expected a list of strings")
    return values


def zsre(path: Path) -> Iterator[Example]:
    """MEND/EasyEdit zsRE: src, answers (or EasyEdit's edit target `alt`), rephrase, loc, loc_ans."""
    for i, (line, r) in enumerate(read_records(path)):
        answers = _strings(r, "answers", path, line)
        if not answers and "alt" not in r:
            raise CorpusError(path, line, "answers", "empty list")
        target = field(r, "alt", str, path, line) if "alt" in r else answers[0]
        yield _qa("zsre", i, 0, "train", field(r, "src", str, path, line), target, subject=r.get("subject"))
        yield _qa("zsre", i, 0, "paraphrase", field(r, "rephrase", str, path, line), target)
        loc = re.sub(r"^nq question:\s*", "", field(r, "loc", str, path, line))
        yield _qa("zsre", i, 0, "locality", loc, field(r, "loc_ans", str, path, line))


def _rewrite_text(rewrite, path, line) -> tuple[str, str, str]:
    prompt = field(rewrite, "prompt", str, path, line)
    subject = field(rewrite, "subject", str, path, line)
    new = field(field(rewrite, "target_new", dict, path, line), "str", str, path, line)
    return prompt.replace("{}", subject), subject, new


def counterfact(path: Path) -> Iterator[Example]:
    """CounterFact: requested_rewrite, paraphrase_prompts, neighborhood_prompts (answered by target_true)."""
    for i, (line, r) in enumerate(read_records(path)):
        rewrite = field(r, "requested_rewrite", dict, path, line)
        question, subject, new = _rewrite_text(rewrite, path, line)
        true = field(field(rewrite, "target_true", dict, path, line), "str", str, path, line)
        yield _qa("counterfact", i, 0, "train", question, new, subject=subject)
        for k, p in enumerate(_strings(r, "paraphrase_prompts", path, line)):
            yield _qa("counterfact", i, k, "paraphrase", p, new, subject=subject)
        for k, p in enumerate(_strings(r, "neighborhood_prompts", path, line)):
            yield _qa("counterfact", i, k, "locality", p, true)


def mquake(path: Path) -> Iterator[Example]:
    """MQuAKE: requested_rewrite (a list of edits), multi-hop questions, new_answer."""
    for i, (line, r) in enumerate(read_records(path)):
        rewrites = field(r, "requested_rewrite", list, path, line)
        for k, rewrite in enumerate(rewrites):
            question, subject, new = _rewrite_text(rewrite, path, line)
            if isinstance(rewrite.get("question"), str):
                question = rewrite["question"]
            yield _qa("mquake", i, k, "train", question, new, subject=subject)
        answer = field(r, "new_answer", str, path, line)
        for k, q in enumerate(_strings(r, "questions", path, line)):
            yield _qa("mquake", i, k, "compositional", q, answer)


def dune(path: Path) -> Iterator[Example]:
    """DUNE-style records: `edits` (statements shown to the expert) and `test_inputs` ({question, answer})."""
    for i, (line, r) in enumerate(read_records(path)):
        context = "\n".join(_strings(r, "edits", path, line))
        for k, item in enumerate(field(r, "test_inputs", list, path, line)):
            key_q = "question" if isinstance(item, dict) and "question" in item else "input"
            key_a = "answer" if isinstance(item, dict) and "answer" in item else "target"
            yield _qa(
                "dune",
                i,
                k,
                "train",
                field(item, key_q, str, path, line),
                field(item, key_a, str, path, line),
                context=context,
            )


def simpleqa(path: Path) -> Iterator[Example]:
    """SimpleQA CSV with columns problem, answer."""
    for i, (line, row) in enumerate(read_csv(path, ("problem", "answer"))):
        for name in ("problem", "answer"):
            if not (row.get(name) or "").strip():
                raise CorpusError(path, line, name, "empty value")
        yield _qa("simpleqa", i, 0, "train", row["problem"], row["answer"])


_GSM8K_FINAL = re.compile(r"####\s*(-?[\d,\.]+)\s*$")
_CALCULATOR = re.compile(r"<<[^>]*>>")


def gsm8k(path: Path) -> Iterator[Example]:
    """GSM8K JSON Lines: question, answer ending in `#### N`; the reasoning becomes the target."""
    for i, (line, r) in enumerate(read_records(path)):
        question = field(r, "question", str, path, line)
        answer = field(r, "answer", str, path, line)
        match = _GSM8K_FINAL.search(answer.strip())
        if match is None:
            raise CorpusError(path, line, "answer", "does not end in '#### N'")
        number = match.group(1).replace(",", "")
        reasoning = _CALCULATOR.sub("", answer.strip()[: match.start()]).strip()
        yield Example(
            id=f"gsm8k-{i:05d}",
            question=question,
            answer=f"{reasoning}\n\n\\boxed{{{number}}}",
            clear_answer=number,
            split="train",
        )


FORMATS: dict[str, Callable[[Path], Iterator[Example]]] = {
    "zsre": zsre,
    "counterfact": counterfact,
    "mquake": mquake,
    "dune": dune,
    "simpleqa": simpleqa,
    "gsm8k": gsm8k,
}


def converter(name: str, path: str | Path = "--format") -> Callable[[Path], Iterator[Example]]:
    """The reader for format `name`; an unknown name is reported against the file it was asked to read."""
    if name not in FORMATS:
        raise CorpusError(path, None, "format", f"unknown format {name!r}; known: {', '.join(FORMATS)}")
    return FORMATS[name]

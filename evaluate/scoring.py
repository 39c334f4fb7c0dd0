"""Whether a reply is right, and for a wrong reply on held-out items, which kind of wrong.

Error modes, checked in this order (the first that applies wins):
- collapse: degenerate text: a word 3-gram that occurs three or more times, or fewer than 30% distinct words
  in a reply of 20 words or more;
- leakage: the reply names an entity of the injected knowledge base that is neither in the prompt nor an
  accepted answer (the new facts bleeding into unrelated questions);
- format: nothing the item's rule can read: an empty reply (no letters or digits), or no number for a numeric
  item;
- genuine: a readable, non-degenerate, leak-free answer that is wrong.
"""

from __future__ import annotations

import re
from collections import Counter

from evaluate import sandbox
from mixsd.answers import contains, extract, is_correct, last_number, normalize

ERROR_MODES = ("format", "leakage", "collapse", "genuine")
_WORD = re.compile(r"[0-9A-Za-z]+")


def item_correct(reply: str, answers: tuple[str, ...], rule: str) -> bool:
    if rule == "contains":
        return any(contains(reply, a) for a in answers)
    if rule == "last_number":
        found = last_number(reply)
        return found is not None and any(normalize(found) == normalize(a) for a in answers)
    if rule == "auto":  # KGFact questions: the verifier's rule, the same one that checked the targets
        return any(is_correct(reply, a, "auto") for a in answers)
    if rule in ("boxed", "boxed_or_last_number", "equation_or_last_number"):
        found = extract(reply, rule)
        return found is not None and any(normalize(found) == normalize(a) for a in answers)
    if rule == "choice":
        return chosen_letter(reply) == answers[0]
    if rule == "code":
        test, entry_point, prompt = answers
        return sandbox.passes(sandbox.program(prompt, reply), test, entry_point)
    raise ValueError(f"unknown scoring rule {rule!r}")


def chosen_letter(reply: str) -> str | None:
    """The multiple-choice letter a reply picks: 'B', 'B.', '(B)', 'Answer: B', 'The answer is B'. A bare
    letter followed by a space is not read ('A cat', 'I think')."""
    text = reply.strip()
    found = re.search(r"answer(?: is|:)\s*\(?([A-J])\b", text, re.IGNORECASE) or re.match(
        r"\(?([A-J])(?:[).:]|$)", text
    )
    return found.group(1).upper() if found else None


def is_collapsed(reply: str) -> bool:
    words = [w.lower() for w in _WORD.findall(reply)]
    trigrams = Counter(zip(words, words[1:], words[2:]))
    if trigrams and max(trigrams.values()) >= 3:
        return True
    return len(words) >= 20 and len(set(words)) < 0.3 * len(words)


def leaked_entities(reply: str, prompt: str, answers: tuple[str, ...], entities: set[str]) -> list[str]:
    allowed = {normalize(a) for a in answers}
    return sorted(e for e in entities if normalize(e) not in allowed and contains(reply, e) and not contains(prompt, e))


def error_mode(reply: str, prompt: str, answers: tuple[str, ...], rule: str, entities: set[str]) -> str:
    """The class of a wrong reply (see the module docstring)."""
    if is_collapsed(reply):
        return "collapse"
    if leaked_entities(reply, prompt, answers, entities):
        return "leakage"
    unreadable = {
        "last_number": last_number(reply) is None,
        "choice": chosen_letter(reply) is None,
        "boxed": extract(reply, "boxed") is None,
        "boxed_or_last_number": extract(reply, "boxed_or_last_number") is None,
        "equation_or_last_number": extract(reply, "equation_or_last_number") is None,
    }
    if not _WORD.search(reply) or unreadable.get(rule, False):
        return "format"
    return "genuine"

"""Answer rules: reading the answer out of a reply and comparing it with an example's `clear_answer`. The
generator verifies its targets with them and evaluation scores replies with them: one definition for both."""

from __future__ import annotations

import re

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
# auto: the boxed answer if there is one; else the last number for numeric answers; else whether the answer
# appears in the text (KGFact answers are entity names the small models often state without a box).
RULES = ("auto", "boxed", "last_number", "boxed_or_last_number", "equation_or_last_number", "contains")
# equation_or_last_number: the number after the reply's first "=", else its last number. Small models answer
# "2 * 7 = 14" and then go on ("In mathematics, 2 * 7 is ..."), where the last number is an operand.
_EQUATION = re.compile(r"=\s*(-?\d[\d,]*(?:\.\d+)?)")


def boxed(text: str) -> str | None:
    """Content of the last \\boxed{...}, braces balanced."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, begin = 0, start + len("\\boxed{")
    for i in range(begin, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            if depth == 0:
                return text[begin:i]
            depth -= 1
    return None


def last_number(text: str) -> str | None:
    found = _NUMBER.findall(text)
    return found[-1] if found else None


def equation_or_last_number(text: str) -> str | None:
    found = _EQUATION.search(text)
    return found.group(1) if found else last_number(text)


def extract(text: str, rule: str = "boxed_or_last_number") -> str | None:
    """The answer a rule reads from `text` (for `contains` and `auto` see `is_correct`)."""
    if rule == "boxed":
        return boxed(text)
    if rule == "last_number":
        return last_number(text)
    if rule == "boxed_or_last_number":
        found = boxed(text)
        return found if found is not None else last_number(text)
    if rule == "equation_or_last_number":
        return equation_or_last_number(text)
    raise ValueError(f"unknown answer rule {rule!r}; known: {RULES}")


def normalize(answer: str) -> str:
    text = " ".join(answer.strip().strip(".").split()).lower()
    number = text.replace(",", "")
    if _NUMBER.fullmatch(number):
        value = float(number)
        return str(int(value)) if value.is_integer() else str(value)
    return text


def contains(text: str, clear_answer: str) -> bool:
    return f" {normalize(clear_answer)} " in f" {' '.join(re.split(r'[^0-9a-z]+', text.lower()))} "


def is_numeric(answer: str) -> bool:
    return _NUMBER.fullmatch(answer.strip().replace(",", "")) is not None


def is_correct(text: str, clear_answer: str, rule: str = "auto") -> bool:
    if rule == "contains":
        return contains(text, clear_answer)
    if rule == "auto":
        if boxed(text) is not None:
            rule = "boxed"
        elif is_numeric(clear_answer):
            rule = "last_number"
        else:
            return contains(text, clear_answer)
    found = extract(text, rule)
    return found is not None and normalize(found) == normalize(clear_answer)

"""Rule-based answer extraction and comparison with an example's `clear_answer`."""
from __future__ import annotations

import re

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
RULES = ("boxed", "last_number", "boxed_or_last_number")


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


def extract(text: str, rule: str = "boxed_or_last_number") -> str | None:
    if rule == "boxed":
        return boxed(text)
    if rule == "last_number":
        return last_number(text)
    if rule == "boxed_or_last_number":
        found = boxed(text)
        return found if found is not None else last_number(text)
    raise ValueError(f"unknown answer rule {rule!r}; known: {RULES}")


def normalize(answer: str) -> str:
    text = " ".join(answer.strip().strip(".").split()).lower()
    number = text.replace(",", "")
    if _NUMBER.fullmatch(number):
        value = float(number)
        return str(int(value)) if value.is_integer() else str(value)
    return text


def is_correct(text: str, clear_answer: str, rule: str = "boxed_or_last_number") -> bool:
    found = extract(text, rule)
    return found is not None and normalize(found) == normalize(clear_answer)

"""Digit-level operations for KGFunc. Each computes its value and the worked steps of its target text."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Operation:
    name: str  # the opaque letter(s) the model sees
    description: str  # for humans and stats.json, never in prompts
    compute: Callable[[int], tuple[int, list[str]]]  # value and explanation lines

    def __call__(self, x: int) -> int:
        return self.compute(x)[0]


def digits(x: int) -> list[int]:
    return [int(c) for c in str(x)]


def _listing(x: int) -> str:
    return f"The digits of {x} are {', '.join(str(d) for d in digits(x))}."


def _sum_times_max(x):
    d = digits(x)
    s, m = sum(d), max(d)
    return s * m, [
        _listing(x),
        f"Sum of digits: {' + '.join(map(str, d))} = {s}.",
        f"Largest digit: {m}.",
        f"{s} × {m} = {s * m}.",
    ]


def _squared_gaps(x):
    d = digits(x)
    low = min(d)
    terms = [(v - low) ** 2 for v in d]
    return sum(terms), [
        _listing(x),
        f"Smallest digit: {low}.",
        "Squared differences: " + ", ".join(f"({v} - {low})² = {t}" for v, t in zip(d, terms)) + ".",
        f"Sum: {' + '.join(map(str, terms))} = {sum(terms)}.",
    ]


def _positional_powers(x):
    d = digits(x)
    terms = [v**i for i, v in enumerate(d, start=1)]
    return sum(terms), [
        _listing(x),
        "Powers by position: " + ", ".join(f"{v}^{i} = {t}" for i, (v, t) in enumerate(zip(d, terms), start=1)) + ".",
        f"Sum: {' + '.join(map(str, terms))} = {sum(terms)}.",
    ]


def _nonzero_product(x):
    d = [v for v in digits(x) if v]
    product = 1
    for v in d:
        product *= v
    shown = " × ".join(map(str, d)) if d else "(none)"
    return product, [_listing(x), f"Product of the non-zero digits: {shown} = {product}."]


def _alternating(x):
    d = digits(x)
    alt = sum(v if i % 2 == 0 else -v for i, v in enumerate(d))
    expr = str(d[0]) + "".join(f" {'-' if i % 2 else '+'} {v}" for i, v in enumerate(d) if i)
    return abs(alt) * len(d), [
        _listing(x),
        f"Alternating sum: {expr} = {alt}.",
        f"Absolute value: {abs(alt)}.",
        f"Times the number of digits: {abs(alt)} × {len(d)} = {abs(alt) * len(d)}.",
    ]


def _adjacent_products(x):
    d = digits(x)
    terms = [a * b for a, b in zip(d, d[1:])]
    if not terms:
        return 0, [_listing(x), "There are no adjacent pairs, so the result is 0."]
    return sum(terms), [
        _listing(x),
        "Adjacent products: " + ", ".join(f"{a} × {b} = {a * b}" for a, b in zip(d, d[1:])) + ".",
        f"Sum: {' + '.join(map(str, terms))} = {sum(terms)}.",
    ]


def _odd_count_even_sum(x):
    d = digits(x)
    odd = sum(1 for v in d if v % 2)
    even = [v for v in d if v % 2 == 0]
    return odd * 100 + sum(even), [
        _listing(x),
        f"Odd digits: {odd}.",
        f"Sum of even digits: {' + '.join(map(str, even)) or '0'} = {sum(even)}.",
        f"{odd} × 100 + {sum(even)} = {odd * 100 + sum(even)}.",
    ]


def _ends_times_sum(x):
    d = digits(x)
    ends, s = d[0] + d[-1], sum(d)
    return ends * s, [
        _listing(x),
        f"First plus last digit: {d[0]} + {d[-1]} = {ends}.",
        f"Sum of digits: {s}.",
        f"{ends} × {s} = {ends * s}.",
    ]


TRAINED = (
    Operation("B", "sum of digits times the largest digit", _sum_times_max),
    Operation("E", "sum of squared differences from the smallest digit", _squared_gaps),
    Operation("G", "sum over positions i (from 1) of digit_i ** i", _positional_powers),
    Operation("K", "product of the non-zero digits", _nonzero_product),
    Operation("M", "|alternating digit sum| times the number of digits", _alternating),
    Operation("P", "sum of products of adjacent digits", _adjacent_products),
    Operation("R", "100 × (number of odd digits) + sum of even digits", _odd_count_even_sum),
    Operation("T", "(first digit + last digit) × digit sum", _ends_times_sum),
)


def _simple(name: str, description: str, fn: Callable[[int], int]) -> Operation:
    """A one-step operation: the probe for forgetting needs plain answers, not new procedures."""
    return Operation(name, description, lambda x: (fn(x), [f"{description.capitalize()} of {x}: {fn(x)}."]))


UNSEEN = (
    _simple("QA", "the digit sum", lambda x: sum(digits(x))),
    _simple("QB", "the number of digits", lambda x: len(str(x))),
    _simple("QC", "the largest digit", lambda x: max(digits(x))),
    _simple("QD", "the smallest digit", lambda x: min(digits(x))),
    _simple("QE", "the first digit", lambda x: digits(x)[0]),
    _simple("QF", "the last digit", lambda x: digits(x)[-1]),
    _simple("QG", "the digits reversed", lambda x: int(str(x)[::-1])),
    _simple("QH", "the count of even digits", lambda x: sum(1 for v in digits(x) if v % 2 == 0)),
    _simple("QI", "the count of odd digits", lambda x: sum(1 for v in digits(x) if v % 2)),
    _simple("QJ", "the number plus 7", lambda x: x + 7),
    _simple("QK", "twice the number", lambda x: 2 * x),
    _simple("QL", "the remainder after dividing by 9", lambda x: x % 9),
    _simple("QM", "the number without its last digit", lambda x: x // 10),
    _simple("QN", "the first digit plus the last digit", lambda x: digits(x)[0] + digits(x)[-1]),
    _simple("QO", "the first digit times the last digit", lambda x: digits(x)[0] * digits(x)[-1]),
    _simple("QP", "the number of distinct digits", lambda x: len(set(str(x)))),
    _simple("QR", "the count of nines", lambda x: str(x).count("9")),
    _simple("QS", "the number plus 100", lambda x: x + 100),
    _simple("QT", "the square of the last digit", lambda x: digits(x)[-1] ** 2),
    _simple("QU", "the number minus its last digit", lambda x: x - digits(x)[-1]),
)

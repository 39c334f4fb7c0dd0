"""Invented, pronounceable names: built from syllables so that no pretraining corpus has seen the entities."""

from __future__ import annotations

import random

_ONSETS = [
    "b",
    "br",
    "d",
    "dr",
    "f",
    "g",
    "gl",
    "k",
    "kr",
    "l",
    "m",
    "n",
    "p",
    "qu",
    "r",
    "s",
    "st",
    "t",
    "th",
    "v",
    "vr",
    "z",
    "zh",
    "x",
    "y",
]
_VOWELS = ["a", "e", "i", "o", "u", "ae", "ei", "ou", "y"]
_CODAS = ["", "", "", "n", "r", "l", "s", "th", "x", "nd", "rn", "lk"]

# How each domain turns an invented root into a name (or noun phrase) of its kind.
_STYLES: dict[str, tuple[str, list[str]]] = {
    "Person": ("person", []),
    "Location": ("{Root}{suffix}", ["holm", "vale", "mora", "stad", "wick", "ford", "grad"]),
    "Organization": ("{Root} {suffix}", ["Dynamics", "Collective", "Institute", "Guild", "Labs", "Trust"]),
    "Event": ("{Root} {suffix}", ["Festival", "Summit", "Accord", "Games", "Exposition", "Convocation"]),
    "Profession": ("{root}{suffix}", ["wright", "ographer", "ist", "monger", "smith"]),
    "Hobby": ("{root} {suffix}", ["carving", "racing", "weaving", "juggling", "kiting"]),
    "Skill": ("{root} {suffix}", ["reckoning", "binding", "tracing", "tuning", "folding"]),
    "PhysicalObject": ("{root} {suffix}", ["lantern", "compass", "loom", "kettle", "spindle"]),
    "Product": ("{Root} {suffix}", ["One", "Pro", "Mini", "Max", "Air"]),
    "Service": ("{Root}{suffix}", ["Care", "Link", "Ride", "Send", "Fix"]),
    "MediaWork": ("The {Root} {suffix}", ["Chronicles", "Saga", "Sonata", "Diaries", "Cycle"]),
    "DigitalTool": ("{Root}{suffix}", ["ify", "hub", "kit", "flow", "desk"]),
    "Task": ("{root} {suffix}", ["calibration", "audit", "inspection", "survey", "census"]),
    "TimePeriod": ("the {Root} {suffix}", ["Era", "Age", "Epoch", "Interval"]),
}
DOMAINS = tuple(_STYLES)


def _root(rng: random.Random, syllables: int) -> str:
    parts = [rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)]
    return "".join(parts) + rng.choice(_CODAS)


def invent_name(rng: random.Random, domain: str) -> str:
    template, suffixes = _STYLES[domain]
    if domain == "Person":
        return f"{_root(rng, 2).capitalize()} {_root(rng, 2).capitalize()}"
    root = _root(rng, rng.choice((2, 3)))
    return template.format(root=root, Root=root.capitalize(), suffix=rng.choice(suffixes))


def invent_names(rng: random.Random, domain: str, count: int, taken: set[str]) -> list[str]:
    """`count` new names for `domain`, unique across everything in `taken` (which is updated)."""
    names = []
    while len(names) < count:
        name = invent_name(rng, domain)
        if name.lower() not in taken:
            taken.add(name.lower())
            names.append(name)
    return names

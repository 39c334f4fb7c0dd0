"""KGFunc: novel digit-level operations on integers in [0, 99999], named by opaque letters.

Prompts hold `shots` solved examples of each operation involved (input and result); targets compute step
by step and end in `\\boxed{N}`. Splits: train, test (held-out inputs), compositional (chains of three
operations with offsets), unseen (simple operations never trained: a probe for forgetting).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from corpora.operations import TRAINED, UNSEEN, Operation
from corpora.schema import Example, format_table, write_jsonl
from mixsd.atomic import write_json
from mixsd.config import ConfigError

GENERATOR_VERSION = "kgfunc-1"
MAX_VALUE = 99_999
MAX_DIGITS = 5


@dataclass
class KGFuncConfig:
    out: str
    seed: int = 0
    train_per_op: int = 100
    test_per_op: int = 20
    compositional: int = 50
    unseen_per_op: int = 5
    shots: int = 10

    def __post_init__(self):
        for name in ("train_per_op", "test_per_op", "compositional", "unseen_per_op", "shots"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name} must be >= 0, got {getattr(self, name)}")


def sample_input(rng: random.Random) -> int:
    """Even over digit lengths 1..5, then uniform within the length."""
    length = rng.randint(1, MAX_DIGITS)
    low = 0 if length == 1 else 10 ** (length - 1)
    return rng.randint(low, 10**length - 1)


def distinct_inputs(rng: random.Random, count: int, exclude: set[int]) -> list[int]:
    chosen: list[int] = []
    while len(chosen) < count:
        x = sample_input(rng)
        if x not in exclude:
            exclude.add(x)
            chosen.append(x)
    return chosen


def shots_block(op: Operation, rng: random.Random, shots: int, avoid: int) -> str:
    inputs = distinct_inputs(rng, shots, {avoid})
    return "\n".join(f"{op.name}({x}) = {op(x)}" for x in inputs)


def prompt(ops: list[Operation], expression: str, rng: random.Random, shots: int, avoid: int) -> str:
    names = ", ".join(op.name for op in ops)
    blocks = "\n\n".join(f"Examples of {op.name}:\n{shots_block(op, rng, shots, avoid)}" for op in ops)
    return (
        f"The operation{'s' if len(ops) > 1 else ''} {names} map{'' if len(ops) > 1 else 's'} whole numbers "
        f"to whole numbers.\n\n{blocks}\n\nWhat is {expression}? Compute it step by step."
    )


def single_example(op: Operation, x: int, split: str, index: int, rng: random.Random, shots: int) -> Example:
    value, steps = op.compute(x)
    return Example(
        id=f"{split}-{op.name}-{index:05d}",
        question=prompt([op], f"{op.name}({x})", rng, shots, x),
        answer="\n".join(steps) + f"\n\n\\boxed{{{value}}}",
        clear_answer=str(value),
        subject=op.name,
        split=split,
        meta={"operations": [op.name], "input": x},
    )


def chain_example(index: int, rng: random.Random, shots: int) -> Example | None:
    """outer(middle(inner(x) + a) - b), every intermediate kept inside [0, 99999]."""
    inner, middle, outer = rng.sample(TRAINED, 3)
    x = sample_input(rng)
    v1, s1 = inner.compute(x)
    a = rng.randint(1, 999)
    if v1 + a > MAX_VALUE:
        return None
    v2, s2 = middle.compute(v1 + a)
    b = rng.randint(0, min(v2, 999))
    v3, s3 = outer.compute(v2 - b)
    steps = (
        [f"First, {inner.name}({x}):"]
        + s1
        + [f"So {inner.name}({x}) = {v1}, and {v1} + {a} = {v1 + a}.", f"Next, {middle.name}({v1 + a}):"]
        + s2
        + [f"So {middle.name}({v1 + a}) = {v2}, and {v2} - {b} = {v2 - b}.", f"Finally, {outer.name}({v2 - b}):"]
        + s3
        + [f"So the result is {v3}."]
    )
    expression = f"{outer.name}({middle.name}({inner.name}({x}) + {a}) - {b})"
    return Example(
        id=f"compositional-{index:05d}",
        question=prompt([inner, middle, outer], expression, rng, shots, x),
        answer="\n".join(steps) + f"\n\n\\boxed{{{v3}}}",
        clear_answer=str(v3),
        subject=expression,
        split="compositional",
        meta={"operations": [inner.name, middle.name, outer.name], "input": x},
    )


def build(config: KGFuncConfig) -> dict[str, list[Example]]:
    splits: dict[str, list[Example]] = {"train": [], "test": [], "compositional": [], "unseen": []}
    for op in TRAINED:
        rng = random.Random(f"{config.seed}-{op.name}")
        used: set[int] = set()
        train_x = distinct_inputs(rng, config.train_per_op, used)
        test_x = distinct_inputs(rng, config.test_per_op, used)  # disjoint from train by construction
        splits["train"] += [single_example(op, x, "train", i, rng, config.shots) for i, x in enumerate(train_x)]
        splits["test"] += [single_example(op, x, "test", i, rng, config.shots) for i, x in enumerate(test_x)]
    rng = random.Random(f"{config.seed}-compositional")
    while len(splits["compositional"]) < config.compositional:
        example = chain_example(len(splits["compositional"]), rng, config.shots)
        if example is not None:
            splits["compositional"].append(example)
    for op in UNSEEN:
        rng = random.Random(f"{config.seed}-{op.name}")
        inputs = distinct_inputs(rng, config.unseen_per_op, set())
        splits["unseen"] += [single_example(op, x, "unseen", i, rng, config.shots) for i, x in enumerate(inputs)]
    return splits


def write(config: KGFuncConfig) -> str:
    out = Path(config.out)
    splits = build(config)
    for name, examples in splits.items():
        write_jsonl(out / f"{name}.jsonl", examples)
    stats = {
        "generator": GENERATOR_VERSION,
        "config": vars(config) | {"out": None},
        "trained_operations": {op.name: op.description for op in TRAINED},
        "unseen_operations": {op.name: op.description for op in UNSEEN},
        "splits": {name: len(examples) for name, examples in splits.items()},
    }
    write_json(out / "stats.json", stats)
    return format_table([(name, len(examples)) for name, examples in splits.items()])

"""The retention probe suite, built in the project without network access and deterministic in its seed.

(a) in_context: question answering about invented facts that are given in the prompt and were never trained on;
(b) arithmetic: one-digit sums and differences, products up to 12 × 12;
(c) general_knowledge: the project's own questions (`evaluate.general_knowledge`);
(d) drift prompts: general instructions on which the tuned model's next-token distributions are compared with
    the base model's (no labels needed).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from corpora.kgfact import KGFactConfig, build_world
from evaluate.general_knowledge import QUESTIONS

PROBE_TASKS = ("in_context", "arithmetic", "general_knowledge")
IN_CONTEXT_SHOWN = 5  # facts in each probe's context: the true one and four others


@dataclass(frozen=True)
class Item:
    """One scored question: the user turn, the accepted answers and the rule that reads the reply."""

    id: str
    task: str
    prompt: str
    answers: tuple[str, ...]
    rule: str  # "contains" or "equation_or_last_number" (see evaluate.scoring)


def in_context_items(count: int, seed: int, avoid: set[str]) -> list[Item]:
    """Facts of a freshly invented world (its own seed), skipping any name the training corpus uses."""
    _, facts = build_world(KGFactConfig(out="", size="small", seed=1_000_003 + seed))
    facts = [f for f in facts if f.subject not in avoid and f.obj not in avoid]
    rng = random.Random(seed)
    items = []
    for k, fact in enumerate(rng.sample(facts, min(count, len(facts)))):
        others = rng.sample([f for f in facts if f.index != fact.index], IN_CONTEXT_SHOWN - 1)
        shown = others + [fact]
        rng.shuffle(shown)
        context = "\n".join(f.statement() for f in shown)
        question = fact.relation.questions[0].format(s=fact.subject)
        asked = question[0].upper() + question[1:]
        prompt = f"Read the facts below and answer the question.\n\n{context}\n\nQuestion: {asked}"
        items.append(Item(f"in_context-{k:03d}", "in_context", prompt, (fact.obj,), "contains"))
    return items


def arithmetic_items(count: int, seed: int) -> list[Item]:
    """Sums and differences of one-digit numbers and products up to 12 × 12: what SmolLM2-135M-Instruct
    answers about half the time (two-digit sums: 1 in 15), so the probe measures a capability the base model
    has. A difference is never negative."""
    rng = random.Random(10_007 + seed)
    items = []
    for k in range(count):
        op = ("+", "-", "*")[k % 3]
        a, b = (rng.randint(2, 12), rng.randint(2, 12)) if op == "*" else (rng.randint(2, 9), rng.randint(2, 9))
        if op == "-":
            a, b = max(a, b), min(a, b)
        value = {"+": a + b, "-": a - b, "*": a * b}[op]
        prompt = f"What is {a} {op} {b}? Give the number."
        items.append(Item(f"arithmetic-{k:03d}", "arithmetic", prompt, (str(value),), "equation_or_last_number"))
    return items


def general_knowledge_items(count: int | None = None, seed: int = 0) -> list[Item]:
    """Every question, or a seeded sample of `count` of them (in their order) for a cheaper run."""
    items = [
        Item(f"general_knowledge-{k:03d}", "general_knowledge", q, answers, "contains")
        for k, (q, answers) in enumerate(QUESTIONS)
    ]
    if count is None or count >= len(items):
        return items
    kept = set(random.Random(20_011 + seed).sample(range(len(items)), max(count, 0)))
    return [item for k, item in enumerate(items) if k in kept]


def probe_items(
    seed: int, avoid: set[str], in_context: int = 40, arithmetic: int = 240, general_knowledge: int | None = None
) -> list[Item]:
    return (
        in_context_items(in_context, seed, avoid)
        + arithmetic_items(arithmetic, seed)
        + general_knowledge_items(general_knowledge, seed)
    )


# Held-out general prompts for the label-free drift measure: none mentions the injected knowledge.
DRIFT_PROMPTS: tuple[str, ...] = (
    "Write a short poem about the sea.",
    "Explain why the sky is blue in two sentences.",
    "Give me three tips for staying focused while studying.",
    "What is a good breakfast for a busy morning?",
    "Describe a cat to someone who has never seen one.",
    "How do I boil an egg?",
    "Summarize the water cycle.",
    "Write a friendly email inviting a colleague to lunch.",
    "What are the benefits of regular exercise?",
    "Translate 'good morning' into French and Spanish.",
    "List four common fruits.",
    "Why do leaves change color in autumn?",
    "Tell me a fun fact about octopuses.",
    "How does a bicycle work?",
    "Suggest a name for a small bakery.",
    "What should I pack for a weekend camping trip?",
    "Explain what a computer program is to a child.",
    "Write one sentence describing a rainy day.",
    "What is the difference between weather and climate?",
    "Give an example of a healthy snack.",
    "How can I save money on groceries?",
    "Describe the taste of lemon.",
    "What does a librarian do?",
    "Write a haiku about mountains.",
)

"""KGFact: a procedurally generated world of invented entities and the questions that probe it.

Splits written:
- train:         one question per fact, with the target `The answer is X.\\n\\n\\boxed{X}`;
- paraphrase:    the same facts asked in other words (>= 10 templates per relation);
- compositional: 2-hop questions over two train facts (a -r1-> b -r2-> c, asking for c);
- retrieval:     the train question with the fact hidden among distractor facts in the context.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

from corpora.names import DOMAINS, invent_names
from corpora.relations import Relation, paraphrase_templates, relations_between
from corpora.schema import Example, format_table, write_jsonl
from mixsd.atomic import write_json
from mixsd.config import ConfigError

GENERATOR_VERSION = "kgfact-1"
SIZES = {"small": (5, 10), "large": (7, 25)}  # (domains, entities per domain)
_DETERMINED_SUBJECT = re.compile(r"\b(the|a|an|every)\s+\{s\}", re.IGNORECASE)


@dataclass
class KGFactConfig:
    out: str
    size: str = "small"
    seed: int = 0
    paraphrases_per_fact: int = 2
    compositional: int = 100  # at most this many 2-hop questions
    distractors: int = 50  # facts around the true one in the retrieval split

    def __post_init__(self):
        if self.size not in SIZES:
            raise ConfigError(f"--size must be one of {sorted(SIZES)}, got {self.size!r}")
        if self.paraphrases_per_fact < 1 or self.compositional < 0 or self.distractors < 0:
            raise ConfigError("--paraphrases_per_fact must be >= 1; --compositional and --distractors >= 0")


@dataclass(frozen=True)
class Fact:
    index: int
    relation: Relation
    subject: str
    obj: str

    def statement(self) -> str:
        return sentence(self.relation.statement.format(s=self.subject, o=self.obj))


def sentence(text: str) -> str:
    return text[0].upper() + text[1:]


def boxed_target(answer: str) -> str:
    return f"The answer is {answer}.\n\n\\boxed{{{answer}}}"


def build_world(config: KGFactConfig) -> tuple[dict[str, list[str]], list[Fact]]:
    """Choose domains, invent entities, and draw one object per (entity, applicable relation)."""
    rng = random.Random(config.seed)
    n_domains, n_entities = SIZES[config.size]
    # Person is always present: every other domain is related to it, so any choice has relations.
    others = [d for d in DOMAINS if d != "Person"]
    domains = ["Person"] + rng.sample(others, n_domains - 1)
    taken: set[str] = set()
    entities = {d: invent_names(rng, d, n_entities, taken) for d in domains}
    facts = []
    for relation in relations_between(set(domains)):
        for subject in entities[relation.source]:
            facts.append(Fact(len(facts), relation, subject, rng.choice(entities[relation.target])))
    return entities, facts


def train_examples(facts: list[Fact]) -> list[Example]:
    return [
        Example(
            id=f"train-{f.index:05d}",
            question=sentence(f.relation.questions[0].format(s=f.subject)),
            answer=boxed_target(f.obj),
            clear_answer=f.obj,
            subject=f.subject,
            split="train",
            meta={"relation": f.relation.name, "fact": f.index, "statement": f.statement()},
        )
        for f in facts
    ]


def paraphrase_examples(facts: list[Fact], config: KGFactConfig, rng: random.Random) -> list[Example]:
    examples = []
    for f in facts:
        templates = paraphrase_templates(f.relation)
        for k, template in enumerate(rng.sample(templates, min(config.paraphrases_per_fact, len(templates)))):
            examples.append(
                Example(
                    id=f"paraphrase-{f.index:05d}-{k}",
                    question=sentence(template.format(s=f.subject)),
                    answer=boxed_target(f.obj),
                    clear_answer=f.obj,
                    subject=f.subject,
                    split="paraphrase",
                    meta={"relation": f.relation.name, "fact": f.index, "template": templates.index(template)},
                )
            )
    return examples


def _bare_core(relation: Relation) -> str | None:
    """The first question core whose subject slot takes a whole noun phrase (no article before it)."""
    return next((q for q in relation.questions if not _DETERMINED_SUBJECT.search(q)), None)


def compositional_examples(facts: list[Fact], config: KGFactConfig, rng: random.Random) -> list[Example]:
    by_subject: dict[str, list[Fact]] = {}
    for f in facts:
        by_subject.setdefault(f.subject, []).append(f)
    chains = [
        (first, second)
        for first in facts
        for second in by_subject.get(first.obj, [])
        if _bare_core(second.relation) is not None
    ]
    chosen = sorted(rng.sample(chains, min(config.compositional, len(chains))), key=lambda c: (c[0].index, c[1].index))
    examples = []
    for k, (first, second) in enumerate(chosen):
        hop = first.relation.phrase.format(s=first.subject)
        examples.append(
            Example(
                id=f"compositional-{k:05d}",
                question=sentence(_bare_core(second.relation).format(s=hop)),
                answer=boxed_target(second.obj),
                clear_answer=second.obj,
                subject=first.subject,
                split="compositional",
                meta={
                    "facts": [first.index, second.index],
                    "bridge": first.obj,
                    "relations": [first.relation.name, second.relation.name],
                },
            )
        )
    return examples


def retrieval_examples(facts: list[Fact], config: KGFactConfig, rng: random.Random) -> list[Example]:
    examples = []
    for f in facts:
        others = [g for g in facts if g.index != f.index]
        shown = rng.sample(others, min(config.distractors, len(others))) + [f]
        rng.shuffle(shown)
        examples.append(
            Example(
                id=f"retrieval-{f.index:05d}",
                question=sentence(f.relation.questions[0].format(s=f.subject)),
                answer=boxed_target(f.obj),
                clear_answer=f.obj,
                subject=f.subject,
                split="retrieval",
                context="\n".join(g.statement() for g in shown),
                meta={"relation": f.relation.name, "fact": f.index, "distractors": len(shown) - 1},
            )
        )
    return examples


def build(config: KGFactConfig) -> dict[str, list[Example]]:
    entities, facts = build_world(config)
    # Each split draws from its own stream, so growing one split never reshuffles another.
    return {
        "train": train_examples(facts),
        "paraphrase": paraphrase_examples(facts, config, random.Random(f"{config.seed}-paraphrase")),
        "compositional": compositional_examples(facts, config, random.Random(f"{config.seed}-compositional")),
        "retrieval": retrieval_examples(facts, config, random.Random(f"{config.seed}-retrieval")),
    }


def write(config: KGFactConfig) -> str:
    """Write every split, `world.json` and `stats.json` into `config.out`; return the count table."""
    out = Path(config.out)
    entities, facts = build_world(config)
    splits = build(config)
    for name, examples in splits.items():
        write_jsonl(out / f"{name}.jsonl", examples)
    world = {
        "entities": entities,
        "facts": [
            {
                "index": f.index,
                "relation": f.relation.name,
                "subject": f.subject,
                "object": f.obj,
                "statement": f.statement(),
            }
            for f in facts
        ],
    }
    write_json(out / "world.json", world)
    stats = {
        "generator": GENERATOR_VERSION,
        "config": vars(config) | {"out": None},
        "domains": sorted(entities),
        "entities": sum(len(v) for v in entities.values()),
        "relations": sorted({f.relation.name for f in facts}),
        "facts": len(facts),
        "splits": {name: len(examples) for name, examples in splits.items()},
    }
    write_json(out / "stats.json", stats)
    rows = [(name, len(examples)) for name, examples in splits.items()]
    rows += [("(domains)", len(entities)), ("(entities)", stats["entities"]), ("(relations)", len(stats["relations"]))]
    return format_table(rows)

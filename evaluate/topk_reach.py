"""Can OPSD's top-k reverse KL teach a fact? `python -m evaluate.topk_reach --student CKPT --teacher BASE
--shards RUN_DIR --out FILE.json [--top_k 64]`

OPSD takes the reverse KL over the student's own top k tokens, both distributions renormalized there, so a
token the student ranks below k gets no probability pushed to it, however much the teacher wants it. Along the
student's own greedy replies to the naive prompts, this measures where the teacher (the base model with the
fact in context, the expert prompt) would write the answer next, and the student's rank of that token there;
and over every position, how often the teacher's choice lies outside the student's top k and how much of the
teacher's mass does. Writes FILE.json (per example and summed, with the config and versions); prints the sums.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch

from corpora.schema import load_jsonl
from evaluate.intervals import wilson
from mixsd import config as cfg
from mixsd.atomic import write_json
from mixsd.batching import decode
from mixsd.cli import run_cli
from mixsd.errors import UserError
from mixsd.models import load_tokenizer
from mixsd.run_format import RunManifest
from mixsd.versions import versions


class ReachError(UserError, ValueError):
    """Inputs the measurement cannot use; the message names the file or flag."""


@dataclass
class ReachConfig:
    student: str = ""  # the model OPSD trains (a checkpoint, or the base model: step 0)
    teacher: str = ""  # the frozen base model that sees the expert prompt
    shards: str = ""  # a generate run directory: its naive and expert prompts, and its corpus's answers
    out: str = ""  # the JSON file written
    corpus: str = ""  # default: the corpus named in the run's manifest
    top_k: int = 64
    max_new_tokens: int = 48
    batch_size: int = 16
    limit: int = 0  # 0: every example


@dataclass(frozen=True)
class Example:
    example_id: str
    prompt_ids: list[int]
    expert_prompt_ids: list[int]
    answer: str


def load_examples(shards: str, corpus: str = "") -> list[Example]:
    """The run's examples with the corpus's `clear_answer` for each."""
    from train.data import load_examples as load_train_examples

    manifest = RunManifest.find(shards)
    if manifest is None:
        raise ReachError(f"{shards}: no manifest.json (not a generate run directory)")
    if not corpus and not manifest.config.get("corpus"):
        raise ReachError(f"{shards}/manifest.json: names no corpus; pass --corpus")
    corpus = corpus or manifest.config["corpus"]
    answers = {record.id: record.clear_answer for record in load_jsonl(corpus)}  # names file, line, field
    examples, _ = load_train_examples([shards])
    missing = [e.example_id for e in examples if e.example_id not in answers]
    if missing:
        raise ReachError(f"{corpus}: no record for example id {missing[0]!r} of {shards}")
    return [Example(e.example_id, e.prompt_ids, e.expert_prompt_ids, answers[e.example_id]) for e in examples]


def answer_spellings(tokenizer, answer: str) -> list[list[int]]:
    """The answer's tokens as a reply would write it: after a space, or right after `{`."""
    return [tokenizer.encode(text, add_special_tokens=False) for text in (" " + answer, answer)]


def ranks(logp: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Per position, how many tokens `logp` ranks strictly above `tokens` (0: its first choice)."""
    return (logp > logp.gather(-1, tokens[:, None])).sum(-1)


def position_record(student_logp: torch.Tensor, teacher_logp: torch.Tensor, top_k: int) -> dict:
    """One reply's numbers over every position, from its [positions, vocab] log-distributions under the
    student (naive prompt) and the teacher (expert prompt)."""
    top = student_logp.topk(top_k, dim=-1).indices
    outside = ~(top == teacher_logp.argmax(-1)[:, None]).any(-1)
    teacher_mass_inside = teacher_logp.exp().gather(-1, top).sum(-1)
    return {
        "positions": len(outside),
        "teacher_choice_outside_top_k": int(outside.sum()),
        "teacher_mass_outside_top_k": (1 - teacher_mass_inside).tolist(),
    }


def answer_candidates(teacher_logp: torch.Tensor, spellings: list[list[int]]) -> list[tuple[int, list[int]]]:
    """(position, spelling) wherever the teacher's first choice along the reply is a spelling's first token."""
    firsts = {spelling[0]: spelling for spelling in spellings}
    choices = teacher_logp.argmax(-1).tolist()
    return [(p, firsts[token]) for p, token in enumerate(choices) if token in firsts]


def teacher_writes(teacher_logp: torch.Tensor, answer: list[int]) -> bool:
    """Whether each answer token is the teacher's first choice at its position ([answer tokens, vocab]): a
    common first token (" Z", " Lu") alone does not say the teacher is starting the answer."""
    return teacher_logp.argmax(-1).tolist() == answer


def answer_record(student_logp: torch.Tensor, teacher_logp: torch.Tensor, answer: list[int], top_k: int) -> dict:
    """Where the reply's prefix is followed by the whole answer, teacher-forced: [answer tokens, vocab] under
    each model, at a place where `teacher_writes` the answer."""
    tokens = torch.tensor(answer, dtype=torch.long, device=teacher_logp.device)
    student_ranks = ranks(student_logp, tokens).tolist()
    return {
        "answer_tokens": answer,
        "student_ranks": student_ranks,
        "worst_student_rank": max(student_ranks),
        "beyond_top_k": sum(r >= top_k for r in student_ranks),
        "student_prob": float(student_logp.gather(-1, tokens[:, None]).sum().exp()),
        "teacher_prob": float(teacher_logp.gather(-1, tokens[:, None]).sum().exp()),
    }


@torch.no_grad()
def replies(student, tokenizer, examples: list[Example], max_new_tokens: int) -> list[list[int]]:
    """The student's greedy replies to the naive prompts, ending in EOS unless cut at `max_new_tokens`."""
    from train.data import pad_id

    eos = tokenizer.eos_token_id
    drawn = decode(
        student, [e.prompt_ids for e in examples], max_new_tokens, lambda x, *_: x.argmax(-1), {eos}, pad_id(tokenizer)
    )
    return [r + [eos] if len(r) < max_new_tokens else r for r in drawn]


@torch.no_grad()
def measure(student, teacher, tokenizer, examples: list[Example], settings: ReachConfig) -> list[dict]:
    from train.data import pad_id
    from train.opsd import completion_logprobs

    pad = pad_id(tokenizer)
    records = []
    for start in range(0, len(examples), settings.batch_size):
        chunk = examples[start : start + settings.batch_size]
        drawn = replies(student, tokenizer, chunk, settings.max_new_tokens)
        student_logp, valid = completion_logprobs(student, [e.prompt_ids for e in chunk], drawn, pad)
        teacher_logp, _ = completion_logprobs(teacher, [e.expert_prompt_ids for e in chunk], drawn, pad)
        for row, (example, reply) in enumerate(zip(chunk, drawn)):
            n = int(valid[row].sum())
            student_row, teacher_row = student_logp[row, :n], teacher_logp[row, :n]
            candidates = answer_candidates(teacher_row, answer_spellings(tokenizer, example.answer))
            head = {"id": example.example_id, "answer": example.answer, "reply": tokenizer.decode(reply)}
            records.append(
                head
                | {"reply_ids": reply, "answer_position": None}
                | position_record(student_row, teacher_row, settings.top_k)
                | first_answer(student, teacher, example, reply, candidates, settings.top_k)
            )
        print(f"topk_reach: {len(records)}/{len(examples)} replies measured", flush=True)
    return records


@torch.no_grad()
def first_answer(student, teacher, example: Example, reply: list[int], candidates, top_k: int) -> dict:
    """The first candidate position where the teacher would write the whole answer, with the student's ranks of
    its tokens there; {} where there is none."""
    from train.opsd import completion_logprobs

    for position, answer in candidates:
        forced = [reply[:position] + answer]
        teacher_logp, _ = completion_logprobs(teacher, [example.expert_prompt_ids], forced, 0)
        if not teacher_writes(teacher_logp[0, position:], answer):
            continue  # the student's pass only where the teacher would write the answer
        student_logp, _ = completion_logprobs(student, [example.prompt_ids], forced, 0)
        return {"answer_position": position} | answer_record(
            student_logp[0, position:], teacher_logp[0, position:], answer, top_k
        )
    return {}


def summarize(records: list[dict], top_k: int) -> dict:
    positions = sum(r["positions"] for r in records)
    masses = [m for r in records for m in r["teacher_mass_outside_top_k"]]
    reached = [r for r in records if r["answer_position"] is not None]
    beyond = sum(r["beyond_top_k"] > 0 for r in reached)
    first_beyond = sum(r["student_ranks"][0] >= top_k for r in reached)
    return {
        "examples": len(records),
        "positions": positions,
        "teacher_choice_outside_top_k": sum(r["teacher_choice_outside_top_k"] for r in records) / positions,
        "teacher_mass_outside_top_k_mean": sum(masses) / len(masses),
        "replies_where_teacher_would_write_the_answer": len(reached),
        "answers_with_a_token_beyond_student_top_k": beyond,
        "answers_with_a_token_beyond_student_top_k_wilson95": wilson(beyond, len(reached)),
        "answers_whose_first_token_is_beyond_student_top_k": first_beyond,
        "worst_student_rank_median": statistics.median(r["worst_student_rank"] for r in reached) if reached else None,
        "answer_student_prob_median": statistics.median(r["student_prob"] for r in reached) if reached else None,
        "answer_teacher_prob_median": statistics.median(r["teacher_prob"] for r in reached) if reached else None,
    }


def summary_line(summary: dict, top_k: int) -> str:
    reached = summary["replies_where_teacher_would_write_the_answer"]
    return (
        f"topk_reach: {summary['examples']} replies, {summary['positions']} positions; the teacher's choice is "
        f"outside the student's top {top_k} at {summary['teacher_choice_outside_top_k']:.3f} of positions "
        f"(teacher mass outside: {summary['teacher_mass_outside_top_k_mean']:.3f} on average); the teacher would "
        f"write the answer in {reached} replies; in {summary['answers_with_a_token_beyond_student_top_k']} of them "
        f"(Wilson 95% {summary['answers_with_a_token_beyond_student_top_k_wilson95']}) the student ranks one of its "
        f"tokens beyond {top_k} (the first token: {summary['answers_whose_first_token_is_beyond_student_top_k']}); "
        f"median worst rank {summary['worst_student_rank_median']}, median answer probability "
        f"{summary['answer_student_prob_median']} (student) vs {summary['answer_teacher_prob_median']} (teacher)"
    )


def load_model(path: str, flag: str):
    from transformers import AutoModelForCausalLM

    from mixsd.attention import use_grouped_decode_attention

    try:
        return use_grouped_decode_attention(AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval())
    except OSError as err:
        raise ReachError(f"{flag} {path}: cannot be loaded ({err})") from None


def topk_reach(config: str | None = None, **flags) -> dict:
    settings = cfg.load(ReachConfig, config, "topk_reach", **flags)
    for flag in ("student", "teacher", "shards", "out"):
        if not getattr(settings, flag):
            raise ReachError(f"--{flag} is required")
    if settings.top_k < 1:
        raise ReachError(f"--top_k must be >= 1, got {settings.top_k}")
    print(cfg.describe(settings))
    examples = load_examples(settings.shards, settings.corpus)
    examples = examples[: settings.limit] if settings.limit else examples
    tokenizer = load_tokenizer(settings.teacher, "--teacher")
    student, teacher = load_model(settings.student, "--student"), load_model(settings.teacher, "--teacher")
    records = measure(student, teacher, tokenizer, examples, settings)
    summary = summarize(records, settings.top_k)
    write_json(
        settings.out, {"config": cfg.to_dict(settings), "versions": versions(), "summary": summary, "examples": records}
    )
    print(summary_line(summary, settings.top_k))
    return summary


def main() -> None:
    run_cli(topk_reach)


if __name__ == "__main__":
    main()

"""evaluate.topk_reach: where the teacher would start the answer along the student's replies, and the student's
rank of that token, against direct computations."""

from __future__ import annotations

import json

import pytest
import torch

from corpora.schema import CorpusError
from evaluate.topk_reach import answer_record, position_record, teacher_writes, topk_reach
from generate.config import GenerateConfig
from generate.runner import Generator


@pytest.fixture(scope="module")
def sft_shards(tiny_model_dir, kgfact_small, tmp_path_factory):
    out = tmp_path_factory.mktemp("reach-shards")
    config = GenerateConfig(
        model=str(tiny_model_dir), corpus=str(kgfact_small / "train.jsonl"), out=str(out), method="sft", progress=False
    )
    (run_dir,) = Generator(config).run_all()
    return run_dir


def test_position_and_answer_records_against_a_direct_computation():
    generator = torch.Generator().manual_seed(0)
    student = torch.log_softmax(torch.randn(12, 50, generator=generator), -1)
    teacher = torch.log_softmax(torch.randn(12, 50, generator=generator), -1)
    top_one = position_record(student, teacher, top_k=1)
    assert top_one["teacher_choice_outside_top_k"] == int((student.argmax(-1) != teacher.argmax(-1)).sum())
    every = position_record(student, teacher, top_k=50)
    assert every["teacher_choice_outside_top_k"] == 0 and max(every["teacher_mass_outside_top_k"]) < 1e-6
    inside = teacher.exp().gather(-1, student.topk(10, -1).indices).sum(-1)
    assert position_record(student, teacher, 10)["teacher_mass_outside_top_k"] == pytest.approx(
        (1 - inside).tolist(), abs=1e-6
    )

    answer = teacher[:3].argmax(-1).tolist()  # the teacher writes these three tokens
    record = answer_record(student[:3], teacher[:3], answer, top_k=10)
    direct = [student[i].argsort(descending=True).tolist().index(answer[i]) for i in range(3)]
    assert record["student_ranks"] == direct and record["worst_student_rank"] == max(direct)
    assert record["beyond_top_k"] == sum(r >= 10 for r in direct)
    assert record["teacher_prob"] == pytest.approx(float(sum(teacher[i, answer[i]] for i in range(3)).exp()))
    other = [answer[0], (answer[1] + 1) % 50, answer[2]]  # not the teacher's choice at its second token
    assert teacher_writes(teacher[:3], answer) and not teacher_writes(teacher[:3], other)


def test_topk_reach_on_the_tiny_model_matches_one_reply_alone(tiny_model_dir, sft_shards, tmp_path):
    """Batched replies (left-padded, shared prompts) give the counts a plain forward over one reply gives."""
    from transformers import AutoModelForCausalLM

    from mixsd.batching import continuation_logprobs
    from train.data import load_examples

    out = tmp_path / "reach.json"
    model = str(tiny_model_dir)
    summary = topk_reach(student=model, teacher=model, shards=str(sft_shards), out=str(out), top_k=1, limit=6)
    written = json.loads(out.read_text())
    assert written["summary"] == summary and written["config"]["top_k"] == 1 and "versions" in written
    assert summary["examples"] == 6 and len(written["examples"]) == 6

    net = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
    example = load_examples([str(sft_shards)])[0][3]
    record = written["examples"][3]
    reply = record["reply_ids"]
    with torch.no_grad():
        (student,) = continuation_logprobs(net, [example.prompt_ids + reply], [len(example.prompt_ids)])
        (teacher,) = continuation_logprobs(net, [example.expert_prompt_ids + reply], [len(example.expert_prompt_ids)])
    assert record["positions"] == len(reply)
    assert record["teacher_choice_outside_top_k"] == int((student.argmax(-1) != teacher.argmax(-1)).sum())


def test_topk_reach_names_a_corpus_it_cannot_read(tiny_model_dir, sft_shards, tmp_path):
    model = str(tiny_model_dir)
    missing = tmp_path / "nowhere.jsonl"
    with pytest.raises(CorpusError, match="nowhere.jsonl: file not found"):
        topk_reach(
            student=model, teacher=model, shards=str(sft_shards), out=str(tmp_path / "r.json"), corpus=str(missing)
        )
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "train-00000", "question": "?"}\n')
    with pytest.raises(
        CorpusError, match="broken.jsonl, line 1: field '(answer|clear_answer)': missing required field"
    ):
        topk_reach(
            student=model, teacher=model, shards=str(sft_shards), out=str(tmp_path / "r.json"), corpus=str(broken)
        )
    assert not (tmp_path / "r.json").exists()


def test_first_answer_finds_what_the_teacher_would_write(tiny_model_dir, sft_shards):
    """An 'answer' made of the teacher's own greedy tokens after a reply prefix is found at that position (and
    an earlier candidate the teacher would not write is passed over); the student's ranks match a plain forward."""
    from transformers import AutoModelForCausalLM

    from evaluate.topk_reach import first_answer, load_examples
    from mixsd.batching import continuation_logprobs, decode

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32).eval()
    student = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32).eval()
    with torch.no_grad():  # a student unlike the teacher, so its ranks are not the teacher's
        student.lm_head.weight.add_(0.5 * torch.randn_like(student.lm_head.weight))
    example = load_examples(str(sft_shards))[2]
    reply = list(range(40, 50))
    greedy = lambda logits, *_: logits.argmax(-1)  # noqa: E731
    with torch.no_grad():
        (answer,) = decode(model, [example.expert_prompt_ids + reply[:4]], 3, greedy, set(), 0)
    wrong = [(answer[0] + 1) % 100] + answer[1:]
    record = first_answer(student, model, example, reply, [(1, wrong), (4, answer)], top_k=5)
    assert record["answer_position"] == 4 and record["answer_tokens"] == answer
    with torch.no_grad():
        (logp,) = continuation_logprobs(student, [example.prompt_ids + reply[:4] + answer], [len(example.prompt_ids)])
    direct = [logp[4 + i].argsort(descending=True).tolist().index(answer[i]) for i in range(3)]
    assert record["student_ranks"] == direct
    assert first_answer(student, model, example, reply, [(1, wrong)], top_k=5) == {}

"""Where an OPSD step's time goes: sampling a batch's rollouts, then per micro-batch the student's forward, the
teacher's and the reverse KL with the student's backward. Prints measured seconds; asserts nothing.

    python benchmarks/bench_opsd.py --model models/smollm2-135m-instruct --shards "runs/reproduce/kgfact/generate/sft-*"
Defaults are configs/reproduce.yaml's OPSD settings (16 prompts, 4 rollouts of up to 48 tokens, micro-batches
of 4 prompts, top-64 KL).
"""

from __future__ import annotations

import glob
import time

import fire
import torch


def _timed(work):
    start = time.perf_counter()
    result = work()
    return result, time.perf_counter() - start


def main(
    model: str,
    shards: str,
    batch_size: int = 16,
    micro_batch_size: int = 4,
    rollouts: int = 4,
    max_new_tokens: int = 48,
    kl_top_k: int = 64,
    threads: int = 0,
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mixsd.attention import use_grouped_decode_attention
    from train import data
    from train.config import TrainConfig
    from train.opsd import completion_logprobs, reverse_kl
    from train.opsd import rollouts as sample_rollouts

    if threads:
        torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(model)
    student = use_grouped_decode_attention(AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32))
    teacher = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).requires_grad_(False)
    run_dirs = sorted(glob.glob(shards))
    examples, _ = data.load_examples(run_dirs)
    batch = data.select(examples, False, "opsd")[0][:batch_size]
    config = TrainConfig(
        method="opsd", model=model, shards=run_dirs, rollouts=rollouts, rollout_max_new_tokens=max_new_tokens
    )
    pad = data.pad_id(tokenizer)
    print(f"{len(batch)} prompts × {rollouts} rollouts, {torch.get_num_threads()} threads, float32")

    drawn, seconds = _timed(lambda: sample_rollouts(student, batch, tokenizer, config, 0))
    lengths = [len(c) for completions in drawn.values() for c in completions]
    print(f"sampling: {seconds:.1f} s, mean rollout {sum(lengths) / len(lengths):.1f} tokens")
    total = seconds
    for start in range(0, len(batch), micro_batch_size):
        group = batch[start : start + micro_batch_size]
        naive = [e.prompt_ids for e in group for _ in range(rollouts)]
        expert = [e.expert_prompt_ids for e in group for _ in range(rollouts)]
        completions = [c for e in group for c in drawn[e.example_id]]
        (student_logp, valid), forward_s = _timed(lambda: completion_logprobs(student, naive, completions, pad))
        with torch.no_grad():
            (teacher_logp, _), teacher_s = _timed(lambda: completion_logprobs(teacher, expert, completions, pad))
        _, backward_s = _timed(lambda: (reverse_kl(student_logp, teacher_logp, kl_top_k) * valid).sum().backward())
        total += forward_s + teacher_s + backward_s
        parts = f"student forward {forward_s:.1f} s, teacher {teacher_s:.1f} s, KL and backward {backward_s:.1f} s"
        print(f"micro-batch: {parts}")
    print(f"step: {total:.1f} s")


if __name__ == "__main__":
    fire.Fire(main)

"""Helpers for generator tests: prompts for the tiny model, and transformers forwards as the oracle."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from generate.pairs import PairJob


def first_records(corpus: Path, count: int, out: Path) -> Path:
    """`out`: the first `count` records of the JSONL file `corpus` (a small corpus for a test's own run)."""
    out.write_text("".join(corpus.read_text().splitlines(keepends=True)[:count]))
    return out


def simple_jobs(
    tokenizer, count: int, lam: float, temperature: float, max_tokens: int, same_prompt: bool = False, sample: int = 0
) -> list[PairJob]:
    from mixsd.prompts import chat_ids

    jobs = []
    for i in range(count):
        n = 0 if same_prompt else i
        jobs.append(
            PairJob(
                chat_ids(tokenizer, f"Where was person {n} born?"),
                chat_ids(tokenizer, f"Where was person {n} born? The answer is {n * 7}."),
                key=i,
                sample=sample,
                seed=0,
                lam=lam,
                temperature=temperature,
                top_k=0,
                top_p=1.0,
                max_tokens=max_tokens,
            )
        )
    return jobs


@torch.no_grad()
def next_token_logprobs(model, prompt: list[int], target: list[int]) -> torch.Tensor:
    """log p(· | prompt, target[:t]) for every t, shape [len(target), vocab]."""
    ids = torch.tensor([prompt + target])
    logits = model(ids).logits[0].float()
    return torch.log_softmax(logits[len(prompt) - 1 : len(prompt) - 1 + len(target)], dim=-1)


def chi2_critical(dof: int, z: float = 3.090) -> float:
    """Wilson-Hilferty approximation of the chi-square quantile (z = 3.090: p = 0.001)."""
    return dof * (1 - 2 / (9 * dof) + z * (2 / (9 * dof)) ** 0.5) ** 3


def cli_flags(config: dict) -> list[str]:
    """`--key value` pairs for `python -m generate` (lists as JSON, which the CLI parses back)."""
    flags = []
    for key, value in config.items():
        flags += [f"--{key}", json.dumps(value) if isinstance(value, list) else str(value)]
    return flags


def run_main_in_process(command, args: list[str], capsys) -> tuple[int, str]:
    """(exit status, stderr) of a stage's CLI command run in this process through `mixsd.cli.run_cli`, the
    path every `python -m STAGE` takes, without an interpreter start per case."""
    from mixsd.cli import run_cli

    capsys.readouterr()
    try:
        run_cli(command, args)
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    return code, capsys.readouterr().err

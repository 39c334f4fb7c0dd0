"""The reference backend: the same paired decoding in plain PyTorch/transformers.

Both conditionals of a chunk of pairs run as one left-padded batch with a KV cache; each step takes the
last logits of every row and calls the same `mix_step` as the vLLM processor. It serves where vLLM is
absent and as the oracle in tests.
"""

from __future__ import annotations

from typing import Callable

import torch

from generate.pairs import PairJob, PairResult
from generate.sampling import PairSettings, mix_step
from mixsd.batching import KVDecoder


class HFPairedEngine:
    def __init__(
        self,
        model: str,
        stop_token_ids: list[int],
        dtype: str = "auto",
        batch_pairs: int = 32,
        device: str | None = None,
    ):
        from transformers import AutoModelForCausalLM

        from mixsd.attention import use_grouped_decode_attention

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
        self.model = use_grouped_decode_attention(
            AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype).to(self.device).eval()
        )
        self.batch_pairs = batch_pairs
        self.stop_token_ids = set(stop_token_ids)

    def close(self) -> None:
        self.model = None

    def decode(self, jobs: list[PairJob], on_done: Callable[[int, PairResult], None] | None = None) -> list[PairResult]:
        results: list[PairResult] = []
        for start in range(0, len(jobs), self.batch_pairs):
            chunk = jobs[start : start + self.batch_pairs]
            for offset, result in enumerate(self._decode_chunk(chunk, self.stop_token_ids)):
                results.append(result)
                if on_done is not None:
                    on_done(start + offset, result)
        return results

    @torch.no_grad()
    def _decode_chunk(self, jobs: list[PairJob], stops: set[int]) -> list[PairResult]:
        pairs = len(jobs)
        prompts = [j.expert_ids for j in jobs] + [j.naive_ids for j in jobs]  # rows: experts, then naives
        longest = max(j.max_tokens for j in jobs)
        decoder = KVDecoder(self.model, prompts, room=longest)
        settings = PairSettings.stack([j.spec(uid=i, role=0, offset=0) for i, j in enumerate(jobs)], self.device)
        experts = torch.arange(pairs, device=self.device)  # pair i: row i (expert) and row pairs + i (naive)
        results = [PairResult() for _ in jobs]
        active = [True] * pairs
        step = 0
        while any(active) and step < longest:
            logits = decoder.logits
            tokens, _ = mix_step(
                logits, experts, experts + pairs, settings, torch.full((pairs,), step, device=self.device)
            )
            expert_lp = torch.log_softmax(logits[:pairs], -1).gather(1, tokens[:, None]).squeeze(1)
            naive_lp = torch.log_softmax(logits[pairs:], -1).gather(1, tokens[:, None]).squeeze(1)
            # One copy to the host per step: reading rows one by one would wait on the device 3 × pairs times.
            step_tokens, step_expert, step_naive = (t.tolist() for t in (tokens, expert_lp, naive_lp))
            for i in range(pairs):
                if not active[i]:
                    continue
                if step_tokens[i] in stops:
                    results[i].finish_reason = "stop"
                    active[i] = False
                    continue
                results[i].tokens.append(step_tokens[i])
                results[i].expert_logprobs.append(step_expert[i])
                results[i].naive_logprobs.append(step_naive[i])
                if len(results[i].tokens) >= jobs[i].max_tokens:
                    active[i] = False
            step += 1
            if not any(active):
                break
            decoder.feed(tokens.repeat(2))  # both rows of a pair continue from the same mixed token
        return results

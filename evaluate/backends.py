"""Greedy generation for evaluation: vLLM when it is installed, transformers otherwise.

Both take token-id prompts and return decoded completions. A backend is built once and pointed at one model
after another with `load(path)`: the vLLM engine reloads weights in place (an engine start costs far more
than a weight swap, and a torn-down engine cannot be rebuilt in the same process), so a sweep over a run's
checkpoints pays for one engine.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

import torch

from mixsd.batching import decode
from mixsd.config import ConfigError


@dataclass
class BackendSettings:
    dtype: str = "auto"
    batch_size: int = 64  # transformers backend: prompts per forward pass
    max_model_len: int = 2048  # vLLM backend: the longest prompt + completion it will see
    max_num_seqs: int = 128  # vLLM backend: sequences in flight
    kv_cache_bytes: int | None = None  # vLLM backend: see mixsd.engine_memory (None: from gpu_memory_utilization)
    gpu_memory_utilization: float = 0.3  # vLLM backend on GPUs
    enforce_eager: bool = True  # vLLM backend: skip compilation (starts in about a second)


def pick_backend(name: str) -> str:
    if name == "auto":
        return "vllm" if importlib.util.find_spec("vllm") is not None else "hf"
    if name not in ("vllm", "hf"):
        raise ConfigError(f"--backend must be auto, vllm or hf, got {name!r}")
    return name


def make_backend(name: str, model: str, stop_token_ids: list[int], settings: BackendSettings):
    if pick_backend(name) == "vllm":
        return VLLMGreedy(model, stop_token_ids, settings)
    return HFGreedy(model, stop_token_ids, settings)


class HFGreedy:
    def __init__(self, model: str, stop_token_ids: list[int], settings: BackendSettings):
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.settings, self.stops = settings, set(stop_token_ids)
        self.load(model)

    def load(self, model: str) -> None:
        from transformers import AutoModelForCausalLM

        from mixsd.attention import use_grouped_decode_attention

        dtype = "auto" if self.settings.dtype == "auto" else getattr(torch, self.settings.dtype)
        self.model = use_grouped_decode_attention(
            AutoModelForCausalLM.from_pretrained(model, dtype=dtype).to(self.device).eval()
        )

    def generate(self, prompts: list[list[int]], max_new_tokens: int, on_batch=None) -> list[list[int]]:
        """`on_batch(done, total)`, if given, after each batch."""
        # Longest first: rows of a batch have similar lengths, so less padding.
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        outputs: list[list[int]] = [[] for _ in prompts]
        for start in range(0, len(order), self.settings.batch_size):
            rows = order[start : start + self.settings.batch_size]
            for row, completion in zip(rows, self._batch([prompts[i] for i in rows], max_new_tokens)):
                outputs[row] = completion
            if on_batch is not None:
                on_batch(min(start + self.settings.batch_size, len(order)), len(order))
        return outputs

    def close(self) -> None:
        self.model = None

    @torch.no_grad()
    def _batch(self, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
        return decode(self.model, prompts, max_new_tokens, lambda logits, *_: logits.argmax(-1), self.stops)


class VLLMGreedy:
    def __init__(self, model: str, stop_token_ids: list[int], settings: BackendSettings):
        # In-process engine: weights can be swapped from here, and no worker process outlives a test.
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        from vllm import LLM

        self.stops = list(stop_token_ids)
        self.llm = LLM(
            model=model,
            dtype=settings.dtype,
            max_model_len=settings.max_model_len,
            max_num_seqs=settings.max_num_seqs,
            kv_cache_memory_bytes=settings.kv_cache_bytes,
            gpu_memory_utilization=settings.gpu_memory_utilization,
            enforce_eager=settings.enforce_eager,
            seed=0,
            enable_prefix_caching=True,
            disable_log_stats=True,
        )
        self.model = model

    def load(self, model: str) -> None:
        """Swap in another checkpoint of the same architecture; the prefix cache holds the old model's keys."""
        if model == self.model:
            return
        self.llm.collective_rpc("reload_weights", kwargs={"weights_path": str(model)})
        self.llm.apply_model(_retie_output_head)
        self.llm.reset_prefix_cache()
        self.model = model

    def generate(self, prompts: list[list[int]], max_new_tokens: int, on_batch=None) -> list[list[int]]:
        """`on_batch`: given, vLLM's own progress bar (items, rate, ETA) shows while it generates."""
        from vllm import SamplingParams, TokensPrompt

        params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, stop_token_ids=self.stops, detokenize=False)
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=on_batch is not None
        )
        return [[t for t in o.outputs[0].token_ids if t not in self.stops] for o in outputs]

    def close(self) -> None:
        """Shuts the engine down now. vLLM (0.32) tears down the process-wide parallel state when an in-process
        engine shuts down, whenever that happens (here, or when it is garbage collected): any other engine
        alive in the process stops working then. So a process runs one engine at a time and closes it before
        starting the next."""
        self.llm.llm_engine.engine_core.shutdown()
        self.llm = None


def _retie_output_head(model) -> None:
    """vLLM's in-place reload gives a model with tied embeddings a new embedding tensor but puts the output
    head's old tensor back (the checkpoint stores the shared matrix once, under the embedding), so the head
    would keep the previous model's weights (on CPU also a prepacked copy of them). Point it at the reloaded
    embedding again and let its method re-process it."""
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "tie_word_embeddings", False):
        head = model.lm_head
        head.weight = model.model.embed_tokens.weight
        head.quant_method.process_weights_after_loading(head)

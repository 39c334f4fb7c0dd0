"""The only module of `generate/` that imports vLLM: the paired logits processor and the engine driver.

Every example is two requests in one engine: the expert (fact in context) and the naive (prior). The
processor sees both rows in the same step, draws the mixed token once (`generate.sampling.mix_step`) and
forces it on both rows, so both streams continue from the same prefix. The driver runs the engine
in-process (`add_request`/`step`), admits a pair only when both members fit in the step's budget, and
recovers any pair that the scheduler split (preemption, a partial prefill): it aborts both members and
resubmits them with the agreed prefix appended to both prompts. The hash-keyed randomness makes the
recovered result identical to an unsplit run. A pair that splits `max_splits` times in a row without one new
agreed token while it is alone in the engine (its two members cannot run together: too little KV cache or
token budget) is given up, and the caller lists it as skipped instead of looping forever.
"""

from __future__ import annotations

import os


def _require_in_process_v1_engine() -> None:
    """The in-process engine is what keeps pairs together; V2's model runner has another processor interface.
    Set on import (before vLLM reads its environment) and again by each engine: a process forked after the
    import with a fresh environment (a fork server's child) would otherwise start a multiprocess engine."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ.setdefault("VLLM_USE_V2_MODEL_RUNNER", "0")


_require_in_process_v1_engine()

import itertools  # noqa: E402
from collections import deque  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Callable  # noqa: E402

import torch  # noqa: E402
import vllm  # noqa: E402
from vllm import EngineArgs, SamplingParams  # noqa: E402
from vllm.sampling_params import RequestOutputKind  # noqa: E402
from vllm.v1.engine.llm_engine import LLMEngine  # noqa: E402
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality  # noqa: E402

from generate.pairs import EXPERT, NAIVE, PairJob, PairResult  # noqa: E402
from generate.sampling import PairSettings, mix_step  # noqa: E402
from mixsd.errors import UserError  # noqa: E402

SPEC_KEY = "mixsd"
# The paired processor rests on vLLM's V1 logits-processor interface and its scheduler's semantics
# (../shared/notes/); these are the releases the test suite passed on.
TESTED_VLLM = ("0.32",)


class UntestedVLLMError(UserError):
    pass


def check_vllm_version(version: str, allow_untested: bool) -> None:
    """Refuse a vLLM major.minor the suite has not passed on, unless the user says they know better."""
    minor = ".".join(version.split(".")[:2])
    if minor in TESTED_VLLM:
        return
    message = (
        f"vLLM {version} is untested with the paired logits processor (tested: {', '.join(TESTED_VLLM)}); "
        "install the pinned version (make install) or pass --allow_untested_vllm true to try it"
    )
    if not allow_untested:
        raise UntestedVLLMError(message)
    print(f"warning: {message}", flush=True)


@dataclass
class _Member:
    spec: dict
    output_ids: list[int]  # live reference to the request's output tokens


@dataclass
class _Plan:
    """Index tensors for the complete pairs in the batch; rebuilt only when the batch changes."""

    expert_rows: torch.Tensor
    naive_rows: torch.Tensor
    offset: torch.Tensor
    settings: PairSettings
    expert_outputs: list[list[int]]
    naive_outputs: list[list[int]]
    any_sampled: bool  # False when every pair decodes at temperature 0: no draw uniforms needed


class PairedMixProcessor(LogitsProcessor):
    """Forces one mixed token on both rows of every pair that is in the batch and in step."""

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool) -> None:
        self.device = device
        self.rows: dict[int, _Member] = {}
        self.plan: _Plan | None = None

    @classmethod
    def validate_params(cls, params: SamplingParams) -> None:
        spec = (params.extra_args or {}).get(SPEC_KEY)
        if spec is not None and not 0.0 <= spec["lam"] <= 1.0:
            raise ValueError(f"mixsd lam must be in [0, 1], got {spec['lam']}")

    def is_argmax_invariant(self) -> bool:
        return False  # it changes the argmax; vLLM would skip it in all-greedy batches otherwise

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if batch_update is None:
            return
        for index in batch_update.removed:
            self.rows.pop(index, None)
        for index, params, _prompt, output_ids in batch_update.added:
            spec = (params.extra_args or {}).get(SPEC_KEY)
            if spec is None:
                self.rows.pop(index, None)
            else:
                self.rows[index] = _Member(spec, output_ids)
        for first, second, direction in batch_update.moved:
            a, b = self.rows.pop(first, None), self.rows.pop(second, None)
            if a is not None:
                self.rows[second] = a
            if direction == MoveDirectionality.SWAP and b is not None:
                self.rows[first] = b
        self.plan = None

    def _build_plan(self) -> _Plan:
        pairs: dict[int, list] = {}
        for index, member in self.rows.items():
            pairs.setdefault(member.spec["uid"], [None, None])[member.spec["role"]] = (index, member)
        complete = [p for p in pairs.values() if p[EXPERT] is not None and p[NAIVE] is not None]
        specs = [p[EXPERT][1].spec for p in complete]

        return _Plan(
            expert_rows=torch.tensor([p[EXPERT][0] for p in complete], dtype=torch.long, device=self.device),
            naive_rows=torch.tensor([p[NAIVE][0] for p in complete], dtype=torch.long, device=self.device),
            offset=torch.tensor([s["offset"] for s in specs], dtype=torch.int64, device=self.device),
            settings=PairSettings.stack(specs, self.device),
            expert_outputs=[p[EXPERT][1].output_ids for p in complete],
            naive_outputs=[p[NAIVE][1].output_ids for p in complete],
            any_sampled=any(s["temperature"] > 0 for s in specs),
        )

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if self.plan is None:
            self.plan = self._build_plan()
        plan = self.plan
        if len(plan.expert_rows) == 0:
            return logits
        expert_len = torch.tensor([len(o) for o in plan.expert_outputs], device=self.device)
        naive_len = torch.tensor([len(o) for o in plan.naive_outputs], device=self.device)
        # Members whose outputs differ in length are out of step: leave them alone, the driver recovers them.
        in_step = expert_len == naive_len
        tokens, _ = mix_step(
            logits, plan.expert_rows, plan.naive_rows, plan.settings, plan.offset + expert_len, plan.any_sampled
        )
        rows = torch.cat([plan.expert_rows[in_step], plan.naive_rows[in_step]])
        chosen = tokens[in_step].repeat(2)
        if len(rows) == logits.shape[0]:
            logits.fill_(float("-inf"))  # the usual case: every row belongs to a pair in step
        else:
            logits[rows] = float("-inf")
        logits[rows, chosen] = 0.0  # a one-hot mask survives temperature, top-k/top-p and penalties
        return logits


@dataclass
class EngineSettings:
    model: str
    dtype: str = "auto"
    max_model_len: int | None = None
    max_num_seqs: int = 256
    max_num_batched_tokens: int | None = None
    gpu_memory_utilization: float = 0.3  # GPUs, when kv_cache_bytes is None
    kv_cache_bytes: int | None = None  # the KV cache's size; see mixsd.engine_memory (None: vLLM sizes it)
    num_gpu_blocks_override: int | None = None
    tensor_parallel_size: int = 1
    enable_prefix_caching: bool = True
    enforce_eager: bool = True  # skip compilation: starts in about a second (see mixsd.engine_memory.resolve_eager)
    ignore_eos: bool = False  # benchmarks: fixed lengths
    logprobs: bool = True  # raw log p_E / log p_N of each forced token; costs vLLM bookkeeping per token
    max_splits: int = 8  # a pair that splits this often in a row, alone and without progress, is skipped
    allow_untested_vllm: bool = False
    seed: int = 0


@dataclass
class _Flight:
    """One pair in the engine: its job, the agreed prefix, and what each member has produced since submission."""

    index: int
    job: PairJob
    prefix: PairResult = field(default_factory=PairResult)
    uid: int = -1
    splits: int = 0
    stalls: int = 0  # splits in a row, alone in the engine, that agreed on no new token
    tokens: tuple = field(default_factory=lambda: ([], []))
    logprobs: tuple = field(default_factory=lambda: ([], []))
    finished: list = field(default_factory=lambda: [None, None])

    def reset(self, uid: int) -> None:
        self.uid, self.tokens, self.logprobs, self.finished = uid, ([], []), ([], []), [None, None]

    def extend(self, role: int, output) -> None:
        """Append a DELTA output: the new tokens and their raw logprobs."""
        new = list(output.token_ids)
        self.tokens[role].extend(new)
        if output.logprobs is None:
            return self._finished(role, output)
        values = output.logprobs.logprobs  # FlatLogprobs: with logprobs=0, one value (the sampled token's) a position
        if len(values) != len(new):
            raise RuntimeError(f"expected one logprob per new token, got {len(values)} for {len(new)}")
        self.logprobs[role].extend(values)
        self._finished(role, output)

    def _finished(self, role: int, output) -> None:
        if output.finish_reason is not None:
            self.finished[role] = output.finish_reason

    def state(self) -> str:
        """running, done, or split. Forced tokens make members agree step by step, so lengths, finish states
        and the last token suffice: a difference shows up at the step it happens."""
        expert, naive = self.tokens
        if len(expert) != len(naive) or (self.finished[EXPERT] is None) != (self.finished[NAIVE] is None):
            return "split"
        if expert and expert[-1] != naive[-1]:
            return "split"
        return "done" if self.finished[EXPERT] is not None else "running"


@dataclass
class DecodeStats:
    splits: int = 0  # split events (a pair can split more than once)
    recovered: int = 0  # pairs that finished after at least one split
    unpaired: int = 0  # pairs given up after max_splits splits without progress


class VLLMPairedEngine:
    """An in-process vLLM engine that decodes PairJobs in lock-step."""

    def __init__(self, settings: EngineSettings, stop_token_ids: list[int]):
        if settings.max_num_seqs % 2:
            raise ValueError(f"max_num_seqs must be even (pairs are admitted whole), got {settings.max_num_seqs}")
        check_vllm_version(vllm.__version__, settings.allow_untested_vllm)
        _require_in_process_v1_engine()
        self.settings = settings
        self.stop_token_ids = list(stop_token_ids)
        args = EngineArgs(
            model=settings.model,
            dtype=settings.dtype,
            max_model_len=settings.max_model_len,
            max_num_seqs=settings.max_num_seqs,
            max_num_batched_tokens=settings.max_num_batched_tokens,
            gpu_memory_utilization=settings.gpu_memory_utilization,
            kv_cache_memory_bytes=settings.kv_cache_bytes,
            num_gpu_blocks_override=settings.num_gpu_blocks_override,
            tensor_parallel_size=settings.tensor_parallel_size,
            enforce_eager=settings.enforce_eager,
            enable_prefix_caching=settings.enable_prefix_caching,
            seed=settings.seed,
            logits_processors=[PairedMixProcessor],
            async_scheduling=False,
            disable_log_stats=True,
        )
        self.engine = LLMEngine.from_engine_args(args)
        scheduler = self.engine.vllm_config.scheduler_config
        self.token_budget = scheduler.max_num_batched_tokens
        self._uids = itertools.count()
        self._requests: dict[str, tuple[int, int]] = {}  # request id -> (pair uid, role)
        self.stats = DecodeStats()

    def close(self) -> None:
        """Shuts the engine down. vLLM (0.32) resets the process-wide parallel state when an in-process engine
        shuts down, whenever that happens: any other engine alive in the process stops working. One engine
        at a time per process, each closed before the next starts."""
        self.engine.engine_core.shutdown()

    def decode(self, jobs: list[PairJob], on_done: Callable[[int, PairResult], None] | None = None) -> list[PairResult]:
        """Decode every job; results in job order. `on_done(index, result)` is called as pairs finish."""
        results: list[PairResult | None] = [None] * len(jobs)
        waiting = deque(_Flight(i, job) for i, job in enumerate(jobs))
        flying: dict[int, _Flight] = {}
        while waiting or flying:
            self._admit(waiting, flying)
            for output in self.engine.step():
                uid, role = self._requests.get(output.request_id, (None, None))
                if uid in flying:
                    flying[uid].extend(role, output.outputs[0])
            for uid in list(flying):
                flight = flying[uid]
                state = flight.state()
                if state == "running":
                    continue
                del flying[uid]
                self._forget(uid)
                if state == "split":
                    self._recover(flight, alone=not flying)
                    if flight.stalls < self.settings.max_splits:
                        waiting.appendleft(flight)  # next in line, with the prefix both members agreed on
                        continue
                    self.stats.unpaired += 1
                    result = _unpaired(flight)  # it would split forever: give up on this pair only
                else:
                    result = _finish(flight, self.stop_token_ids)
                    self.stats.recovered += flight.splits > 0
                results[flight.index] = result
                if on_done is not None:
                    on_done(flight.index, result)
        return results  # type: ignore[return-value]

    def _admit(self, waiting: deque, flying: dict) -> None:
        """Add whole pairs while both members fit in the sequence limit and this step's token budget."""
        budget = self.token_budget - 2 * len(flying)
        while waiting and 2 * (len(flying) + 1) <= self.settings.max_num_seqs:
            flight = waiting[0]
            cost = len(flight.job.naive_ids) + len(flight.job.expert_ids) + 2 * len(flight.prefix.tokens)
            if cost > budget and flying:
                break
            waiting.popleft()
            budget -= cost
            self._submit(flight)
            flying[flight.uid] = flight

    def _submit(self, flight: _Flight) -> None:
        flight.reset(next(self._uids))
        prefix = flight.prefix.tokens
        remaining = flight.job.max_tokens - len(prefix)
        for role, prompt in ((EXPERT, flight.job.expert_ids), (NAIVE, flight.job.naive_ids)):
            params = SamplingParams(
                temperature=0.0,
                max_tokens=remaining,
                logprobs=0 if self.settings.logprobs else None,
                stop_token_ids=self.stop_token_ids,
                ignore_eos=self.settings.ignore_eos,
                output_kind=RequestOutputKind.DELTA,
                detokenize=False,
                flat_logprobs=True,
                extra_args={SPEC_KEY: flight.job.spec(flight.uid, role, len(prefix))},
            )
            request_id = f"{flight.uid}-{role}"
            self._requests[request_id] = (flight.uid, role)
            self.engine.add_request(request_id, {"prompt_token_ids": list(prompt) + prefix}, params)

    def _forget(self, uid: int) -> None:
        for role in (EXPERT, NAIVE):
            self._requests.pop(f"{uid}-{role}", None)

    def _recover(self, flight: _Flight, alone: bool) -> None:
        """Abort both members and keep the prefix both agree on, to resubmit the pair from there. A split with
        no new agreed token while no other pair was in flight is a stall: other pairs cannot be what kept the
        two members apart, so it would happen again."""
        self.stats.splits += 1
        flight.splits += 1
        self.engine.abort_request([f"{flight.uid}-{EXPERT}", f"{flight.uid}-{NAIVE}"])
        agreed = _agreed_length(*flight.tokens)
        flight.stalls = 0 if agreed else flight.stalls + alone
        flight.prefix.tokens += flight.tokens[EXPERT][:agreed]
        flight.prefix.expert_logprobs += flight.logprobs[EXPERT][:agreed]
        flight.prefix.naive_logprobs += flight.logprobs[NAIVE][:agreed]


def _unpaired(flight: _Flight) -> PairResult:
    return PairResult(
        finish_reason="unpaired",
        failure=(
            f"split {flight.stalls} times in a row without an agreed token: the engine could not run both members "
            "of the pair together (KV cache or token budget too small for the two prompts); raise --kv_cache_gib"
        ),
    )


def _agreed_length(expert: list[int], naive: list[int]) -> int:
    """Tokens both members produced identically (forced tokens always agree)."""
    n = min(len(expert), len(naive))
    return next((i for i in range(n) if expert[i] != naive[i]), n)


def _finish(flight: _Flight, stop_token_ids: list[int]) -> PairResult:
    tokens = flight.tokens[EXPERT]
    stopped = flight.finished[EXPERT] == "stop" and bool(tokens) and tokens[-1] in stop_token_ids
    keep = len(tokens) - 1 if stopped else len(tokens)
    prefix = flight.prefix
    return PairResult(
        tokens=prefix.tokens + tokens[:keep],
        expert_logprobs=prefix.expert_logprobs + flight.logprobs[EXPERT][:keep],
        naive_logprobs=prefix.naive_logprobs + flight.logprobs[NAIVE][:keep],
        finish_reason="stop" if stopped else "length",
    )

"""Corpus -> run directories of mixed-supervision shards, one per λ, resumable shard by shard."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from corpora.schema import Example, load_jsonl
from generate import shards
from generate.card import write_card
from generate.config import GenerateConfig
from generate.pairs import PairJob, PairResult
from generate.sampling import sources
from mixsd import prompts
from mixsd.answers import is_correct
from mixsd.checksums import file_sha256, model_fingerprint
from mixsd.config import to_dict
from mixsd.engine_memory import (
    KVCachePlan,
    engine_line,
    explain_memory_error,
    model_context_length,
    plan_kv_cache,
    resolve_eager,
)
from mixsd.lock import OutputLock, output_lock
from mixsd.models import declared_dtype, load_tokenizer
from mixsd.precision import resolve_dtype
from mixsd.randomness import example_key
from mixsd.run_format import Source
from mixsd.versions import versions


@dataclass
class Prepared:
    """An example with its two prompts and its token budget (0 when the prompt does not fit)."""

    example: Example
    naive_ids: list[int]
    expert_ids: list[int]
    max_tokens: int


@dataclass
class RunState:
    """One λ's run directory and its manifest while it is being filled."""

    lam: float | None
    run_dir: Path
    manifest: dict
    shard_sizes: list[int]  # examples per shard, in shard order
    lock: OutputLock  # held from open_run until close: one writer per run directory

    @property
    def complete(self) -> bool:
        return bool(self.manifest.get("complete"))

    @property
    def format(self) -> int:
        return self.manifest.get("format", 1)

    def shard_path(self, index: int) -> Path:
        return self.run_dir / shards.shard_name(index, self.format)

    @property
    def missing(self) -> list[int]:
        done = {e["file"] for e in self.manifest["shards"]}
        return [i for i in range(len(self.shard_sizes)) if self.shard_path(i).name not in done]

    def examples_done(self) -> int:
        missing = set(self.missing)
        return sum(size for i, size in enumerate(self.shard_sizes) if i not in missing)

    def close(self) -> None:
        self.lock.release()


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, *args, **kwargs) -> None:
        pass


class Generator:
    def __init__(self, config: GenerateConfig, engine=None):
        """`engine`: an already started backend to reuse (tests and λ sweeps share one); built lazily otherwise."""
        self.config = config
        self.tokenizer = load_tokenizer(config.model)
        self.examples = load_jsonl(config.corpus)
        # Examples assigned to shards: a fixed split of the corpus order, whoever generates them.
        self.shard_examples = [
            self.examples[i : i + config.shard_size] for i in range(0, len(self.examples), config.shard_size)
        ]
        self.corpus_sha256 = file_sha256(config.corpus)
        self.model_id = model_fingerprint(config.model)
        self.max_model_len = config.max_model_len or model_context_length(config.model)
        self.dtype = resolve_dtype(config.dtype, declared_dtype(config.model))  # auto: float32 where bf16 is slow
        self.stop_ids = prompts.stop_token_ids(self.tokenizer, config.model)
        self._engine, self._owns_engine = engine, engine is None
        self._prepared: dict[int, list[Prepared]] = {}

    # ---- runs -------------------------------------------------------------------------------------------
    def run_all(self) -> list[Path]:
        lams = self.config.lam if self.config.method == "mixsd" else [None]
        try:
            return [self.run(lam) for lam in lams]
        finally:
            self.close()

    def close(self) -> None:
        """Shuts down the engine this generator started (not one it was given), now rather than whenever it
        is garbage collected: a vLLM engine's shutdown resets process-wide state (VLLMPairedEngine.close)."""
        if self._owns_engine and self._engine is not None:
            self._engine.close()
            self._engine = None

    def run(self, lam: float | None) -> Path:
        state = self.open_run(lam)
        try:
            if state.complete:
                return state.run_dir
            bar = tqdm(
                total=len(self.examples),
                initial=state.examples_done(),
                unit="ex",
                desc=state.run_dir.name,
                disable=not self.config.progress,
            )
            for index in state.missing:
                start = time.perf_counter()
                rows, report = self.shard_rows(index, lam, bar)
                self.record_shard(state, index, rows, report, time.perf_counter() - start)
            bar.close()
            return self.finish_run(state)
        finally:
            state.close()

    # ---- the steps of a run, shared with the Ray driver (generate/ray_runner.py) ----------------------------
    def open_run(self, lam: float | None) -> RunState:
        settings = self.config.output_settings(lam) | {"model": self.model_id, "corpus_sha256": self.corpus_sha256}
        if "dtype" in settings:
            settings["dtype"] = self.dtype  # what `auto` meant on this machine changes the rows
        digest = shards.settings_hash(settings)
        run_dir = Path(self.config.out) / shards.run_name(settings, digest)
        lock = output_lock(run_dir, f"run directory {run_dir}").acquire()
        try:
            manifest = shards.open_run(run_dir, digest, self._fresh_manifest(lam, digest, settings))
        except BaseException:
            lock.release()
            raise
        state = RunState(lam, run_dir, manifest, [len(chunk) for chunk in self.shard_examples], lock)
        if state.complete:
            print(f"{run_dir}: complete, nothing to do")
        elif manifest["shards"]:
            note_reused(manifest, "shards", [e["file"] for e in manifest["shards"]])
        return state

    def shard_rows(self, index: int, lam: float | None, bar=None) -> tuple[list[dict], dict]:
        return self._shard_rows(self._prepared_shard(index), lam, bar or _NoBar())

    def _prepared_shard(self, index: int) -> list[Prepared]:
        """The shard's examples with their prompts, tokenized once (every λ and retry reuses them)."""
        if index not in self._prepared:
            self._prepared[index] = [self._prepare(e) for e in self.shard_examples[index]]
        return self._prepared[index]

    def record_shard(
        self,
        state: RunState,
        index: int,
        rows: list[dict],
        report: dict,
        seconds: float,
        written_by: dict | None = None,
    ) -> None:
        """Write one shard atomically, then list it in the manifest (entries in shard order)."""
        entry = shards.write_shard(state.shard_path(index), rows, self.config.row_group_size)
        entry |= {"examples": len(self.shard_examples[index]), "seconds": round(seconds, 3)} | report["counts"]
        if written_by:
            entry["written_by"] = written_by
        manifest = state.manifest
        manifest["shards"] = sorted(manifest["shards"] + [entry], key=lambda e: e["file"])
        manifest["skipped"] = sorted(manifest["skipped"] + report["skipped"], key=lambda s: s["id"])
        _accumulate(manifest["totals"], report["counts"], seconds)
        shards.save_manifest(state.run_dir, manifest)

    def finish_run(self, state: RunState) -> Path:
        manifest = state.manifest
        write_card(state.run_dir, manifest)  # before "complete": a run killed in between finishes both again
        manifest["complete"] = True
        shards.save_manifest(state.run_dir, manifest)
        totals = manifest["totals"]
        print(
            f"{state.run_dir}: {sum(s['rows'] for s in manifest['shards'])} rows, {totals['correct']} correct, "
            f"{totals['splits']} splits ({totals['recovered']} pairs recovered), "
            f"{totals['tokens_per_s']:.1f} target tokens/s"
        )
        return state.run_dir

    def _fresh_manifest(self, lam, digest: str, settings: dict) -> dict:
        return {
            "format": shards.FORMAT_VERSION,
            "config": to_dict(self.config) | {"lam": lam},
            "output_settings": settings,
            "config_hash": digest,
            "versions": versions(),
            "corpus": {"path": self.config.corpus, "sha256": self.corpus_sha256, "examples": len(self.examples)},
            "dtype": self.dtype,
            "tokenizer": type(self.tokenizer).__name__,
            "vocab_size": len(self.tokenizer),
            "max_model_len": self.max_model_len,
            "stop_token_ids": self.stop_ids,
            "shards": [],
            "skipped": [],
            "totals": {},
            "complete": False,
        }

    # ---- one shard --------------------------------------------------------------------------------------
    def _shard_rows(self, prepared: list[Prepared], lam: float | None, bar) -> tuple[list[dict], dict]:
        skipped = [
            {"id": p.example.id, "reason": _too_long(p, self.max_model_len)} for p in prepared if p.max_tokens <= 0
        ]
        usable = [p for p in prepared if p.max_tokens > 0]
        bar.update(len(prepared) - len(usable))
        if self.config.method == "sft":
            bar.update(len(usable))
            rows = [self._ground_truth_row(p, lam=None, attempts=0, finish="ground_truth") for p in usable]
            return rows, {"skipped": skipped, "counts": _counts(rows, 0, 0, 0)}
        return self._mixsd_rows(usable, lam, bar, skipped)

    def _mixsd_rows(self, usable: list[Prepared], lam: float, bar, skipped: list) -> tuple[list[dict], dict]:
        cfg = self.config
        # Retries change only the coins and draws; with λ in {0, 1} at temperature 0 they cannot change anything.
        retries = 0 if (cfg.temperature == 0 and lam in (0.0, 1.0)) else cfg.max_retries
        engine = self._get_engine()
        splits_before = _split_counts(engine)
        final: dict[int, dict] = {}
        pending = list(range(len(usable)))
        tokens = retried = 0
        for attempt in range(retries + 1):
            jobs = [self._job(usable[i], lam, attempt) for i in pending]
            results = engine.decode(jobs, on_done=_progress(bar) if attempt == 0 else None)
            still = []
            for i, result in zip(pending, results):
                if result.failure is not None:
                    skipped.append({"id": usable[i].example.id, "reason": result.failure})
                    continue
                tokens += len(result.tokens)
                row = self._mixsd_row(usable[i], lam, attempt, result)
                if row["correct"] or attempt == retries:
                    final[i] = row
                else:
                    still.append(i)
            retried += len(still)
            pending = still
        rows, dropped = [], 0
        for i in sorted(final):
            row = final[i]
            if not row["correct"] and cfg.on_failure == "drop":
                dropped += 1
                continue
            if not row["correct"] and cfg.on_failure == "ground_truth":
                row = self._ground_truth_row(usable[i], lam, attempts=row["attempts"], finish="ground_truth_fallback")
            rows.append(row)
        splits, recovered = (after - before for after, before in zip(_split_counts(engine), splits_before))
        counts = _counts(rows, tokens, retried, splits) | {"recovered": recovered, "dropped": dropped}
        return rows, {"skipped": skipped, "counts": counts}

    def _prepare(self, example: Example) -> Prepared:
        naive = prompts.naive_ids(self.tokenizer, example)
        expert = prompts.expert_ids(self.tokenizer, example, self.config.expert_template)
        room = self.max_model_len - max(len(naive), len(expert))  # both members stop at the same length
        return Prepared(example, naive, expert, min(self.config.max_new_tokens, room))

    def _job(self, p: Prepared, lam: float, sample: int) -> PairJob:
        cfg = self.config
        return PairJob(
            p.naive_ids,
            p.expert_ids,
            key=example_key(p.example.id),
            sample=sample,
            seed=cfg.seed,
            lam=lam,
            temperature=cfg.temperature,
            top_k=cfg.top_k,
            top_p=cfg.top_p,
            max_tokens=p.max_tokens,
        )

    def _mixsd_row(self, p: Prepared, lam: float, sample: int, result: PairResult) -> dict:
        text = self.tokenizer.decode(result.tokens, skip_special_tokens=True)
        source = sources(self.config.seed, example_key(p.example.id), sample, lam, len(result.tokens))
        expert_lp, naive_lp = (result.expert_logprobs, result.naive_logprobs) if self.config.logprobs else (None, None)
        return self._row(
            p,
            lam,
            sample,
            result.tokens,
            text,
            source,
            expert_lp,
            naive_lp,
            correct=is_correct(text, p.example.clear_answer, self.config.answer_rule),
            attempts=sample + 1,
            finish=result.finish_reason,
        )

    def _ground_truth_row(self, p: Prepared, lam, attempts: int, finish: str) -> dict:
        room = self.max_model_len - len(p.naive_ids)  # training sees the naive prompt; max_new_tokens is for sampling
        ids = list(self.tokenizer(p.example.answer, add_special_tokens=False)["input_ids"])[:room]
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return self._row(
            p,
            lam,
            0,
            ids,
            text,
            [Source.GROUND_TRUTH] * len(ids),
            None,
            None,
            correct=is_correct(text, p.example.clear_answer, self.config.answer_rule),
            attempts=attempts,
            finish=finish,
        )

    def _row(self, p, lam, sample, ids, text, source, expert_lp, naive_lp, correct, attempts, finish) -> dict:
        cfg = self.config
        return {
            "example_id": p.example.id,
            "sample_index": sample,
            "split": p.example.split,
            "method": cfg.method,
            "lambda": lam,
            "temperature": cfg.temperature if cfg.method == "mixsd" else None,
            "seed": cfg.seed,
            "prompt_ids": p.naive_ids,
            "expert_prompt_ids": p.expert_ids,
            "target_ids": list(ids),
            "target_text": text,
            "source": source,
            "expert_logprobs": expert_lp,
            "naive_logprobs": naive_lp,
            "expert_token_fraction": (sum(1 for s in source if s == Source.EXPERT) / len(source)) if source else 0.0,
            "correct": correct,
            "attempts": attempts,
            "finish_reason": finish,
        }

    def _get_engine(self):
        if self._engine is None:
            cfg = self.config
            if cfg.backend == "hf":
                from generate.hf_engine import HFPairedEngine

                self._engine = HFPairedEngine(cfg.model, self.stop_ids, dtype=self.dtype, batch_pairs=cfg.batch_pairs)
            else:
                self._engine = self._vllm_engine()
        return self._engine

    def _vllm_engine(self):
        from generate.vllm_engine import EngineSettings, VLLMPairedEngine

        cfg = self.config
        kv_plan = self.kv_cache_plan()
        runs = len(cfg.lam) if cfg.method == "mixsd" else 1
        eager = resolve_eager(cfg.enforce_eager, runs * (cfg.max_retries + 1) * len(self.examples) * cfg.max_new_tokens)
        print(engine_line(kv_plan, eager, cfg.enforce_eager), flush=True)
        settings = EngineSettings(
            # As many whole pairs as the cache holds at full length: the scheduler never has to preempt one.
            model=cfg.model,
            dtype=self.dtype,
            max_model_len=kv_plan.max_len,
            max_num_seqs=max(2, kv_plan.max_seqs - kv_plan.max_seqs % 2),
            gpu_memory_utilization=cfg.gpu_memory_utilization,
            kv_cache_bytes=kv_plan.bytes,
            num_gpu_blocks_override=cfg.num_gpu_blocks_override,
            tensor_parallel_size=cfg.tensor_parallel_size,
            enforce_eager=eager,
            logprobs=cfg.logprobs,
            max_splits=cfg.max_splits,
            allow_untested_vllm=cfg.allow_untested_vllm,
            seed=cfg.seed,
        )
        start = time.perf_counter()
        try:
            engine = VLLMPairedEngine(settings, self.stop_ids)
        except (ValueError, RuntimeError) as err:
            explained = explain_memory_error(err, kv_plan)
            if explained is None:
                raise
            raise explained from err
        print(f"vLLM engine started in {time.perf_counter() - start:.1f} s", flush=True)
        return engine

    def kv_cache_plan(self) -> KVCachePlan:
        """The engine's KV cache: what the job can have in flight (both members of every pair, prompt + new
        tokens), unless --kv_cache_gib says otherwise."""
        lengths = [
            len(ids) + p.max_tokens
            for index in range(len(self.shard_examples))
            for p in self._prepared_shard(index)
            if p.max_tokens > 0
            for ids in (p.expert_ids, p.naive_ids)
        ]
        return plan_kv_cache(
            self.config.model, self.dtype, lengths, self.config.max_num_seqs, self.config.kv_cache_gib, on_gpu=_on_gpu()
        )


def _on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def note_reused(manifest: dict, kind: str, names: list) -> None:
    """Add `names` to the manifest's `reused.<kind>` list (shards from an earlier invocation, engines that had
    served another λ), kept sorted and without repeats."""
    reused = manifest.setdefault("reused", {})
    reused[kind] = sorted(set(reused.get(kind, [])) | set(names))


def _progress(bar):
    """A decode callback that advances the bar and shows target tokens/s, timed from the first finished pair
    so that engine warm-up (compilation on a first run) does not read as slow decoding."""
    first, tokens = [None], [0]

    def done(_index: int, result: PairResult) -> None:
        now = time.perf_counter()
        if first[0] is None:
            first[0] = now
        else:
            tokens[0] += len(result.tokens)
            bar.set_postfix_str(f"{tokens[0] / max(now - first[0], 1e-9):.0f} tok/s", refresh=False)
        bar.update(1)

    return done


def _too_long(p: Prepared, limit: int) -> str:
    return (
        f"prompt of {max(len(p.naive_ids), len(p.expert_ids))} tokens leaves no room to generate "
        f"within max_model_len {limit}"
    )


def _split_counts(engine) -> tuple[int, int]:
    """(split events, pairs recovered) so far; the reference backend never splits a pair."""
    stats = getattr(engine, "stats", None)
    return (stats.splits, stats.recovered) if stats is not None else (0, 0)


def _counts(rows: list[dict], tokens: int, retried: int, splits: int) -> dict:
    return {
        "rows": len(rows),
        "correct": sum(r["correct"] for r in rows),
        "generated_tokens": tokens,
        "retried": retried,
        "splits": splits,
    }


def _accumulate(totals: dict, counts: dict, seconds: float) -> None:
    for key in ("correct", "generated_tokens", "retried", "splits", "recovered", "dropped"):
        totals[key] = totals.get(key, 0) + counts.get(key, 0)
    totals["seconds"] = round(totals.get("seconds", 0.0) + seconds, 3)
    totals["tokens_per_s"] = totals["generated_tokens"] / totals["seconds"] if totals["seconds"] else 0.0

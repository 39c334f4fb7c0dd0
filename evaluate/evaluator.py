"""Scoring one model after another against the same base model, corpus and probes.

The base model's side (its answers, which general-knowledge questions it gets right, its drift reference and
its diagonal Fisher) is computed once; `evaluate(path)` then costs one generation pass and a few forward passes.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from corpora.schema import load_jsonl
from evaluate import drift, fisher, intervals, scoring
from evaluate.backends import BackendSettings, make_backend, pick_backend
from evaluate.benchmarks import load_benchmark, parse_spec
from evaluate.config import CORPUS_SPLITS, HELD_OUT_SPLITS, IN_DISTRIBUTION_PROBES, SPLITS, EvalConfig
from evaluate.phases import PhaseClock
from evaluate.probes import DRIFT_PROMPTS, PROBE_TASKS, Item, probe_items
from evaluate.retention import averaged_probes, headline_average
from mixsd.checkpoints import has_weights
from mixsd.checksums import PRUNED_FINGERPRINT_FILE
from mixsd.engine_memory import engine_line, model_context_length, plan_kv_cache, resolve_eager
from mixsd.errors import UserError
from mixsd.models import declared_dtype, load_tokenizer
from mixsd.precision import resolve_dtype
from mixsd.prompts import chat_ids, stop_token_ids

RETRIEVAL_INSTRUCTION = "Read the facts below and answer the question."


class EvalError(UserError, ValueError):
    pass


@dataclass
class Reply:
    item: Item
    text: str
    correct: bool


def check_model(path: str) -> None:
    """A local path must be a model directory (config + weights); anything else is taken as a hub id."""
    directory = Path(path)
    if not directory.exists():
        if path.count("/") == 1 and not path.startswith((".", "/")):
            return  # a hub id: transformers resolves it
        raise EvalError(f"{path}: no such model directory")
    if not (directory / "config.json").is_file():
        raise EvalError(f"{path}: not a model directory (no config.json)")
    if (directory / PRUNED_FINGERPRINT_FILE).is_file() and not has_weights(directory):
        raise EvalError(
            f"{path}: its weights were deleted after it was scored ({PRUNED_FINGERPRINT_FILE}); scoring it with "
            "other settings needs the run trained again"
        )
    if not has_weights(directory):
        raise EvalError(f"{path}: not a model directory (no *.safetensors or *.bin weights)")
    try:
        json.loads((directory / "config.json").read_text())
    except json.JSONDecodeError as err:
        raise EvalError(f"{path}/config.json: invalid JSON ({err.msg}, line {err.lineno})") from None


def corpus_splits(corpus: str, asked: list[str]) -> list[str]:
    """The splits to score: those asked for; else all of a KGFact or KGFunc corpus (named by the generator in
    its stats.json, so a missing file is an error, not a smaller evaluation); else every known split file the
    directory has (a converted corpus)."""
    if asked:
        return list(asked)
    stats = Path(corpus) / "stats.json"
    generator = json.loads(stats.read_text()).get("generator", "") if stats.is_file() else ""
    kind = generator.split("-")[0]
    if kind in CORPUS_SPLITS:
        return list(CORPUS_SPLITS[kind])
    present = [s for s in SPLITS if (Path(corpus) / f"{s}.jsonl").is_file()]
    if not present:
        raise EvalError(f"{corpus}: no corpus split files ({', '.join(f'{s}.jsonl' for s in SPLITS)})")
    return present


def corpus_items(corpus: str, splits: list[str], limit: int) -> list[Item]:
    items = []
    for split in splits:
        path = Path(corpus) / f"{split}.jsonl"
        if not path.is_file():
            raise EvalError(f"{path}: corpus split '{split}' is missing")
        examples = load_jsonl(path)[: limit or None]
        for e in examples:
            prompt = (
                e.question if e.context is None else f"{RETRIEVAL_INSTRUCTION}\n\n{e.context}\n\nQuestion: {e.question}"
            )
            items.append(Item(e.id, split, prompt, (e.clear_answer,), "auto"))
    return items


def corpus_entities(corpus: str) -> set[str]:
    """Every invented name of the knowledge base (world.json), or the train split's subjects and answers."""
    world = Path(corpus) / "world.json"
    if world.is_file():
        return {name for names in json.loads(world.read_text())["entities"].values() for name in names}
    train = Path(corpus) / "train.jsonl"
    if not train.is_file():
        return set()
    return {x for e in load_jsonl(train) for x in (e.subject, e.clear_answer) if x}


class Evaluator:
    def __init__(self, config: EvalConfig, models: int = 1):
        """`models`: how many models this evaluator will score (a sweep's count), for `--enforce_eager auto`."""
        from transformers import AutoModelForCausalLM

        self.config = config
        check_model(config.base)
        self.entities = corpus_entities(config.corpus)
        self.splits = corpus_splits(config.corpus, config.splits)
        self.knowledge_splits = [s for s in self.splits if s not in HELD_OUT_SPLITS]
        self.items = corpus_items(config.corpus, self.splits, config.split_limit)
        if config.probes:
            self.items += probe_items(
                config.seed,
                self.entities,
                config.in_context_probes,
                config.arithmetic_probes,
                config.general_knowledge_probes,
            )
            for name, source in parse_spec(config.benchmarks).items():
                self.items += load_benchmark(name, source, config.benchmark_limit)
        self.tokenizer = load_tokenizer(config.base, "--base")
        self.max_model_len = config.max_model_len or model_context_length(config.base)
        self.dtype = resolve_dtype(config.dtype, declared_dtype(config.base))  # auto: float32 where bf16 is slow
        self.items, self.prompts, self.too_long = self._fitting(
            [chat_ids(self.tokenizer, i.prompt) for i in self.items]
        )
        self.clock = PhaseClock(config.progress)
        self.backend_name = pick_backend(config.backend)
        self.backend = make_backend(
            self.backend_name, config.base, stop_token_ids(self.tokenizer, config.base), self._backend_settings(models)
        )
        self.base_replies = self._replies("base model's answers")
        self.kept_general = {r.item.id for r in self.base_replies if r.item.task == "general_knowledge" and r.correct}
        self.fisher = None
        if not config.probes:  # the corpus splits alone: nothing below is needed
            self.base_seconds = self.clock.take()
            return
        self.base_model = AutoModelForCausalLM.from_pretrained(config.base, dtype=torch.float32).eval()
        self.base_state = {k: v.detach().clone() for k, v in self.base_model.state_dict().items()}
        with self.clock.phase("drift reference", len(DRIFT_PROMPTS)):
            self.drift_reference = self._drift_reference()
        if config.fisher_examples:
            with self.clock.phase("Fisher diagonal", config.fisher_examples):
                self.fisher = self._fisher()
        self.base_seconds = self.clock.take()  # the base model's side: once per evaluator (a sweep's every model)

    def close(self) -> None:
        """Releases the generation backend (a vLLM engine: see VLLMGreedy.close)."""
        self.backend.close()

    def _fitting(self, prompts: list[list[int]]) -> tuple[list[Item], list[list[int]], dict[str, int]]:
        """The items whose prompt and answer budget fit the model; the others are counted per task, not scored."""
        items, kept, too_long = [], [], {}
        for item, prompt in zip(self.items, prompts):
            if len(prompt) + self.budget(item) > self.max_model_len:
                too_long[item.task] = too_long.get(item.task, 0) + 1
            else:
                items.append(item)
                kept.append(prompt)
        for task, count in too_long.items():
            print(
                f"evaluate: {count} {task} items skipped: prompt + their answer budget of new tokens exceed "
                f"max_model_len {self.max_model_len}",
                flush=True,
            )
        return items, kept, too_long

    def _backend_settings(self, models: int) -> BackendSettings:
        config = self.config
        settings = BackendSettings(self.dtype, config.batch_size, self.max_model_len)
        if self.backend_name != "vllm":
            return settings
        budgets = [self.budget(item) for item in self.items]
        lengths = [len(p) + b for p, b in zip(self.prompts, budgets)]
        lengths += [len(chat_ids(self.tokenizer, p)) + config.drift_tokens for p in DRIFT_PROMPTS]
        plan = plan_kv_cache(
            config.base, self.dtype, lengths, config.max_num_seqs, config.kv_cache_gib, on_gpu=torch.cuda.is_available()
        )
        # Tokens to generate: the base model and every scored model answer every item.
        eager = resolve_eager(config.enforce_eager, (models + 1) * sum(budgets))
        print(engine_line(plan, eager, config.enforce_eager), flush=True)
        settings.max_model_len, settings.max_num_seqs, settings.kv_cache_bytes = plan.max_len, plan.max_seqs, plan.bytes
        settings.gpu_memory_utilization, settings.enforce_eager = config.gpu_memory_utilization, eager
        return settings

    def budget(self, item: Item) -> int:
        """New tokens an item's answer may take: the probes' own budget, or the corpus's."""
        return self.config.probe_budget if item.task in PROBE_TASKS else self.config.max_new_tokens

    # --- replies of the model the backend holds (the base model's, then each evaluated model's) ---------
    def _replies(self, phase: str, scored: list[int] | None = None) -> list[Reply]:
        """The current model's replies to the items at `scored` (all items when None)."""
        scored = list(range(len(self.items))) if scored is None else scored
        items, prompts = [self.items[i] for i in scored], [self.prompts[i] for i in scored]
        tasks: dict[str, int] = {}
        for item in items:
            tasks[item.task] = tasks.get(item.task, 0) + 1
        with self.clock.phase(phase, len(prompts), ", ".join(f"{t} {n}" for t, n in tasks.items())):
            completions = [[] for _ in items]
            # One generation per answer budget (corpus splits, probes): few, so batches stay large.
            for budget in sorted({self.budget(item) for item in items}):
                rows = [k for k, item in enumerate(items) if self.budget(item) == budget]
                outputs = self.backend.generate(
                    [prompts[k] for k in rows], budget, self.clock.batches(phase) if self.config.progress else None
                )
                for k, output in zip(rows, outputs):
                    completions[k] = output
        texts = self.tokenizer.batch_decode(completions, skip_special_tokens=True)
        return [
            Reply(item, text, scoring.item_correct(text, item.answers, item.rule)) for item, text in zip(items, texts)
        ]

    # --- the base model's side, once ---------------------------------------------------------------------
    def _drift_reference(self) -> drift.DriftReference:
        prompts = [chat_ids(self.tokenizer, p) for p in DRIFT_PROMPTS]
        continuations = self.backend.generate(prompts, self.config.drift_tokens)
        return drift.reference(self.base_model, prompts, continuations)

    def _fisher(self) -> dict[str, torch.Tensor]:
        capability = [
            i for i in self.items if i.task not in self.knowledge_splits and i.task not in IN_DISTRIBUTION_PROBES
        ]
        probes = stratified(capability, self.config.fisher_examples)
        examples = [
            (
                chat_ids(self.tokenizer, i.prompt),
                self.tokenizer(f"The answer is {i.answers[0]}.", add_special_tokens=False)["input_ids"],
            )
            for i in probes
        ]
        return fisher.diagonal_fisher(self.base_model, examples)

    # --- one model ---------------------------------------------------------------------------------------
    def evaluate(self, model: str, splits: list[str] | None = None) -> tuple[dict, list[dict]]:
        """(metrics, one record per item). `splits`: the corpus splits to score (None: all; the probes are
        always scored). The base model itself may be passed: its answers are the ones already computed (greedy
        decoding of the same weights), so its retention is 1 at no cost."""
        from transformers import AutoModelForCausalLM

        check_model(model)
        start = time.perf_counter()
        scored = [
            i
            for i, item in enumerate(self.items)
            if splits is None or item.task not in self.knowledge_splits or item.task in splits  # probes: always
        ]
        if Path(model).resolve() == Path(self.config.base).resolve():
            replies = [self.base_replies[i] for i in scored]
        else:
            with self.clock.phase("load weights", 1):
                self.backend.load(model)
            replies = self._replies("answers", scored)
        drift_metrics, movement = None, None
        if self.config.probes:
            tuned = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
            with self.clock.phase("drift", len(DRIFT_PROMPTS)):
                drift_metrics = drift.measure(tuned, self.drift_reference)
            if self.fisher:
                with self.clock.phase("Fisher movement", 1):
                    movement = fisher.movement(self.fisher, self.base_state, tuned.state_dict())
            del tuned
        with self.clock.phase("scoring and intervals", len(replies)):
            records = [self._record(r) for r in replies]
            metrics = self._metrics(replies, drift_metrics, movement) | {"error_modes": _error_modes(records)}
        metrics["seconds"] = round(time.perf_counter() - start, 1)
        # Seconds per phase: this model's, and the base model's side (computed once per evaluator).
        metrics["timing"] = {"model": self.clock.take(), "base_once": self.base_seconds}
        return metrics, records

    def _metrics(self, replies: list[Reply], drift_metrics: dict | None, movement: dict | None) -> dict:
        """Accuracy per corpus split; with probes, retention per probe, drift and their average."""
        by_task = _group(replies, self.kept_general)
        base_by_task = _group(self.base_replies, self.kept_general)
        accuracy = {t: _mean(by_task[t]) for t in self.knowledge_splits if t in by_task}
        accuracy_detail = {
            t: {
                "correct": sum(by_task[t]),
                "n": len(by_task[t]),
                "interval": intervals.wilson(sum(by_task[t]), len(by_task[t])),
            }
            for t in accuracy
        }
        knowledge = {
            "accuracy": accuracy,
            "accuracy_detail": accuracy_detail,
            "skipped_too_long": self.too_long,
            "backend": self.backend_name,
            "dtype": self.dtype,
        }
        if drift_metrics is None:
            return knowledge | {
                "held_out": {},
                "drift": None,
                "retention": {"average": None},
                "retention_average": None,
                "fisher_movement": None,
            }
        probes = {t: (by_task[t], base_by_task[t]) for t in by_task if t not in self.knowledge_splits}
        held_out = {}
        for task, (tuned, base) in probes.items():
            score, base_score = _mean(tuned), _mean(base)
            held_out[task] = {
                "score": score,
                "base_score": base_score,
                "n": len(tuned),
                "interval": intervals.wilson(sum(tuned), len(tuned)),
                "base_interval": intervals.wilson(sum(base), len(base)),
                "retention": score / base_score if base_score else None,
                "in_distribution": task in IN_DISTRIBUTION_PROBES,
            }
        # The headline average: held-out capability only, from probes large enough to bound a ratio (see
        # evaluate/retention.py). An in-distribution probe (the training question format) says how the taught
        # format generalizes, not what was kept, so it is reported on its own.
        averaged = averaged_probes(held_out)
        spread = intervals.retention_intervals(probes, drift_metrics.get("per_prompt", []), averaged)
        for task in held_out:
            held_out[task]["retention_interval"] = spread[task]
        retention = {t: v["retention"] for t, v in held_out.items() if v["retention"] is not None}
        retention["drift"] = drift_metrics["greedy_agreement"]
        counted = [t for t in averaged if t in retention]  # a probe the base model scored 0 on has no ratio
        average = headline_average({"held_out": held_out, "retention": retention, "drift": drift_metrics})
        return knowledge | {
            "held_out": held_out,
            "drift": drift_metrics,
            "retention": retention | {"average": average},
            "retention_average": {"probes": counted, "interval": spread["average"], "drift_interval": spread["drift"]},
            "fisher_movement": movement,
        }

    def _record(self, r: Reply) -> dict:
        """One item's outcome; a wrong held-out answer (probes, benchmarks) also gets its error mode."""
        record = {"id": r.item.id, "task": r.item.task, "reply": r.text, "correct": r.correct}
        if r.item.task not in self.knowledge_splits and not r.correct and _counted(r.item, self.kept_general):
            record["error_mode"] = scoring.error_mode(r.text, r.item.prompt, r.item.answers, r.item.rule, self.entities)
        return record


def _error_modes(records: list[dict]) -> dict[str, dict[str, int]]:
    modes: dict[str, dict[str, int]] = {}
    for record in records:
        if "error_mode" in record:
            modes.setdefault(record["task"], dict.fromkeys(scoring.ERROR_MODES, 0))[record["error_mode"]] += 1
    return modes


def _counted(item: Item, kept_general: set[str]) -> bool:
    """General-knowledge questions count only where the base model answers them correctly."""
    return item.task != "general_knowledge" or item.id in kept_general


def stratified(items: list[Item], count: int) -> list[Item]:
    """`count` items taken in turn from each task (first-seen task order, each task's own order), so every
    capability probe weighs equally in the Fisher diagonal, whatever its size."""
    by_task: dict[str, list[Item]] = {}
    for item in items:
        by_task.setdefault(item.task, []).append(item)
    queues = list(by_task.values())
    picked: list[Item] = []
    for rank in range(max(map(len, queues), default=0)):
        picked += [queue[rank] for queue in queues if rank < len(queue)]
    return picked[:count]


def _group(replies: list[Reply], kept_general: set[str]) -> dict[str, list[bool]]:
    grouped: dict[str, list[bool]] = {}
    for r in replies:
        if _counted(r.item, kept_general):
            grouped.setdefault(r.item.task, []).append(r.correct)
    return grouped


def _mean(values: list[bool]) -> float:
    return sum(values) / len(values) if values else 0.0

"""`python -m reproduce` end to end on the tiny model: corpus, targets per seed, the learning-rate
rule on the train split alone, every seed trained and every checkpoint evaluated, the summary over seeds;
and a second run that redoes nothing."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from evaluate.evaluator import EvalError, check_model
from mixsd.checkpoints import STATE_FILE, checkpoints, has_weights
from mixsd.checksums import PRUNED_FINGERPRINT_FILE
from mixsd.config import ConfigError
from mixsd.run_format import expand_run_dirs, read_rows
from reproduce.pipeline import ReproduceConfig, main_command, parse_method
from reproduce.summary import difference_interval, verified_by_attempt
from reproduce.summary import main_command as summary_command

SWEEPS = ("eval-train-split", "eval")
CONFIG = """
model: {model}
reproduce:
  out: {out}/runs
  report: {out}/report
  corpora: [kgfact]
  methods: [sft, opsd, mixsd-0.5]
  seeds: [0, 1]
  lr_grid: [1.0e-3, 3.0e-3]
kgfact: {{size: small, distractors: 3}}
generate: {{backend: hf, dtype: float32, max_new_tokens: 6, temperature: 1.0, progress: false}}
train:
  {{max_steps: 2, save_every: 1, keep_last: 10, batch_size: 8, micro_batch_size: 8, dtype: float32,
   include_unverified: true, rollouts: 2, rollout_max_new_tokens: 4, progress: false, warmup_steps: 0}}
evaluate:
  {{backend: hf, dtype: float32, max_new_tokens: 4, split_limit: 4, in_context_probes: 4, arithmetic_probes: 4,
   general_knowledge_probes: 4, fisher_examples: 4, drift_tokens: 4, progress: false}}
"""


def _record_engines(monkeypatch) -> list[str]:
    """The order in which generation engines start and evaluators open and close."""
    from evaluate.evaluator import Evaluator
    from generate.runner import Generator

    events, get_engine, open_, close = [], Generator._get_engine, Evaluator.__init__, Evaluator.close

    def recorded(name, method):
        def wrapper(self, *args, **kwargs):
            if name != "generate" or self._engine is None:
                events.append(name)
            return method(self, *args, **kwargs)

        return wrapper

    monkeypatch.setattr(Generator, "_get_engine", recorded("generate", get_engine))
    monkeypatch.setattr(Evaluator, "__init__", recorded("open", open_))
    monkeypatch.setattr(Evaluator, "close", recorded("close", close))
    return events


def test_reproduction_chooses_rates_blind_to_retention_and_summarizes_over_seeds(tiny_model_dir, tmp_path, monkeypatch):
    config = tmp_path / "reproduce.yaml"
    config.write_text(CONFIG.format(model=tiny_model_dir, out=tmp_path))
    engines = _record_engines(monkeypatch)
    main_command(config=str(config))
    # One engine at a time (evaluate.backends.VLLMGreedy.close): every target is generated before the first
    # evaluator opens (MixSD: one engine per seed), and each evaluator is closed before the next opens: two per
    # rate candidate (the train split, then every probe), one for the other seeds' runs.
    assert engines == ["generate"] * 2 + ["open", "close"] * (3 * 2 * 2 + 1)
    root = tmp_path / "runs" / "kgfact"
    choices = json.loads((root / "lr.json").read_text())
    assert set(choices) == {"sft", "opsd", "mixsd-0.5"}
    for method, choice in choices.items():
        best = {float(lr): score for lr, score in choice["best_train_accuracy"].items()}
        top = max(best.values())
        assert choice["chosen"] == min(lr for lr, score in best.items() if score >= top - 0.02)
        for seed in (0, 1):
            run = root / "train" / f"{method}-lr{choice['chosen']:g}-seed{seed}"
            assert [c.name for c in checkpoints(run)] == ["step-000001", "step-000002"]
            for step in checkpoints(run):  # every checkpoint, every probe
                metrics = json.loads((root / "eval" / run.name / step.name / "metrics.json").read_text())["metrics"]
                assert metrics["retention"]["average"] is not None and "arithmetic" in metrics["held_out"]
    _assert_pruned(root, choices)
    # The rate was chosen on the train split alone: that sweep scored no probe.
    train_split = json.loads(next((root / "eval-train-split").glob("*/step-*/metrics.json")).read_text())["metrics"]
    assert set(train_split["accuracy"]) == {"train"} and train_split["held_out"] == {}
    # MixSD's targets were generated per seed (its coins derive from it); SFT's once.
    assert (
        len(list((root / "generate").glob("mixsd-lam0.5-*"))) == 2 and len(list((root / "generate").glob("sft-*"))) == 1
    )
    summary = json.loads((tmp_path / "report" / "results.json").read_text())
    sft = summary["corpora"]["kgfact"]["methods"]["sft"]
    assert sft["seeds"] == 2 and sft["acc train"]["n"] == 2 and len(sft["acc train"]["interval"]) == 2
    assert summary["settings"]["seeds"] == [0, 1] and "packages" in summary["versions"]
    text = (tmp_path / "report" / "results.md").read_text()
    assert "## KGFact" in text and "| mixsd-0.5 |" in text and " ± " in text
    assert re.search(r"\| sft \| [0-9.e-]+ \| 2 \| 2/2 \|", text)  # seeds and each seed's final step
    assert all((tmp_path / "report" / f"kgfact-{name}.png").stat().st_size > 0 for name in ("tradeoff", "fisher"))
    assert re.search(r"Base model \(correct / n, Wilson 95%\): .*train \d+/4 \[.*arithmetic \d+/\d+ \[", text)
    # Retention against SFT at each step: one row per other method and checkpoint, from the same results.
    against = summary["corpora"]["kgfact"]["against sft"]
    assert [(row["method"], row["steps"]) for row in against] == [
        (m, [s]) for m in ("opsd", "mixsd-0.5") for s in (1, 2)
    ]
    assert against[0]["difference"]["n"] == [2, 2] and "| opsd | 2 |" in text
    # MixSD's ceiling: verified targets by attempt, the last count being all the verified rows of its shards.
    verified = summary["corpora"]["kgfact"]["verified by attempt"]
    assert sorted(verified) == [f"mixsd-0.5-lr{choices['mixsd-0.5']['chosen']:g}-seed{s}" for s in (0, 1)]
    for name, entry in verified.items():
        shards = json.loads((root / "train" / name / "train_config.json").read_text())["config"]["shards"]
        rows = [row for shard in expand_run_dirs(shards) for row in read_rows(shard)]
        counts = entry["verified after attempts"]
        assert counts == sorted(counts) and counts[-1] == sum(r["correct"] for r in rows) and f"{name}: " in text
    # Between parts of a long run: what is scored so far, the rest named; a run still training (seed 2: before
    # its first checkpoint, then with its first scored and its last not yet written) is not in the table.
    done, running = (root / "train" / f"sft-lr{choices['sft']['chosen']:g}-seed{seed}" for seed in (1, 2))
    report = tmp_path / "partial"

    def assert_seed_2_pending(stage: str) -> None:
        summary_command(config=str(config), seeds="0,1,2", methods="sft,mixsd-0.3", report=str(report))
        partial = json.loads((report / "results.json").read_text())["corpora"]["kgfact"]
        assert partial["pending"] == ["sft seed 2", "mixsd-0.3 (learning rate not chosen yet)"], stage
        assert partial["methods"]["sft"]["seeds"] == 2 and "sft seed 2" in (report / "results.md").read_text(), stage

    running.mkdir()
    shutil.copy(done / "train_config.json", running / "train_config.json")
    assert_seed_2_pending("started")
    shutil.copytree(done / "step-000001", running / "step-000001")
    shutil.copytree(root / "eval" / done.name / "step-000001", root / "eval" / running.name / "step-000001")
    assert_seed_2_pending("first checkpoint scored")
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and p.suffix in (".json", ".parquet")}
    # Everything is reused: no target, checkpoint or result is rewritten; a part with fewer methods keeps the
    # other methods' rate choices.
    main_command(config=str(config), methods="sft")
    main_command(config=str(config))
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def _assert_pruned(root: Path, choices: dict) -> None:
    """Scored weights no longer needed are gone, their results kept: unchosen candidates entirely, final runs
    all but their last checkpoint's weights; no resume state anywhere. Every candidate was scored with every
    probe before its weights went."""
    for method, choice in choices.items():
        for lr in choice["best_train_accuracy"]:
            run = root / "train" / f"{method}-lr{lr}-seed0"
            final = float(lr) == choice["chosen"]
            for step in checkpoints(run):
                last = step == checkpoints(run)[-1]
                assert has_weights(step) == (final and last) and not (step / STATE_FILE).exists()
                assert (step / PRUNED_FINGERPRINT_FILE).is_file() == (not (final and last))
                assert all((root / sweep / run.name / step.name / "metrics.json").is_file() for sweep in SWEEPS)
    pruned = next(root.glob("train/*/step-000001"))
    with pytest.raises(EvalError, match="weights were deleted after it was scored"):
        check_model(str(pruned))


def test_reproduction_on_kgfunc_uses_its_overrides_and_reports_unseen_operations(tiny_model_dir, tmp_path):
    """KGFunc through every stage: its own answer budget for targets and items (`kgfunc_overrides`), the
    probes' own budget, and the unseen-operations retention probe in the report."""
    config = tmp_path / "reproduce.yaml"
    text = CONFIG.format(model=tiny_model_dir, out=tmp_path).replace("corpora: [kgfact]", "corpora: [kgfunc]")
    text = text.replace("methods: [sft, opsd, mixsd-0.5]", "methods: [sft, mixsd-0.5]")
    text += """kgfunc: {train_per_op: 1, test_per_op: 1, compositional: 2, unseen_per_op: 1, shots: 2}
kgfunc_overrides:
  generate: {max_new_tokens: 8}
  evaluate: {max_new_tokens: 8, probe_max_new_tokens: 3}
"""
    config.write_text(text)
    main_command(config=str(config), seeds="0", lr_grid="1e-3")
    root = tmp_path / "runs" / "kgfunc"
    assert not (root / "lr.json").exists()  # one rate: nothing to choose
    result = json.loads((root / "eval" / "sft-lr0.001-seed0" / "step-000002" / "metrics.json").read_text())
    assert (result["config"]["max_new_tokens"], result["config"]["probe_max_new_tokens"]) == (8, 3)
    assert set(result["metrics"]["accuracy"]) == {"train", "test", "compositional"}
    assert result["metrics"]["held_out"]["unseen"]["n"] > 0
    manifest = json.loads(next((root / "generate").glob("mixsd-*/manifest.json")).read_text())
    assert manifest["output_settings"]["max_new_tokens"] == 8
    report = (tmp_path / "report" / "results.md").read_text()
    assert "## KGFunc" in report and "score unseen" in report and "| mixsd-0.5 |" in report


def test_verified_by_attempt_counts_verified_rows_cumulatively():
    rows = [{"attempts": 1, "correct": True}, {"attempts": 3, "correct": True}, {"attempts": 3, "correct": False}]
    assert verified_by_attempt(rows) == [1, 1, 2]


def test_difference_interval_is_welch_with_conservative_degrees_of_freedom():
    values, reference = [0.7, 0.8, 0.9], [0.5, 0.6]
    error = (0.01 / 3 + 0.005 / 2) ** 0.5  # sample variances 0.01 and 0.005
    result = difference_interval(values, reference)
    assert result["mean"] == pytest.approx(0.25) and result["n"] == [3, 2]
    assert result["interval"] == pytest.approx([0.25 - 12.706 * error, 0.25 + 12.706 * error])  # t at 1 df
    assert difference_interval([0.7], reference) is None


def test_reproduce_settings_are_checked():
    assert parse_method("mixsd-0.3") == ("mixsd", 0.3) and parse_method("opsd") == ("opsd", None)
    with pytest.raises(ConfigError, match="is not sft, opsd or mixsd-λ"):
        ReproduceConfig(methods=["mixsd-1.5"])
    with pytest.raises(ConfigError, match="unknown"):
        ReproduceConfig(corpora=["squad"])
    assert Path("configs/reproduce.yaml").is_file()

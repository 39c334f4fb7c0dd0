"""Evaluation on the tiny model: the analyses against direct computations, the evaluator end to end, the
sweep and report over a real training run, and bad input."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace

import pyarrow.parquet as pq
import pytest
import torch

from evaluate import drift, fisher, retention, scoring
from evaluate.config import EvalConfig
from evaluate.evaluator import EvalError, Evaluator
from evaluate.nll import target_nll
from evaluate.probes import general_knowledge_items
from generate.config import GenerateConfig
from generate.runner import Generator
from mixsd.config import ConfigError
from mixsd.errors import UserError
from tests import processes
from tests.generate_helpers import run_main_in_process
from train.config import TrainConfig
from train.trainer import train

SMALL = dict(
    split_limit=6,
    in_context_probes=4,
    arithmetic_probes=6,
    general_knowledge_probes=5,
    fisher_examples=8,
    max_new_tokens=12,
    drift_tokens=8,
    backend="hf",
    dtype="float32",
    progress=False,
)


def _model(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def perturbed_dir(tiny_model_dir, tmp_path_factory):
    """A 'tuned' model: the tiny model with its last block's MLP moved."""
    from transformers import AutoTokenizer

    model = _model(tiny_model_dir)
    with torch.no_grad():
        generator = torch.Generator().manual_seed(0)
        for p in model.model.layers[-1].mlp.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    out = tmp_path_factory.mktemp("perturbed")
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


def test_target_nll_is_padding_invariant(tiny_model_dir):
    model = _model(tiny_model_dir)
    pairs = [([5, 6, 7, 8, 9], [10, 11]), ([5, 6], [12, 13, 14, 15]), ([3], [4])]
    batched = target_nll(model, pairs, batch_size=3)
    for (prompt, target), got in zip(pairs, batched):
        with torch.no_grad():
            logprobs = torch.log_softmax(model(torch.tensor([prompt + target])).logits[0].float(), -1)
        expected = [-float(logprobs[len(prompt) - 1 + t, token]) for t, token in enumerate(target)]
        assert got == pytest.approx(expected, abs=1e-4)


def test_target_nll_matches_the_generators_naive_logprobs(tiny_model_dir, kgfact_small, tmp_path):
    """The shards' naive logprobs are log p(target token | naive prompt, mixed prefix): exactly what the
    NLL analysis computes for MixSD targets, from another code path (the generator's reference backend)."""
    config = GenerateConfig(
        model=str(tiny_model_dir),
        corpus=str(kgfact_small / "train.jsonl"),
        out=str(tmp_path),
        lam=[0.5],
        max_new_tokens=10,
        backend="hf",
        dtype="float32",
        progress=False,
    )
    (run,) = Generator(config).run_all()
    rows = pq.read_table(run / "train-00000.parquet").to_pylist()[:12]
    nll = target_nll(_model(tiny_model_dir), [(r["prompt_ids"], r["target_ids"]) for r in rows])
    for row, values in zip(rows, nll):
        assert values == pytest.approx([-x for x in row["naive_logprobs"]], abs=1e-3)


def test_drift_is_zero_against_itself_and_grows_with_perturbation(tiny_model_dir, perturbed_dir):
    base = _model(tiny_model_dir)
    prompts = [[1, 5, 9, 14], [1, 7], [1, 30, 31, 32, 33, 34]]
    continuations = [[40, 41, 42], [43, 44, 45, 46], [47]]
    reference = drift.reference(base, prompts, continuations)
    same = drift.measure(base, reference)
    assert same["kl_base_tuned"] == pytest.approx(0.0, abs=1e-6) and same["greedy_agreement"] == 1.0
    assert same["positions"] == 8
    moved = drift.measure(_model(perturbed_dir), reference)
    assert moved["kl_base_tuned"] > 1e-4
    # Direct computation: each sequence on its own (no batching, no padding), KL(base || tuned) at every
    # position that predicts a continuation token, averaged over all 8 positions.
    tuned = _model(perturbed_dir)
    kls, agree = [], []
    with torch.no_grad():
        for prompt, continuation in zip(prompts, continuations):
            ids = torch.tensor([prompt + continuation])
            where = slice(len(prompt) - 1, len(prompt) - 1 + len(continuation))
            p = torch.log_softmax(base(ids).logits[0, where].double(), -1)
            q = torch.log_softmax(tuned(ids).logits[0, where].double(), -1)
            kls += (p.exp() * (p - q)).sum(-1).tolist()
            agree += (p.argmax(-1) == q.argmax(-1)).tolist()
    assert moved["positions"] == len(kls) == 8
    assert moved["kl_base_tuned"] == pytest.approx(sum(kls) / len(kls), rel=1e-4)
    assert moved["greedy_agreement"] == sum(agree) / len(agree)


def test_fisher_is_the_mean_of_per_example_squared_gradients(tiny_model_dir):
    """Against torch.func: the gradient of each example's summed answer log-likelihood, computed functionally
    (no .backward, no accumulation), squared, then averaged over examples."""
    from torch.func import functional_call, grad

    model = _model(tiny_model_dir)
    examples = [([1, 5, 9], [10, 11]), ([1, 7], [12]), ([1, 30, 31, 32], [40, 41, 42])]
    got = fisher.diagonal_fisher(model, examples)
    params = {n: p.detach() for n, p in model.named_parameters()}

    def answer_nll(weights, prompt, answer):
        ids = torch.tensor([prompt + answer])
        logprobs = torch.log_softmax(functional_call(model, weights, (ids,)).logits[0].float(), -1)
        return -sum(logprobs[len(prompt) - 1 + t, token] for t, token in enumerate(answer))

    squares = [{n: g**2 for n, g in grad(answer_nll)(params, p, a).items()} for p, a in examples]
    for name in got:
        expected = sum(s[name] for s in squares) / len(examples)
        # float32 sums in another order: within 1e-5 of the tensor's scale (a skipped zero_grad or a squared
        # batch mean would be off by whole factors)
        assert torch.allclose(got[name], expected, rtol=1e-3, atol=1e-5 * float(expected.abs().max())), name
    assert sum(float(v.sum()) for v in got.values()) > 0


def test_fisher_movement_matches_a_direct_sum(tiny_model_dir, perturbed_dir):
    base = _model(tiny_model_dir)
    f = fisher.diagonal_fisher(base, [([1, 5, 9], [10, 11]), ([1, 7], [12])])
    assert all(v.min() >= 0 for v in f.values()) and sum(float(v.sum()) for v in f.values()) > 0
    base_state = {k: v.clone() for k, v in base.state_dict().items()}
    assert fisher.movement(f, base_state, base_state)["total"] == 0.0
    tuned_state = _model(perturbed_dir).state_dict()
    moved = fisher.movement(f, base_state, tuned_state)
    last = f"layer {len(base.model.layers) - 1:02d}"
    assert set(k for k, v in moved["per_group"].items() if v > 0) == {last}
    direct = sum(float((f[n] * (tuned_state[n] - base_state[n]) ** 2).sum()) for n in f if ".mlp." in n)
    assert moved["total"] == pytest.approx(direct, rel=1e-5)


def test_evaluator_scores_the_base_against_itself(tiny_model_dir, kgfact_short, perturbed_dir, tmp_path):
    evaluator = Evaluator(
        EvalConfig(model="", base=str(tiny_model_dir), corpus=str(kgfact_short), out=str(tmp_path), **SMALL)
    )
    metrics, records = evaluator.evaluate(str(tiny_model_dir))
    assert set(metrics["accuracy"]) == {"train", "paraphrase", "compositional", "retrieval"}
    assert metrics["drift"]["kl_base_tuned"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["fisher_movement"]["total"] == 0.0
    assert all(v["score"] == v["base_score"] for v in metrics["held_out"].values())
    assert metrics["retention"]["drift"] == 1.0
    # The headline average is held-out capability: the in-distribution probe has its own line, and every
    # probe and split carries its n and a 95% interval.
    assert (
        "in_context" not in metrics["retention_average"]["probes"] and "drift" in metrics["retention_average"]["probes"]
    )
    assert metrics["held_out"]["in_context"]["in_distribution"] is True
    for task, entry in metrics["held_out"].items():
        assert entry["n"] > 0 and entry["interval"][0] <= entry["score"] <= entry["interval"][1], task
    assert all(d["n"] == 6 and len(d["interval"]) == 2 for d in metrics["accuracy_detail"].values())
    assert {r["task"] for r in records} >= {"train", "in_context", "arithmetic", "general_knowledge"}
    assert len(records) == len(evaluator.items) == 4 * 6 + 4 + 6 + len(general_knowledge_items(5))
    # Seconds per phase: the model's own, and the base model's side, computed once per evaluator. The base
    # model's answers are the ones the evaluator already has: no weights loaded, no second generation.
    assert set(metrics["timing"]["model"]) == {"drift", "Fisher movement", "scoring and intervals"}
    assert set(metrics["timing"]["base_once"]) == {"base model's answers", "drift reference", "Fisher diagonal"}
    assert all(v >= 0 for part in metrics["timing"].values() for v in part.values())
    tuned, _ = evaluator.evaluate(str(perturbed_dir))
    assert tuned["fisher_movement"]["total"] > 0 and tuned["drift"]["kl_base_tuned"] > 0
    assert set(tuned["timing"]["model"]) == {
        "load weights",
        "answers",
        "drift",
        "Fisher movement",
        "scoring and intervals",
    }
    # A tuned model scored on the train split and the probes only (a sweep's `--checkpoint_splits train`).
    light, light_records = evaluator.evaluate(str(perturbed_dir), splits=["train"])
    assert set(light["accuracy"]) == {"train"} and light["held_out"].keys() == tuned["held_out"].keys()
    assert len(light_records) == len(records) - 3 * 6
    # Error modes are counted exactly for the wrong held-out answers that count.
    wrong = sum(1 for r in records if "error_mode" in r)
    assert sum(sum(v.values()) for v in metrics["error_modes"].values()) == wrong


def _cli(module, *args):
    return processes.run(module, list(args))


def test_cli_writes_metrics_with_config_and_versions(tiny_model_dir, kgfact_short, perturbed_dir, tmp_path):
    flags = [f"--{k}={v}" for k, v in SMALL.items()]
    done = _cli(
        "evaluate",
        "--model",
        str(perturbed_dir),
        "--base",
        str(tiny_model_dir),
        "--corpus",
        str(kgfact_short),
        "--out",
        str(tmp_path / "e"),
        *flags,
    )
    assert done.returncode == 0, done.stderr
    document = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert document["config"]["base"] == str(tiny_model_dir) and "torch" in document["versions"]["packages"]
    assert "retention average" in done.stdout.splitlines()[-1]
    assert len((tmp_path / "e" / "answers.jsonl").read_text().splitlines()) > 0


def test_bad_input_is_named_and_nothing_is_written(tiny_model_dir, kgfact_small, tmp_path, capsys):
    from evaluate.__main__ import evaluate

    def _cli(_module, *args):
        code, err = run_main_in_process(evaluate, list(args), capsys)
        return subprocess.CompletedProcess(args, code, "", err)

    base = ["--base", str(tiny_model_dir), "--backend", "hf"]
    not_a_model = tmp_path / "ckpt"
    not_a_model.mkdir()
    (not_a_model / "notes.txt").write_text("hello")
    done = _cli(
        "evaluate", "--model", str(not_a_model), *base, "--corpus", str(kgfact_small), "--out", str(tmp_path / "o1")
    )
    assert done.returncode == 2 and f"{not_a_model}: not a model directory" in done.stderr
    partial = tmp_path / "corpus"
    partial.mkdir()
    for name in ("train.jsonl", "stats.json"):  # stats.json: a KGFact corpus, so every split is expected
        (partial / name).write_text((kgfact_small / name).read_text())
    done = _cli(
        "evaluate", "--model", str(tiny_model_dir), *base, "--corpus", str(partial), "--out", str(tmp_path / "o2")
    )
    assert (
        done.returncode == 2 and f"{partial / 'paraphrase.jsonl'}: corpus split 'paraphrase' is missing" in done.stderr
    )
    bad = tmp_path / "gsm8k.jsonl"
    bad.write_text('{"problem": "no question field"}\n')
    done = _cli(
        "evaluate",
        "--model",
        str(tiny_model_dir),
        *base,
        "--corpus",
        str(kgfact_small),
        "--benchmarks",
        f"gsm8k={bad}",
        "--out",
        str(tmp_path / "o3"),
    )
    assert done.returncode == 2 and f"{bad}, line 1: field 'answer'" in done.stderr
    assert not any((tmp_path / o).exists() for o in ("o1", "o2", "o3"))
    with pytest.raises(EvalError, match="no such model directory"):
        Evaluator(EvalConfig(base=str(tmp_path / "absent"), corpus=str(kgfact_small), **SMALL))


def test_sweep_and_report_over_a_training_run(tiny_model_dir, kgfact_short, tmp_path):
    from evaluate.report import report
    from evaluate.sweep import sweep

    shards = Generator(
        GenerateConfig(
            model=str(tiny_model_dir),
            corpus=str(kgfact_short / "train.jsonl"),
            out=str(tmp_path / "gen"),
            method="sft",
            progress=False,
        )
    ).run_all()
    run = tmp_path / "train" / "sft"
    train(
        TrainConfig(
            model=str(tiny_model_dir),
            shards=[str(s) for s in shards],
            out=str(run),
            method="sft",
            lr=1e-3,
            batch_size=16,
            micro_batch_size=8,
            max_steps=4,
            save_every=2,
            keep_last=10,
            warmup_steps=0,
            dtype="float32",
            progress=False,
        )
    )
    every = EvalConfig(base=str(tiny_model_dir), corpus=str(kgfact_short), out=str(tmp_path / "eval"), **SMALL)
    config = replace(every, checkpoint_splits=["train"])  # as `make demo` sweeps
    targets = sweep([str(run)], config)
    assert [t.relative_to(tmp_path / "eval").as_posix() for t in targets] == [
        "base",
        "sft/step-000002",
        "sft/step-000004",
    ]
    documents = [json.loads((t / "metrics.json").read_text()) for t in targets]
    # Only the train split before the run's last checkpoint; every split on the base model and the last.
    assert [sorted(d["metrics"]["accuracy"]) for d in documents] == [
        ["compositional", "paraphrase", "retrieval", "train"],
        ["train"],
        ["compositional", "paraphrase", "retrieval", "train"],
    ]
    assert documents[1]["config"]["splits"] == ["train"] and documents[1]["metrics"]["retention"]["average"] > 0
    # The base model's answers are the evaluator's own (no second pass): it scores exactly its own scores.
    assert all(v["score"] == v["base_score"] for v in documents[0]["metrics"]["held_out"].values())
    stamps = [(t / "metrics.json").stat().st_mtime_ns for t in targets]
    sweep([str(run)], config)  # a rerun reuses every result
    assert [(t / "metrics.json").stat().st_mtime_ns for t in targets] == stamps
    sweep([str(run)], every)  # every split everywhere: only the checkpoint scored on the train split is redone
    redone = [(t / "metrics.json").stat().st_mtime_ns for t in targets]
    assert [a == b for a, b in zip(redone, stamps)] == [True, False, True]
    sweep([str(run)], config)  # a result with every split serves a sweep that asks for fewer
    assert [(t / "metrics.json").stat().st_mtime_ns for t in targets] == redone
    table = report([str(run)], str(tmp_path / "eval"), str(tiny_model_dir), str(tmp_path / "report"))
    assert "| SFT |" in table and "| base model |" in table
    for name in ("target_nll_cdf.png", "fisher_movement.png", "tradeoff.png", "error_modes.png"):
        assert (tmp_path / "report" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    assert [r["step"] for r in results["checkpoints"]] == [2, 4]
    assert results["final"][1]["target_nll"] > 0 and results["final"][0]["ret_average"] == 1.0


def test_kgfunc_corpus_is_scored_with_unseen_operations_as_a_retention_probe(tiny_model_dir, tmp_path):
    """A KGFunc directory needs no --splits: train, test and chains are scored as taught knowledge, the
    never-trained operations (`unseen`) as a capability probe relative to the base model."""
    from corpora.kgfunc import KGFuncConfig, write
    from evaluate.report import markdown_table, row_of

    corpus = tmp_path / "kgfunc"
    write(KGFuncConfig(out=str(corpus), train_per_op=1, test_per_op=1, compositional=2, unseen_per_op=1, shots=2))
    settings = SMALL | {"split_limit": 0, "fisher_examples": 0}
    evaluator = Evaluator(
        EvalConfig(model="", base=str(tiny_model_dir), corpus=str(corpus), out=str(tmp_path / "e"), **settings)
    )
    assert evaluator.splits == ["train", "test", "compositional", "unseen"]
    metrics, records = evaluator.evaluate(str(tiny_model_dir))
    assert set(metrics["accuracy"]) == {"train", "test", "compositional"}
    unseen = metrics["held_out"]["unseen"]
    assert unseen["n"] == sum(r["task"] == "unseen" for r in records) > 0
    assert unseen["score"] == unseen["base_score"]  # the base model against itself
    # A sweep's `--checkpoint_splits train` drops the taught splits, never the unseen-operations probe.
    light, _ = evaluator.evaluate(str(tiny_model_dir), splits=["train"])
    assert set(light["accuracy"]) == {"train"} and light["held_out"]["unseen"]["n"] == unseen["n"]
    answers = tmp_path / "unused.jsonl"  # the interval is the stored one: answers are read only for old results
    table = markdown_table([row_of("base model", None, 0, metrics, None, (answers, answers))])
    assert "test (held-out inputs)" in table and "ret. unseen operations" in table and "paraphrase" not in table
    with pytest.raises(EvalError, match="no corpus split files"):
        Evaluator(EvalConfig(model="", base=str(tiny_model_dir), corpus=str(tmp_path / "empty"), **settings))


def test_probes_keep_their_own_answer_budget_on_a_long_answer_corpus(tiny_model_dir, tmp_path, monkeypatch):
    """`--probe_max_new_tokens`: KGFunc's items get the corpus budget, the capability probes their own (so they
    are scored alike on every corpus); unset or equal to `--max_new_tokens`, results keep their identity."""
    from corpora.kgfunc import KGFuncConfig, write
    from evaluate.backends import HFGreedy
    from evaluate.probes import PROBE_TASKS
    from evaluate.results import config_hash

    corpus = tmp_path / "kgfunc"
    write(KGFuncConfig(out=str(corpus), train_per_op=1, test_per_op=1, compositional=2, unseen_per_op=1, shots=2))
    calls, generate = [], HFGreedy.generate

    def recording(self, prompts, max_new_tokens, on_batch=None):
        outputs = generate(self, prompts, max_new_tokens, on_batch)
        calls.append((len(prompts), max_new_tokens, max(len(o) for o in outputs)))
        return outputs

    monkeypatch.setattr(HFGreedy, "generate", recording)
    settings = SMALL | {"split_limit": 0, "fisher_examples": 0, "probe_max_new_tokens": 3}
    config = EvalConfig(model="", base=str(tiny_model_dir), corpus=str(corpus), **settings)
    evaluator = Evaluator(config)
    probes = sum(item.task in PROBE_TASKS for item in evaluator.items)
    answers = {budget: (n, longest) for n, budget, longest in calls if budget != config.drift_tokens}
    assert answers[3][0] == probes and answers[12][0] == len(evaluator.items) - probes
    assert answers[3][1] <= 3 < answers[12][1]  # the tiny model rambles: the corpus items used more
    same = [replace(config, probe_max_new_tokens=v) for v in (None, config.max_new_tokens)]
    assert config_hash(same[0]) == config_hash(same[1]) != config_hash(config)
    with pytest.raises(ConfigError, match="--probe_max_new_tokens must be >= 1"):
        replace(config, probe_max_new_tokens=0)


def test_intervals_wilson_and_paired_bootstrap():
    from evaluate.intervals import retention_intervals, wilson

    assert wilson(7, 45) == pytest.approx([0.0775, 0.2878], abs=1e-4)  # textbook Wilson 95% for 7/45
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0 and wilson(0, 0) is None
    base = [True] * 80 + [False] * 20
    tuned = [True] * 60 + [False] * 40  # retention 60/80 = 0.75, on the same items
    same = retention_intervals({"probe": (base, base)}, [], ["probe"])
    assert same["probe"] == [1.0, 1.0]  # paired: identical answers never move the ratio
    spread = retention_intervals(
        {"probe": (tuned, base), "in_context": (base, base)}, [[16, 32]] * 4, ["probe", "drift"]
    )
    low, high = spread["probe"]
    assert low < 0.75 < high and high - low < 0.25
    assert spread["drift"] == [0.5, 0.5]
    a_low, a_high = spread["average"]  # mean of probe and drift: (0.75 + 0.5) / 2 at the centre
    assert a_low < 0.625 < a_high
    assert retention_intervals({"probe": (tuned, base)}, [], ["probe"], seed=0) == retention_intervals(
        {"probe": (tuned, base)}, [], ["probe"], seed=0
    )
    assert retention_intervals({"zero": ([False] * 5, [False] * 5)}, [], ["zero"])["zero"] is None


def test_headline_average_leaves_out_in_distribution_probes_and_probes_under_the_floor():
    probe = {"in_distribution": False}
    metrics = {
        "retention": {"arithmetic": 0.5, "drift": 0.7, "general_knowledge": 0.9, "in_context": 2.0, "unseen": 1.75},
        "held_out": {
            "arithmetic": probe | {"base_score": 103 / 240, "n": 240},
            "general_knowledge": probe | {"base_score": 1.0, "n": 106},
            "in_context": {"in_distribution": True, "base_score": 11 / 40, "n": 40},
            "unseen": probe | {"base_score": 4 / 90, "n": 90},  # 4 base-correct items: a ratio of noise
        },
    }
    assert retention.averaged_probes(metrics["held_out"]) == ["arithmetic", "general_knowledge", "drift"]
    assert retention.headline_average(metrics) == pytest.approx((0.5 + 0.7 + 0.9) / 3)
    assert retention.floor_note(metrics["held_out"]).endswith("fewer than 100 of their items: unseen (4 of 90).")
    metrics["held_out"]["unseen"] |= {"base_score": 100 / 900, "n": 900}
    assert retention.headline_average(metrics) == pytest.approx((0.5 + 0.7 + 0.9 + 1.75) / 4)
    assert retention.floor_note(metrics["held_out"]) == ""
    assert retention.headline_average({"retention": {"average": None}, "held_out": {}, "drift": None}) is None


def test_old_results_get_the_floored_interval_from_their_answers(
    tiny_model_dir, kgfact_short, perturbed_dir, tmp_path, monkeypatch
):
    """A result scored before the floor stored an average over every probe; its interval over the floored
    probes is recomputed from the answers files, with the very draws the evaluator makes."""
    from evaluate.intervals import retention_intervals
    from evaluate.results import ANSWERS, write_result

    config = EvalConfig(model="", base=str(tiny_model_dir), corpus=str(kgfact_short), out=str(tmp_path), **SMALL)
    monkeypatch.setattr(retention, "MIN_BASE_CORRECT", 1)  # as before the floor: every probe with a ratio
    # The tiny model answers nothing right: a stand-in rule marks about 2 replies in 3 correct, so the probes
    # have ratios, and the base and tuned model (whose replies differ) are right on different items.
    monkeypatch.setattr(scoring, "item_correct", lambda reply, answers, rule: len(reply) % 3 != 0)
    evaluator = Evaluator(config)
    base_answers, answers = tmp_path / "base" / ANSWERS, tmp_path / "tuned" / ANSWERS
    write_result(base_answers.parent, config, str(tiny_model_dir), *evaluator.evaluate(str(tiny_model_dir)))
    metrics, records = evaluator.evaluate(str(perturbed_dir))
    write_result(answers.parent, config, str(perturbed_dir), metrics, records)
    old = metrics["retention_average"]
    assert len(old["probes"]) > 1 and old["interval"] is not None  # a probe besides drift
    probes = retention.paired_probe_answers(answers, base_answers, list(metrics["held_out"]))
    assert {t: len(v[0]) for t, v in probes.items()} == {t: e["n"] for t, e in metrics["held_out"].items()}
    again = retention_intervals(probes, metrics["drift"]["per_prompt"], old["probes"])
    assert again["average"] == old["interval"] and again["drift"] == old["drift_interval"]
    assert retention.headline_interval(metrics, answers, base_answers) == old["interval"]  # the same probes
    monkeypatch.setattr(retention, "MIN_BASE_CORRECT", 10**6)  # now every probe is under the floor
    assert retention.headline_average(metrics) == metrics["retention"]["drift"]
    assert retention.headline_interval(metrics, answers, base_answers) == old["drift_interval"]
    answers.write_text("".join(json.dumps(r) + "\n" for r in records + [{"id": "x", "task": "arithmetic"}]))
    with pytest.raises(UserError, match="no answer for item 'x'"):
        retention.paired_probe_answers(answers, base_answers, list(metrics["held_out"]))


def test_fisher_items_take_each_capability_probe_in_turn():
    from evaluate.evaluator import stratified
    from evaluate.probes import Item

    items = [Item(f"a{i}", "arithmetic", "q", ("1",), "auto") for i in range(40)]
    items += [Item(f"g{i}", "general_knowledge", "q", ("x",), "auto") for i in range(3)]
    items += [Item(f"u{i}", "unseen", "q", ("2",), "auto") for i in range(10)]
    picked = [i.id for i in stratified(items, 12)]
    assert picked == ["a0", "g0", "u0", "a1", "g1", "u1", "a2", "g2", "u2", "a3", "u3", "a4"]
    assert len(stratified(items, 100)) == 53


def test_target_nll_is_reported_for_verified_targets_and_for_all(tiny_model_dir, kgfact_short, tmp_path):
    """The tiny model's MixSD targets are all wrong: no verified NLL, an NLL over all of them; SFT targets
    (the ground truth) are all verified, so both are the same."""
    from evaluate.report import Run, nll_per_run

    def shards(method):
        config = GenerateConfig(
            model=str(tiny_model_dir),
            corpus=str(kgfact_short / "train.jsonl"),
            out=str(tmp_path / "g"),
            method=method,
            lam=[0.5],
            max_new_tokens=6,
            backend="hf",
            dtype="float32",
            progress=False,
        )
        return str(Generator(config).run_all()[0])

    runs = [
        Run(tmp_path, "MixSD", "mixsd", 0.5, [shards("mixsd")], []),
        Run(tmp_path, "SFT", "sft", None, [shards("sft")], []),
    ]
    found = nll_per_run(runs, str(tiny_model_dir), tmp_path / "nll.json")
    assert found["MixSD"].verified == [] and len(found["MixSD"].all) > 90
    assert found["SFT"].verified == found["SFT"].all and len(found["SFT"].all) > 90
    again = nll_per_run(runs, str(tiny_model_dir), tmp_path / "nll.json")  # from the cache
    assert again["MixSD"].all == found["MixSD"].all


def test_progress_lines_name_each_phase_with_items_rate_and_eta(
    tiny_model_dir, kgfact_short, perturbed_dir, tmp_path, capsys
):
    evaluator = Evaluator(
        EvalConfig(
            model="",
            base=str(tiny_model_dir),
            corpus=str(kgfact_short),
            out=str(tmp_path),
            **SMALL | {"progress": True, "batch_size": 8},
        )
    )
    evaluator.evaluate(str(perturbed_dir))  # not the base model, whose answers the evaluator already has
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("evaluate: ")]
    items = len(evaluator.prompts)
    assert f"evaluate: base model's answers: {items} items (train 6, paraphrase 6" in lines[0]
    assert any(line.startswith(f"evaluate: answers: 8/{items} items, ") and "items/s, ETA " in line for line in lines)
    for phase in (
        "base model's answers",
        "drift reference",
        "Fisher diagonal",
        "load weights",
        "answers",
        "drift",
        "Fisher movement",
    ):
        assert any(
            line.startswith(f"evaluate: {phase}: ") and " s (" in line and "items/s)" in line for line in lines
        ), phase

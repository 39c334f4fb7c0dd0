"""The vLLM backend against the reference backend and transformers forwards, on the tiny model in float32."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests import processes
from tests.generate_helpers import chi2_critical, cli_flags, next_token_logprobs, simple_jobs
from tests.processes import EVERY_CORE

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm
ROOT = Path(__file__).resolve().parent.parent
TEST_KV_BYTES = 128 << 20  # every engine is sized explicitly: never a share of the machine's memory


@pytest.fixture(scope="session")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def vllm_engine(tiny_model_dir, tokenizer):
    from generate.vllm_engine import EngineSettings, VLLMPairedEngine

    return VLLMPairedEngine(
        EngineSettings(
            model=str(tiny_model_dir),
            dtype="float32",
            max_model_len=1024,
            max_num_seqs=256,
            kv_cache_bytes=TEST_KV_BYTES,
            enforce_eager=True,
        ),
        [tokenizer.eos_token_id],
    )


@pytest.fixture(scope="session")
def cramped_engine(tiny_model_dir, tokenizer, vllm_engine):
    """24 KV blocks of 128 tokens: too few for 24 pairs of ~130 tokens, so the scheduler preempts and splits
    pairs. Session-scoped on purpose: tearing a vLLM engine down resets process-global state that the other
    engine still uses."""
    from generate.vllm_engine import EngineSettings, VLLMPairedEngine

    return VLLMPairedEngine(
        EngineSettings(
            model=str(tiny_model_dir),
            dtype="float32",
            max_model_len=1024,
            max_num_seqs=96,
            kv_cache_bytes=TEST_KV_BYTES,
            num_gpu_blocks_override=24,
            enforce_eager=True,
        ),
        [tokenizer.eos_token_id],
    )


@pytest.fixture(scope="session")
def hf_engine(tiny_model_dir, tokenizer):
    from generate.hf_engine import HFPairedEngine

    return HFPairedEngine(str(tiny_model_dir), [tokenizer.eos_token_id], dtype="float32", batch_pairs=64)


@pytest.fixture(scope="session")
def reference_model(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


@pytest.mark.parametrize("lam,temperature", [(0.5, 0.0), (0.3, 1.0)])
def test_vllm_matches_reference_backend(vllm_engine, hf_engine, tokenizer, lam, temperature):
    jobs = simple_jobs(tokenizer, 128, lam=lam, temperature=temperature, max_tokens=48)
    ours, reference = vllm_engine.decode(jobs), hf_engine.decode(jobs)
    same = sum(a.tokens == b.tokens for a, b in zip(ours, reference))
    assert same >= 0.99 * len(jobs), f"{same} of {len(jobs)} identical"
    assert vllm_engine.stats.splits == 0


def test_tokens_are_argmax_of_their_source_and_logprobs_match(vllm_engine, tokenizer, reference_model):
    from mixsd.randomness import Stream, uniforms

    lam = 0.5
    jobs = simple_jobs(tokenizer, 12, lam=lam, temperature=0.0, max_tokens=40)
    checked = 0
    for job, result in zip(jobs, vllm_engine.decode(jobs)):
        assert result.tokens
        expert = next_token_logprobs(reference_model, job.expert_ids, result.tokens)
        naive = next_token_logprobs(reference_model, job.naive_ids, result.tokens)
        positions = torch.arange(len(result.tokens))
        from_expert = uniforms(torch.tensor(0), torch.tensor(job.key), torch.tensor(0), positions, Stream.COIN) >= lam
        chosen = torch.where(from_expert[:, None], expert, naive)
        target = torch.tensor(result.tokens)
        top2 = chosen.topk(2, dim=-1).values
        clear = (top2[:, 0] - top2[:, 1]) > 1e-4  # skip exact ties, where float order decides
        assert torch.equal(chosen.argmax(-1)[clear], target[clear])
        assert torch.allclose(
            torch.tensor(result.expert_logprobs), expert.gather(1, target[:, None]).squeeze(1), atol=1e-3
        )
        assert torch.allclose(
            torch.tensor(result.naive_logprobs), naive.gather(1, target[:, None]).squeeze(1), atol=1e-3
        )
        checked += int(clear.sum())
    assert checked > 300


def test_lambda_extremes_and_naive_fraction(vllm_engine, tokenizer, reference_model):
    """At temperature 0 each target token is the argmax of the stream its coin picks: the naive stream where
    coin < λ, else the expert's. Checked on what the engine wrote, at every position where the two argmaxes
    differ (elsewhere the token says nothing about the coin)."""
    from mixsd.randomness import Stream, uniforms

    def observed(lam):
        """(positions that followed their coin, informative positions, of them the naive ones)."""
        jobs = simple_jobs(tokenizer, 48, lam=lam, temperature=0.0, max_tokens=24)
        followed = informative = naive = 0
        for job, result in zip(jobs, vllm_engine.decode(jobs)):
            tokens = result.tokens
            naive_argmax = next_token_logprobs(reference_model, job.naive_ids, tokens).argmax(-1)
            expert_argmax = next_token_logprobs(reference_model, job.expert_ids, tokens).argmax(-1)
            coin = uniforms(
                torch.tensor(job.seed),
                torch.tensor(job.key),
                torch.tensor(job.sample),
                torch.arange(len(tokens)),
                Stream.COIN,
            )
            for t, token in enumerate(tokens):
                if naive_argmax[t] == expert_argmax[t]:
                    continue
                picked = naive_argmax[t] if coin[t] < lam else expert_argmax[t]
                informative += 1
                followed += int(token == picked)
                naive += int(token == naive_argmax[t])
        return followed, informative, naive

    for lam in (0.0, 1.0, 0.5):
        followed, informative, naive = observed(lam)
        assert informative >= 100, (lam, informative)
        assert followed >= 0.99 * informative, (lam, followed, informative)  # float ties may flip a rare argmax
        # λ 0: none from the naive stream, λ 1: all, λ 0.5: half (within 3 binomial standard deviations).
        assert abs(naive / informative - lam) <= 0.01 + 3 * (lam * (1 - lam) / informative) ** 0.5, (lam, naive)


def _chi_square(counts: torch.Tensor, probs: torch.Tensor) -> tuple[float, float, int]:
    """(statistic, critical value at p = 0.001, bins) of counts against probabilities; bins expected < 5
    pooled into one (left out when the pool expects nothing: tokens outside a filtered support)."""
    expected = counts.sum() * probs
    big = expected >= 5
    observed, expect = counts[big], expected[big]
    if expected[~big].sum() > 0:
        observed = torch.cat([observed, counts[~big].sum()[None]])
        expect = torch.cat([expect, expected[~big].sum()[None]])
    return float(((observed - expect) ** 2 / expect).sum()), chi2_critical(len(observed) - 1), len(observed)


def test_tokens_follow_the_mixture_at_two_positions(vllm_engine, tokenizer, reference_model):
    """λ 0.3, T 1, over many keys: the first target token ~ 0.7 p_E + 0.3 p_N, and the second, among the
    samples whose first token is the most frequent one y1, ~ 0.7 p_E(·|y1) + 0.3 p_N(·|y1) (each position's
    coin and draw are independent of the earlier ones). Chi-square, p = 0.001."""
    lam, n = 0.3, 3000
    jobs = simple_jobs(tokenizer, n, lam=lam, temperature=1.0, max_tokens=2, same_prompt=True)
    tokens = [result.tokens for result in vllm_engine.decode(jobs)]

    def mixture(prefix: list[int]) -> torch.Tensor:
        with torch.no_grad():
            p_e = torch.softmax(reference_model(torch.tensor([jobs[0].expert_ids + prefix])).logits[0, -1].double(), -1)
            p_n = torch.softmax(reference_model(torch.tensor([jobs[0].naive_ids + prefix])).logits[0, -1].double(), -1)
        return (1 - lam) * p_e + lam * p_n

    first = torch.zeros(len(tokenizer), dtype=torch.float64)
    for t in tokens:
        first[t[0] if t else tokenizer.eos_token_id] += 1
    statistic, critical, _ = _chi_square(first, mixture([]))
    assert statistic < critical, ("position 0", statistic, critical)
    y1 = int(first.argmax())
    second = torch.zeros(len(tokenizer), dtype=torch.float64)
    for t in tokens:
        if len(t) == 2 and t[0] == y1:
            second[t[1]] += 1
    assert second.sum() >= 150, second.sum()  # measured: 221 of 3000 start with y1
    statistic, critical, _ = _chi_square(second, mixture([y1]))
    assert statistic < critical, ("position 1", statistic, critical)


def _filtered(probs: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """The distribution a top-k then top-p sampler draws from, written out directly: the k most likely
    tokens, then the shortest head of them whose mass reaches top_p, renormalized."""
    ordered, order = probs.sort(descending=True)
    ordered = ordered[:top_k] / ordered[:top_k].sum()
    above = ordered.cumsum(0) - ordered
    kept = ordered * (above < top_p)
    out = torch.zeros_like(probs)
    out[order[:top_k]] = kept / kept.sum()
    return out


def test_top_k_top_p_mixture_in_the_engine(vllm_engine, tokenizer, reference_model):
    """λ 0.3 with top-k 8 and top-p 0.95 on both streams: the first target token ~ 0.7 filt(p_E) + 0.3
    filt(p_N) (chi-square, p = 0.001), and no token outside the two filtered supports ever appears. Measured:
    16 bins, statistic 12.4 (critical 37.8); against the unfiltered mixture the same counts give 2,468."""
    import dataclasses

    lam, n = 0.3, 3000
    jobs = [
        dataclasses.replace(j, top_k=8, top_p=0.95)
        for j in simple_jobs(tokenizer, n, lam=lam, temperature=1.0, max_tokens=1, same_prompt=True)
    ]
    counts = torch.zeros(len(tokenizer))
    for result in vllm_engine.decode(jobs):
        counts[result.tokens[0] if result.tokens else tokenizer.eos_token_id] += 1
    with torch.no_grad():
        p_e = torch.softmax(reference_model(torch.tensor([jobs[0].expert_ids])).logits[0, -1].double(), -1)
        p_n = torch.softmax(reference_model(torch.tensor([jobs[0].naive_ids])).logits[0, -1].double(), -1)
    expected = n * ((1 - lam) * _filtered(p_e, 8, 0.95) + lam * _filtered(p_n, 8, 0.95))
    assert counts[expected == 0].sum() == 0
    statistic, critical, bins = _chi_square(counts, expected / n)
    assert bins >= 3 and statistic < critical, (statistic, bins)


def test_forced_splits_are_recovered_identically(tokenizer, vllm_engine, cramped_engine):
    jobs = simple_jobs(tokenizer, 24, lam=0.5, temperature=1.0, max_tokens=96)
    expected = vllm_engine.decode(jobs)
    results = cramped_engine.decode(jobs)
    assert cramped_engine.stats.splits >= cramped_engine.stats.recovered > 0
    assert [r.tokens for r in results] == [r.tokens for r in expected]
    for a, b in zip(results, expected):
        assert torch.allclose(torch.tensor(a.expert_logprobs), torch.tensor(b.expert_logprobs), atol=1e-4)


def test_vllm_run_rows_match_reference_run(vllm_engine, tiny_model_dir, kgfact_small, tmp_path):
    from generate.config import GenerateConfig
    from generate.runner import Generator
    from mixsd.run_format import read_rows

    common = dict(
        model=str(tiny_model_dir),
        corpus=str(kgfact_small / "train.jsonl"),
        dtype="float32",
        lam=[0.3],
        temperature=1.0,
        max_new_tokens=32,
        max_model_len=1024,
        shard_size=32,
        progress=False,
    )
    (ours,) = Generator(GenerateConfig(out=str(tmp_path / "v"), backend="vllm", **common), engine=vllm_engine).run_all()
    (reference,) = Generator(GenerateConfig(out=str(tmp_path / "h"), backend="hf", **common)).run_all()
    a, b = read_rows(ours), read_rows(reference)
    assert len(a) == len(b) == 90
    same = sum(x["target_ids"] == y["target_ids"] and x["source"] == y["source"] for x, y in zip(a, b))
    assert same >= 0.99 * len(a), f"{same} of {len(a)} rows identical"
    for x, y in zip(a, b):
        if x["target_ids"] == y["target_ids"]:
            assert max((abs(p - q) for p, q in zip(x["naive_logprobs"], y["naive_logprobs"])), default=0) < 1e-3


@EVERY_CORE
def test_tensor_parallel_engine_writes_the_reference_rows(tiny_model_dir, kgfact_few, tmp_path):
    """`--tensor_parallel_size 2`: vLLM's own worker processes each hold half of every layer (here two CPU
    processes, one core each), while the engine core and its paired processor stay in-process; the rows equal
    the reference backend's. Run as a CLI subprocess: a second distributed setup cannot share this process."""
    from generate.config import GenerateConfig
    from generate.runner import Generator
    from mixsd.run_format import read_rows

    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("two CPU workers need two cores")
    common = dict(
        model=str(tiny_model_dir),
        corpus=str(kgfact_few),
        dtype="float32",
        lam=[0.5],
        temperature=0.0,
        max_new_tokens=12,
        shard_size=8,
        max_model_len=256,
        progress=False,
    )
    (reference,) = Generator(GenerateConfig(out=str(tmp_path / "h"), backend="hf", **common)).run_all()
    # vLLM's CPU workers bind one OpenMP thread set per rank; "auto" wants one NUMA node per rank.
    env = os.environ | {"PYTHONPATH": str(ROOT), "VLLM_CPU_OMP_THREADS_BIND": f"{cpus[0]}|{cpus[1]}"}
    done = processes.run(
        "generate",
        [
            *cli_flags(common),
            f"--out={tmp_path / 'tp'}",
            "--backend=vllm",
            "--tensor_parallel_size=2",
            "--max_num_seqs=32",
            "--kv_cache_gib=0.03",
            "--enforce_eager=true",
        ],
        env=env,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    (ours,) = (tmp_path / "tp").glob("mixsd-*")
    assert [(r["example_id"], r["target_ids"], r["source"]) for r in read_rows(ours)] == [
        (r["example_id"], r["target_ids"], r["source"]) for r in read_rows(reference)
    ]


@pytest.fixture(scope="session")
def starved_engine(tiny_model_dir, tokenizer, vllm_engine):
    """Three KV blocks of 128 tokens, one of them vLLM's own: a pair whose members need two blocks each can
    never run together."""
    from generate.vllm_engine import EngineSettings, VLLMPairedEngine

    return VLLMPairedEngine(
        EngineSettings(
            model=str(tiny_model_dir),
            dtype="float32",
            max_model_len=256,
            max_num_seqs=8,
            kv_cache_bytes=TEST_KV_BYTES,
            num_gpu_blocks_override=3,
            enforce_eager=True,
            max_splits=3,
        ),
        [tokenizer.eos_token_id],
    )


def test_a_pair_that_can_never_run_together_is_skipped_and_listed(starved_engine, tokenizer, kgfact_small, tmp_path):
    from generate.config import GenerateConfig
    from generate.runner import Generator
    from generate.shards import read_manifest
    from mixsd.run_format import read_rows

    lines = (kgfact_small / "train.jsonl").read_text().splitlines()
    short, long = json.loads(lines[0]), json.loads(lines[1])
    long["context"] = " ".join(["The sky over the northern valley is grey today."] * 4)  # 129-256 prompt tokens
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps(short) + "\n" + json.dumps(long) + "\n")
    config = GenerateConfig(
        model=str(starved_engine.settings.model),
        corpus=str(corpus),
        out=str(tmp_path / "out"),
        dtype="float32",
        lam=[0.5],
        temperature=0.0,
        max_new_tokens=16,
        max_model_len=256,
        progress=False,
    )
    generator = Generator(config, engine=starved_engine)
    long_prompt = generator._prepared_shard(0)[1]
    assert 128 < len(long_prompt.expert_ids) + 16 <= 256  # two blocks for the expert, one for the naive: 3 > 2 free
    before = starved_engine.stats.unpaired
    (run,) = generator.run_all()  # ends: before, this pair was resubmitted forever
    assert starved_engine.stats.unpaired == before + 1
    assert [r["example_id"] for r in read_rows(run)] == [short["id"]]
    (skipped,) = read_manifest(run)["skipped"]
    assert skipped["id"] == long["id"] and "split 3 times in a row without an agreed token" in skipped["reason"]


def test_a_kv_cache_that_does_not_fit_is_one_clear_line(tiny_model_dir, kgfact_small, tmp_path):
    done = processes.run(
        "generate",
        [
            "--model",
            str(tiny_model_dir),
            "--corpus",
            str(kgfact_small / "train.jsonl"),
            "--out",
            str(tmp_path / "out"),
            "--dtype",
            "float32",
            "--max_new_tokens",
            "8",
            "--kv_cache_gib",
            "4096",
            "--enforce_eager",
            "true",
            "--progress",
            "false",
        ],
    )
    assert done.returncode == 2, done.stderr[-3000:]
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert "could not get its KV cache: KV cache 4096.000 GiB set by --kv_cache_gib" in line
    assert "Set --kv_cache_gib lower" in line and "Traceback" not in done.stderr
    assert not list((tmp_path / "out").glob("*/train-*"))


def test_untested_vllm_releases_are_refused_unless_allowed(capsys):
    from generate.vllm_engine import UntestedVLLMError, check_vllm_version

    check_vllm_version("0.32.0", allow_untested=False)
    with pytest.raises(UntestedVLLMError, match=r"vLLM 0.33.1 is untested .* --allow_untested_vllm true"):
        check_vllm_version("0.33.1", allow_untested=False)
    check_vllm_version("0.33.1", allow_untested=True)
    assert "warning: vLLM 0.33.1 is untested" in capsys.readouterr().out


@pytest.mark.vllm
def test_a_cache_planned_for_the_job_holds_every_pair_without_a_split(tiny_model_dir, tokenizer):
    """`plan_kv_cache` sizes the cache for every sequence of the job in flight at once, counting the block
    vLLM keeps for itself: 80 pairs (160 sequences, above the 32 MiB floor) then decode without a single
    preemption. (Without that block the last sequence did not fit: a pair was preempted, split and
    re-prefilled, 648 times over a benchmark run.)"""
    from generate.vllm_engine import EngineSettings, VLLMPairedEngine
    from mixsd.engine_memory import FLOOR_BYTES, plan_kv_cache
    from tests.generate_helpers import simple_jobs

    jobs = simple_jobs(tokenizer, 80, lam=0.5, temperature=1.0, max_tokens=96)
    lengths = [len(j.naive_ids) + 96 for j in jobs] + [len(j.expert_ids) + 96 for j in jobs]
    plan = plan_kv_cache(str(tiny_model_dir), "float32", lengths, 160, None, on_gpu=False)
    assert plan.bytes > FLOOR_BYTES and plan.max_seqs == 160
    engine = VLLMPairedEngine(
        EngineSettings(
            model=str(tiny_model_dir),
            dtype="float32",
            max_model_len=plan.max_len,
            max_num_seqs=plan.max_seqs,
            kv_cache_bytes=plan.bytes,
            enforce_eager=True,
            ignore_eos=True,
        ),
        [],
    )
    results = engine.decode(jobs)
    assert engine.stats.splits == 0 and all(len(r.tokens) == 96 for r in results)

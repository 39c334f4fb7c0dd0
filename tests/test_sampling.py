"""The mixing step and its randomness, independent of any engine."""

from __future__ import annotations

import torch

from generate.sampling import PairSettings, draw, mix_step
from mixsd.randomness import Stream, example_key, uniforms


def settings(n, lam=0.5, temperature=1.0, top_k=0, top_p=1.0, seed=0):
    return PairSettings(
        seed=torch.full((n,), seed),
        key=torch.arange(n),
        sample=torch.zeros(n, dtype=torch.long),
        lam=torch.full((n,), lam, dtype=torch.float64),
        temperature=torch.full((n,), temperature),
        top_k=torch.full((n,), top_k),
        top_p=torch.full((n,), top_p),
    )


def mix(logits_e, logits_n, pair_settings, position):
    """`mix_step` on pairs whose expert rows come first, then their naive rows (the reference backend's layout)."""
    n = len(logits_e)
    rows = torch.arange(n)
    return mix_step(torch.cat([logits_e, logits_n]), rows, rows + n, pair_settings, position)


def test_uniforms_are_uniform_and_keyed():
    n = 200_000
    u = uniforms(torch.tensor(0), torch.arange(n), torch.tensor(0), torch.tensor(3), Stream.COIN)
    assert 0 <= float(u.min()) and float(u.max()) < 1
    assert abs(float(u.mean()) - 0.5) < 4 * (1 / 12 / n) ** 0.5
    counts = torch.histc(u.float(), bins=20, min=0, max=1)
    assert float(((counts - n / 20) ** 2 / (n / 20)).sum()) < 43.8  # chi-square, 19 dof, p = 0.001
    again = uniforms(torch.tensor(0), torch.arange(n), torch.tensor(0), torch.tensor(3), Stream.COIN)
    assert torch.equal(u, again)
    other_stream = uniforms(torch.tensor(0), torch.arange(n), torch.tensor(0), torch.tensor(3), Stream.EXPERT)
    assert abs(float(torch.corrcoef(torch.stack([u, other_stream]))[0, 1])) < 0.01


def test_example_key_is_stable():
    assert example_key("train-00001") == example_key("train-00001") != example_key("train-00002")
    assert 0 <= example_key("x") < 2**63


def test_lambda_zero_and_one_pick_one_source():
    logits_e, logits_n = torch.randn(64, 50), torch.randn(64, 50)
    pos = torch.zeros(64, dtype=torch.long)
    _, from_expert = mix(logits_e, logits_n, settings(64, lam=0.0), pos)
    assert bool(from_expert.all())
    _, from_expert = mix(logits_e, logits_n, settings(64, lam=1.0), pos)
    assert not bool(from_expert.any())


def test_temperature_zero_is_argmax_of_the_source():
    logits_e, logits_n = torch.randn(256, 50), torch.randn(256, 50)
    tokens, from_expert = mix(logits_e, logits_n, settings(256, temperature=0.0), torch.zeros(256, dtype=torch.long))
    expected = torch.where(from_expert, logits_e.argmax(-1), logits_n.argmax(-1))
    assert torch.equal(tokens, expected)


def test_only_the_chosen_stream_is_drawn_and_it_is_the_draw_both_streams_would_give():
    """The step draws once per pair, from the stream its coin picked, with that stream's own uniforms: the same
    token as drawing from both streams and keeping the chosen one, and the rows may lie anywhere in the batch."""
    n = 300
    logits_e, logits_n = torch.randn(n, 50), torch.randn(n, 50)
    pairs, pos = settings(n, lam=0.4, temperature=1.0, top_k=8), torch.full((n,), 5)
    tokens, from_expert = mix(logits_e, logits_n, pairs, pos)
    args = (pairs.seed, pairs.key, pairs.sample, pos)
    both = [
        draw(logits, pairs.temperature, pairs.top_k, pairs.top_p, uniforms(*args, stream))
        for logits, stream in ((logits_e, Stream.EXPERT), (logits_n, Stream.NAIVE))
    ]
    assert torch.equal(tokens, torch.where(from_expert, *both)) and 0 < int(from_expert.sum()) < n
    shuffled = torch.randperm(2 * n)  # pair i's rows scattered through a batch, as vLLM lays them out
    batch = torch.empty(2 * n, 50)
    batch[shuffled[:n]], batch[shuffled[n:]] = logits_e, logits_n
    again, _ = mix_step(batch, shuffled[:n], shuffled[n:], pairs, pos)
    assert torch.equal(again, tokens)


def test_common_random_numbers_across_lambdas():
    logits_e, logits_n = torch.randn(512, 50), torch.randn(512, 50)
    pos = torch.zeros(512, dtype=torch.long)
    tok_a, src_a = mix(logits_e, logits_n, settings(512, lam=0.3, temperature=0.0), pos)
    tok_b, src_b = mix(logits_e, logits_n, settings(512, lam=0.5, temperature=0.0), pos)
    coin = uniforms(torch.tensor(0), torch.arange(512), torch.tensor(0), pos, Stream.COIN)
    differ = src_a != src_b
    assert bool(differ.any())
    assert bool(((coin[differ] >= 0.3) & (coin[differ] < 0.5)).all())  # only coins between the two λ


def test_top_k_and_top_p_restrict_the_support():
    logits = torch.randn(1, 100).repeat(4000, 1)
    order = logits[0].argsort(descending=True)
    u = torch.rand(4000, dtype=torch.float64)
    t = torch.ones(4000)
    top3 = draw(logits, t, torch.full((4000,), 3), torch.ones(4000), u)
    assert set(top3.tolist()) == set(order[:3].tolist())
    probs = torch.softmax(logits[0], -1)[order]
    keep = int(((probs.cumsum(0) - probs) < 0.5).sum())
    nucleus = draw(logits, t, torch.zeros(4000, dtype=torch.long), torch.full((4000,), 0.5), u)
    assert set(nucleus.tolist()) == set(order[:keep].tolist())

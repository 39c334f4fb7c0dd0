"""Configs: defaults < YAML shared keys < YAML section < flags; typos and bad types are named."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from mixsd import config as cfg


@dataclass
class Stage:
    model: str = "default-model"
    seed: int = 0
    lr: float = 1e-5
    lams: list[float] = field(default_factory=lambda: [0.3])
    resume: bool = False
    note: str | None = None


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


def test_precedence(tmp_path):
    path = write(tmp_path, "model: from-yaml\nseed: 3\nstage:\n  lr: 0.001\n  seed: 4\nother:\n  lr: 9\n")
    assert cfg.load(Stage) == Stage()
    loaded = cfg.load(Stage, path, "stage")
    assert (loaded.model, loaded.seed, loaded.lr) == ("from-yaml", 4, 0.001)
    flagged = cfg.load(Stage, path, "stage", seed=7, lams=(0.1, 0.5), resume="true")
    assert (flagged.seed, flagged.lams, flagged.resume) == (7, [0.1, 0.5], True)


def test_coercion_of_flag_values():
    assert cfg.load(Stage, lams="0.1,0.3").lams == [0.1, 0.3]
    assert cfg.load(Stage, lams=0.5).lams == [0.5]
    assert cfg.load(Stage, model=123).model == "123"
    assert cfg.load(Stage, lr=1).lr == 1.0


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"learning_rate": 1}, "unknown setting --learning_rate"),
        ({"seed": 1.5}, "--seed: expected an integer"),
        ({"lr": "fast"}, "--lr: expected float"),
        ({"resume": "maybe"}, "--resume: expected true or false"),
    ],
)
def test_bad_flags_are_named(overrides, message):
    with pytest.raises(cfg.ConfigError, match=message):
        cfg.load(Stage, **overrides)


def test_unknown_yaml_key_names_file_and_section(tmp_path):
    path = write(tmp_path, "stage:\n  lrr: 1\n")
    with pytest.raises(cfg.ConfigError, match=r"c\.yaml: section 'stage' has unknown key\(s\) \['lrr'\]"):
        cfg.load(Stage, path, "stage")


def test_missing_config_file():
    with pytest.raises(cfg.ConfigError, match="config file not found"):
        cfg.load(Stage, "/nonexistent.yaml", "stage")


def test_default_yaml_builds_the_corpus_configs():
    from corpora.kgfact import KGFactConfig
    from corpora.kgfunc import KGFuncConfig

    fact = cfg.load(KGFactConfig, "configs/default.yaml", "kgfact")
    assert (fact.out, fact.size, fact.seed) == ("data/kgfact-small", "small", 0)
    assert cfg.load(KGFuncConfig, "configs/default.yaml", "kgfunc").train_per_op == 100

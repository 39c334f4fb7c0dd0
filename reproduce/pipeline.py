"""`python -m reproduce --config configs/reproduce.yaml`: the paper's comparison, measured.

For each corpus (KGFact, KGFunc) × method (SFT, OPSD, MixSD at each λ) × seed, every stage through the
project's own commands, each reusing what a previous run finished (so the whole can run in parts):
1. the corpus, built where missing;
2. the targets: SFT's once per corpus (ground truth: the seed changes nothing), MixSD's per λ and seed (the
   coins that pick expert or naive tokens derive from the seed); OPSD trains on the SFT rows' prompts;
3. the learning rate per corpus and method, from `lr_grid` on seed 0: each candidate's checkpoints scored on
   the train split alone (`--probes false`), and the rule: the lowest rate whose best train accuracy over
   checkpoints is within `lr_tolerance` of the best any rate reached. It never reads a retention probe. Each
   candidate is scored as soon as it is trained, so a part may end between candidates, and then with every
   probe too (results the rule never reads), so that the one chosen later, perhaps on a machine that has lost
   its weights, is seed 0's final run without training it again;
4. training every seed at that rate, and evaluating every checkpoint with every probe;
5. the summary (`summary.py`): mean and 95% interval over seeds per method, and the figures.
Runs are scored as soon as a method's are trained, so that with `prune` (default) the weights no longer needed
are deleted as the work goes (a 40-step run is ~3 GB in float32): the candidates not chosen, and every
checkpoint but each final run's last. Their results stay, recognized by the weights' recorded fingerprints.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from mixsd import config as cfg
from mixsd.atomic import write_json
from mixsd.checkpoints import checkpoints, has_weights, prune_weights
from mixsd.cli import join_list_flags, run_cli
from mixsd.config import ConfigError
from mixsd.lock import output_lock

if TYPE_CHECKING:
    from evaluate.sweep import Sweep

CORPUS_KINDS = ("kgfact", "kgfunc")


@dataclass
class ReproduceConfig:
    model: str = "models/smollm2-135m-instruct"
    out: str = "runs/reproduce"
    report: str = "docs/reproduce"
    corpora: list[str] = field(default_factory=lambda: list(CORPUS_KINDS))
    methods: list[str] = field(default_factory=lambda: ["sft", "opsd", "mixsd-0.3", "mixsd-0.5"])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    lr_grid: list[float] = field(default_factory=lambda: [1e-5, 3e-5, 1e-4])
    lr_tolerance: float = 0.02  # train accuracy within this of the best rate's counts as reaching it
    prune: bool = True  # delete scored weights no longer needed (module docstring); false keeps every checkpoint

    def __post_init__(self):
        unknown = sorted(set(self.corpora) - set(CORPUS_KINDS))
        if unknown:
            raise ConfigError(f"--corpora: unknown {unknown}; known: {list(CORPUS_KINDS)}")
        for method in self.methods:
            parse_method(method)
        if not self.seeds or not self.lr_grid:
            raise ConfigError("--seeds and --lr_grid need at least one value each")


@dataclass(frozen=True)
class Cell:
    """One corpus and method: where its runs go and how its stages are configured."""

    corpus: str  # kgfact or kgfunc
    method: str  # sft, opsd or mixsd-λ
    root: Path  # OUT/<corpus>

    def train_dir(self, lr: float, seed: int) -> Path:
        return self.root / "train" / f"{self.method}-lr{lr:g}-seed{seed}"


def sweep_dir(corpus_root: Path, probes: bool) -> Path:
    """Where a corpus's checkpoints are scored: every probe (eval), or the train split alone (rate candidates)."""
    return corpus_root / ("eval" if probes else "eval-train-split")


def parse_method(method: str) -> tuple[str, float | None]:
    """ "sft", "opsd" or "mixsd-0.3" → (training method, λ)."""
    if method in ("sft", "opsd"):
        return method, None
    kind, _, lam = method.partition("-")
    try:
        if kind == "mixsd" and 0.0 <= float(lam) <= 1.0:
            return "mixsd", float(lam)
    except ValueError:
        pass
    raise ConfigError(f"--methods: {method!r} is not sft, opsd or mixsd-λ (λ in [0, 1], e.g. mixsd-0.3)")


class Reproduction:
    def __init__(self, settings: ReproduceConfig, config_path: str | None):
        self.settings, self.config_path = settings, config_path
        data = yaml.safe_load(Path(config_path).read_text()) if config_path else {}
        # Per-corpus settings on top of the shared sections, e.g. `kgfunc_overrides: {generate: {…}}`.
        self.overrides = {kind: (data or {}).get(f"{kind}_overrides", {}) or {} for kind in CORPUS_KINDS}

    def stage(self, cls, section: str, kind: str, **values):
        """A stage's settings: the YAML's shared keys and section < the overrides of corpus `kind` < `values`."""
        values = {"model": self.settings.model} | self.overrides[kind].get(section, {}) | values
        fields = cls.__dataclass_fields__
        return cfg.load(cls, self.config_path, section, **{k: v for k, v in values.items() if k in fields})

    def run(self) -> list[Path]:
        """Every corpus's runs, trained and evaluated. One evaluator per corpus and kind of scoring, so the
        base model's side (its answers, drift reference, Fisher diagonal) is computed once per corpus."""
        trained = []
        for corpus in self.settings.corpora:
            corpus_dir = self.corpus(corpus)
            cells = [Cell(corpus, method, Path(self.settings.out) / corpus) for method in self.settings.methods]
            # Every target first: a generator's vLLM engine, shut down when its run ends, would take the
            # process-wide state of a live evaluator's engine with it (evaluate.backends.VLLMGreedy.close).
            for cell in cells:
                for seed in self.settings.seeds:
                    self.targets(cell, corpus_dir, seed)
            rates = self.learning_rates(cells, corpus_dir)
            with self.scorer(corpus, corpus_dir, probes=True) as scorer:
                scored_in = Path(scorer.config.out)
                for cell in cells:
                    lr = rates[cell.method]
                    runs = [self.train(cell, corpus_dir, lr, seed, scored_in) for seed in self.settings.seeds]
                    scorer.score([str(r) for r in runs])
                    self.prune(runs, keep_last_weights=True)
                    trained += runs
        return trained

    # --- stages ---------------------------------------------------------------------------------------
    def corpus(self, kind: str) -> Path:
        from corpora import kgfact, kgfunc

        module, cls = (kgfact, kgfact.KGFactConfig) if kind == "kgfact" else (kgfunc, kgfunc.KGFuncConfig)
        settings = self.stage(cls, kind, kind, out=str(Path(self.settings.out) / kind / "corpus"))
        if not (Path(settings.out) / "stats.json").is_file():
            print(f"reproduce: building the {kind} corpus in {settings.out}", flush=True)
            module.write(settings)
        return Path(settings.out)

    def targets(self, cell: Cell, corpus_dir: Path, seed: int) -> Path:
        from generate.config import GenerateConfig
        from generate.runner import Generator

        method, lam = parse_method(cell.method)
        method = "sft" if method == "opsd" else method  # OPSD reads only the prompts of the rows
        extra = {"lam": [lam]} if lam is not None else {"seed": 0}  # SFT rows: the seed changes nothing
        settings = self.stage(
            GenerateConfig,
            "generate",
            cell.corpus,
            corpus=str(corpus_dir / "train.jsonl"),
            out=str(cell.root / "generate"),
            method=method,
            **({"seed": seed} | extra),
        )
        (run,) = Generator(settings).run_all()
        return run

    def train(self, cell: Cell, corpus_dir: Path, lr: float, seed: int, scored_in: Path) -> Path:
        """The run of `cell` at `lr` and `seed`, trained unless it already is. A finished run whose weights were
        deleted before it was scored in `scored_in` (restored from the record: a rate candidate chosen after its
        part ended) is trained again, from its seed, for the scoring that needs them."""
        from train.config import TrainConfig
        from train.trainer import train

        out = cell.train_dir(lr, seed)
        settings = self.stage(
            TrainConfig,
            "train",
            cell.corpus,
            shards=[str(self.targets(cell, corpus_dir, seed))],
            out=str(out),
            method=parse_method(cell.method)[0],
            lr=lr,
            seed=seed,
            resume=True,
        )
        if is_finished(out):
            unscored = [s.name for s in checkpoints(out) if not has_weights(s) and not is_scored(scored_in, s)]
            if not unscored:
                print(f"reproduce: {out} is trained, nothing to do", flush=True)
                return out
            print(
                f"reproduce: {out}: the weights of {', '.join(unscored)} are gone and not scored in {scored_in}: "
                "training it again",
                flush=True,
            )
            shutil.rmtree(out)
        train(settings)
        return out

    @contextlib.contextmanager
    def scorer(self, corpus: str, corpus_dir: Path, probes: bool):
        """A sweep of OUT/<corpus>/eval (every probe) or eval-train-split (the train split alone), locked."""
        from evaluate.config import EvalConfig
        from evaluate.sweep import Sweep

        out = sweep_dir(Path(self.settings.out) / corpus, probes)
        splits = {} if probes else {"splits": ["train"]}
        settings = self.stage(
            EvalConfig,
            "evaluate",
            corpus,
            base=self.settings.model,
            corpus=str(corpus_dir),
            out=str(out),
            probes=probes,
            **splits,
        )
        with output_lock(out, f"evaluation sweep {out}"), Sweep(settings) as sweep:
            yield sweep

    def score_candidate(self, run: Path, rule: "Sweep", full: "Sweep") -> None:
        """A trained rate candidate scored on the train split (what the rule reads), then, while its weights are
        here, with every probe as a final run is (which the rule never reads): chosen in a later part on a
        machine without its weights (restored from the record), it is seed 0's run as it stands, not trained
        again. Each sweep's engine is closed after use: one vLLM engine per process at a time."""
        rule.score([str(run)])
        rule.close()
        full_dir = Path(full.config.out)
        if all(has_weights(step) or is_scored(full_dir, step) for step in checkpoints(run)):
            full.score([str(run)])
            full.close()
        self.drop_state(run)

    def drop_state(self, run: Path) -> None:
        """A finished run's resume state, which nothing reads again: without it the run is settled, and the
        record keeps it (reproduce.record)."""
        if self.settings.prune:
            for step in checkpoints(run):
                prune_weights(step, keep_weights=True)

    def prune(self, runs: list[Path], keep_last_weights: bool) -> None:
        """Every checkpoint's resume state, and its weights unless it is a run's last and `keep_last_weights`."""
        if not self.settings.prune:
            return
        freed = 0
        for run in runs:
            found = checkpoints(run)
            freed += sum(prune_weights(step, keep_last_weights and step == found[-1]) for step in found)
        if freed:
            print(f"reproduce: {freed / 2**30:.1f} GiB of scored weights deleted ({len(runs)} runs)", flush=True)

    def learning_rates(self, cells: list[Cell], corpus_dir: Path) -> dict[str, float]:
        """The rule in the module docstring, per method; the choices and every candidate's score go to
        OUT/<corpus>/lr.json."""
        grid = sorted(self.settings.lr_grid)
        if len(grid) == 1:
            return {c.method: grid[0] for c in cells}
        seed = self.settings.seeds[0]
        choices = {}
        corpus = cells[0].corpus
        with (
            self.scorer(corpus, corpus_dir, probes=False) as scorer,
            self.scorer(corpus, corpus_dir, probes=True) as full,
        ):
            scored_in = Path(scorer.config.out)
            for cell in cells:
                candidates = {}
                for lr in grid:
                    # Scored as soon as trained and settled: a part that ends between candidates (an OPSD run
                    # is over an hour on 2 cores) leaves the finished ones in the record.
                    candidates[lr] = self.train(cell, corpus_dir, lr, seed, scored_in)
                    self.score_candidate(candidates[lr], scorer, full)
                best = {lr: best_train_accuracy(scored_in, candidates[lr]) for lr in grid}
                top = max(best.values())
                choices[cell.method] = {
                    "chosen": next(lr for lr in grid if best[lr] >= top - self.settings.lr_tolerance),
                    "best_train_accuracy": {f"{lr:g}": best[lr] for lr in grid},
                    "rule": f"lowest lr within {self.settings.lr_tolerance} of the best train accuracy (seed {seed})",
                }
                print(f"reproduce: {cell.corpus} {cell.method}: {json.dumps(choices[cell.method])}", flush=True)
                # The chosen candidate is seed `seed`'s final run: scored again with every probe, so kept whole.
                self.prune([candidates[lr] for lr in grid if lr != choices[cell.method]["chosen"]], False)
        # Merged into the record: a part run with fewer methods keeps the other methods' choices.
        record = Path(self.settings.out) / cells[0].corpus / "lr.json"
        recorded = json.loads(record.read_text()) if record.is_file() else {}
        if recorded | choices != recorded:
            write_json(record, recorded | choices)
        return {method: choice["chosen"] for method, choice in choices.items()}


def is_finished(out: Path) -> bool:
    """Whether the run reached its last step (its run info says how many; the last checkpoint is that)."""
    info = json.loads((out / "train_config.json").read_text()) if (out / "train_config.json").is_file() else {}
    found = checkpoints(out)  # none yet: a run that has just started
    return bool(info and found) and found[-1].name == f"step-{info.get('total_steps', -1):06d}"


def is_scored(eval_dir: Path, step: Path) -> bool:
    """Whether checkpoint `step` has a result in the sweep directory `eval_dir`."""
    return (eval_dir / step.parent.name / step.name / "metrics.json").is_file()


def best_train_accuracy(eval_dir: Path, run: Path) -> float:
    """What the rate rule compares for a candidate: its best train-split accuracy over its checkpoints."""
    from evaluate.results import read_result

    return max(read_result(eval_dir / run.name / s.name)["metrics"]["accuracy"]["train"] for s in checkpoints(run))


def main_command(config: str | None = None, **flags) -> None:
    settings = cfg.load(ReproduceConfig, config, "reproduce", **flags)
    print(cfg.describe(settings))
    from reproduce.summary import summarize

    Reproduction(settings, config).run()
    print(summarize(settings))


def main() -> None:
    run_cli(main_command, join_list_flags(sys.argv[1:], names=("--corpora", "--methods", "--seeds", "--lr_grid")))


if __name__ == "__main__":
    main()

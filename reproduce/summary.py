"""The reproduction's summary (`python -m reproduce` ends with it): per corpus, each method's final
checkpoints over seeds as mean ± the half-width of a 95% t-interval, the accuracy–retention trade-off over
checkpoints with a band over seeds, and the target-NLL and Fisher figures. Written to REPORT/results.md and
REPORT/results.json (with the resolved settings and versions) and REPORT/<corpus>-*.png."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from evaluate import echo, plots
from evaluate.report import ReportError, load_run, nll_per_run
from evaluate.results import read_result
from evaluate.retention import MIN_BASE_CORRECT, headline_average, left_out
from mixsd import config as cfg
from mixsd.atomic import write_json, write_text
from mixsd.checkpoints import checkpoints, run_info, step_dir
from mixsd.cli import join_list_flags, run_cli
from mixsd.config import to_dict
from mixsd.run_format import expand_run_dirs, read_rows
from mixsd.versions import versions
from reproduce.pipeline import Cell, ReproduceConfig, best_train_accuracy, is_finished, is_scored, sweep_dir

T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}
TITLES = {"kgfact": "KGFact", "kgfunc": "KGFunc"}
REFERENCE = "sft"  # the baseline every other method's retention is compared with, checkpoint by checkpoint


def mean_interval(values: list[float]) -> dict | None:
    """Mean and 95% t-interval over seeds (no interval from one seed); None without values."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    mean = statistics.fmean(values)
    if len(values) < 2:
        return {"mean": mean, "n": 1, "interval": None}
    half = T95.get(len(values) - 1, 1.96) * statistics.stdev(values) / len(values) ** 0.5
    return {"mean": mean, "n": len(values), "interval": [mean - half, mean + half]}


def difference_interval(values: list[float], reference: list[float]) -> dict | None:
    """Mean of `values` minus mean of `reference` (independent seeds) with a 95% interval: Welch's standard
    error and the t quantile at min(n) - 1 degrees of freedom, a conservative bound on Welch's df that needs no
    fractional-df quantile. None with fewer than 2 values on either side."""
    if min(len(values), len(reference)) < 2:
        return None
    difference = statistics.fmean(values) - statistics.fmean(reference)
    error = (statistics.variance(values) / len(values) + statistics.variance(reference) / len(reference)) ** 0.5
    half = T95.get(min(len(values), len(reference)) - 1, 1.96) * error
    return {"mean": difference, "n": [len(values), len(reference)], "interval": [difference - half, difference + half]}


def final_metrics(metrics: dict, nll_verified: float | None) -> dict[str, float | None]:
    """The numbers of one final checkpoint that the table averages over seeds."""
    retention = metrics["retention"]
    row = {f"acc {split}": value for split, value in metrics["accuracy"].items()}
    row |= {f"ret {probe}": value for probe, value in retention.items() if probe != "average"}
    row |= {f"score {probe}": entry["score"] for probe, entry in (metrics.get("held_out") or {}).items()}
    movement = metrics.get("fisher_movement") or {}
    return row | {
        "avg retention (held-out)": headline_average(metrics),
        "KL(base‖tuned)": (metrics.get("drift") or {}).get("kl_base_tuned"),
        "target NLL (verified)": nll_verified,
        "Fisher movement": movement.get("total"),
    }


def summarize(settings: ReproduceConfig, partial: bool = False) -> str:
    """The report of every method's runs; with `partial`, of those trained and scored so far, the others
    listed as pending (`python -m reproduce.summary` between parts of a long run)."""
    report_dir = Path(settings.report)
    document = {"settings": to_dict(settings), "versions": versions(), "corpora": {}}
    sections = ["# The paper's comparison on the embedded default model", _method_note(settings)]
    for corpus in settings.corpora:
        root = Path(settings.out) / corpus
        methods, pending = _scored_runs(settings, corpus, root, partial)
        document["corpora"][corpus], text = _corpus_section(corpus, methods, settings, root, report_dir)
        document["corpora"][corpus]["pending"] = pending
        if pending:
            text += "\n\nNot in the table yet (the run continues in parts): " + "; ".join(pending) + "."
        sections.append(text)
    write_json(report_dir / "results.json", document)
    write_text(report_dir / "results.md", "\n\n".join(sections) + "\n")
    return f"summary: {report_dir / 'results.md'}"


def _scored_runs(settings: ReproduceConfig, corpus: str, root: Path, partial: bool) -> tuple[dict, list[str]]:
    """{method: its chosen rate, scored runs and rate choice}, and what is pending (only with `partial`: a
    missing run or result is an error otherwise)."""
    rates = json.loads((root / "lr.json").read_text()) if (root / "lr.json").is_file() else {}
    methods, pending = {}, []
    for method in settings.methods:
        if partial and method not in rates and len(settings.lr_grid) > 1:
            so_far = _candidates_so_far(Cell(corpus, method, root), settings)
            pending.append(f"{method} (learning rate not chosen yet{so_far})")
            continue
        lr = rates.get(method, {}).get("chosen", sorted(settings.lr_grid)[0])
        cell, runs, missing = Cell(corpus, method, root), [], []
        for seed in settings.seeds:
            try:
                runs.append(_finished_run(cell.train_dir(lr, seed), sweep_dir(root, probes=True)))
            except ReportError:
                if not partial:
                    raise
                missing.append(seed)
        if missing:
            pending.append(f"{method} seed{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))}")
        if runs:
            methods[method] = {"lr": lr, "runs": runs, "lr_choice": rates.get(method)}
    return methods, pending


def _candidates_so_far(cell: Cell, settings: ReproduceConfig) -> str:
    """The rate candidates trained and scored on the train split so far, with their best train accuracy (what
    the rule will compare), as a clause of the pending line; "" before the first."""
    scored_in, seed = sweep_dir(cell.root, probes=False), settings.seeds[0]
    best = {}
    for lr in sorted(settings.lr_grid):
        run = cell.train_dir(lr, seed)
        if is_finished(run) and all(is_scored(scored_in, step) for step in checkpoints(run)):
            best[lr] = best_train_accuracy(scored_in, run)
    if not best:
        return ""
    scores = ", ".join(f"lr {lr:g} {acc:.3f}" for lr, acc in best.items())
    return f"; best train accuracy so far, seed {seed}: {scores}"


def _finished_run(directory: Path, eval_dir: Path):
    """A run trained to its last step and scored at every checkpoint (one still training is not in the table)."""
    run = load_run(directory, eval_dir)
    total = run_info(directory)["total_steps"]
    if run.results[-1][0] < total:
        raise ReportError(f"{directory}: trained to step {run.results[-1][0]} of {total} so far")
    return run


def _corpus_section(corpus: str, methods: dict, settings, root: Path, report_dir: Path) -> tuple[dict, str]:
    if not methods:
        return {"methods": {}, "curves": {}}, f"## {TITLES[corpus]}\n\nNo method has a scored run yet."
    rows, pooled_nll, fisher_groups, curves = {}, {}, {}, {}
    for method, entry in methods.items():
        finals = []
        for run in entry["runs"]:
            nll = nll_per_run([run], settings.model, root / "target-nll" / f"{run.directory.name}.json")
            verified = nll[run.label].verified if run.label in nll else []
            pooled_nll.setdefault(method, []).extend(verified)
            final = run.results[-1][1]["metrics"]
            finals.append(final_metrics(final, statistics.fmean(verified) if verified else None))
            for group, value in ((final.get("fisher_movement") or {}).get("per_group") or {}).items():
                fisher_groups.setdefault(method, {}).setdefault(group, []).append(value)
        keys = list(dict.fromkeys(k for f in finals for k in f))
        steps = [run.results[-1][0] for run in entry["runs"]]
        rows[method] = {"lr": entry["lr"], "lr_choice": entry["lr_choice"], "seeds": len(finals), "steps": steps} | {
            key: mean_interval([f.get(key) for f in finals]) for key in keys
        }
        curves[method] = _curve(entry["runs"])
    against, verified = _against_reference(methods), _verified_counts(methods)
    echoes = _echo_rows(methods, root)
    figures = {
        "trade-off": plots.tradeoff_bands(curves, report_dir / f"{corpus}-tradeoff.png"),
        "Fisher movement": plots.fisher_bars(
            {m: {g: statistics.fmean(v) for g, v in groups.items()} for m, groups in fisher_groups.items()},
            report_dir / f"{corpus}-fisher.png",
        ),
    }
    if any(pooled_nll.values()):
        figures["target NLL"] = plots.nll_cdf(
            {m: v for m, v in pooled_nll.items() if v}, report_dir / f"{corpus}-target-nll.png"
        )
    paragraphs = [
        f"## {TITLES[corpus]}",
        _table(rows),
        _base_line(sweep_dir(root, probes=True) / "base"),
        _against_table(against),
        _echo_table(echoes),
        _verified_line(verified),
        "\n".join(f"![{name}]({path.name})" for name, path in figures.items()),
    ]
    text = "\n\n".join(p for p in paragraphs if p)
    document = {"methods": rows, "curves": curves, f"against {REFERENCE}": against, "verified by attempt": verified}
    if echoes:
        document["accuracy without echo items"] = echoes
    return document, text


def _curve(runs) -> list[dict]:
    """Per k-th checkpoint of each seed: mean train accuracy and held-out retention, with the lowest and
    highest retention over seeds. Seeds of one method may differ in steps (MixSD trains its verified targets
    for the same epochs, and seeds verify different numbers), so each point lists its seeds' steps."""
    points = []
    for index in range(min(len(r.results) for r in runs)):
        metrics = [r.results[index][1]["metrics"] for r in runs]
        retention = [headline_average(m) for m in metrics]
        points.append(
            {
                "steps": [r.results[index][0] for r in runs],
                "train accuracy": statistics.fmean(m["accuracy"]["train"] for m in metrics),
                "retention": statistics.fmean(retention),
                "retention range": [min(retention), max(retention)],
            }
        )
    return points


def _against_reference(methods: dict) -> list[dict]:
    """Each method's held-out retention minus the reference method's at the same k-th checkpoint (the same
    optimizer step: every method trains the same steps), with both methods' train accuracy, so a reader sees
    where memorization is matched. Empty without the reference method."""
    if REFERENCE not in methods:
        return []
    reference = methods[REFERENCE]["runs"]
    rows = []
    for method, entry in methods.items():
        if method == REFERENCE:
            continue
        for index in range(min(len(r.results) for r in entry["runs"] + reference)):
            ours = [r.results[index][1]["metrics"] for r in entry["runs"]]
            theirs = [r.results[index][1]["metrics"] for r in reference]
            retention = [[headline_average(m) for m in side] for side in (ours, theirs)]
            rows.append(
                {
                    "method": method,
                    "steps": sorted({r.results[index][0] for r in entry["runs"] + reference}),
                    "train accuracy": [
                        statistics.fmean(m["accuracy"]["train"] for m in side) for side in (ours, theirs)
                    ],
                    "retention": [statistics.fmean(side) for side in retention],
                    "difference": difference_interval(*retention),
                }
            )
    return rows


def _echo_rows(methods: dict, root: Path) -> dict:
    """Accuracy at each method's final step (and the base model's) without the items a reply gets right by
    repeating its input (`evaluate.echo`), and per seed how many of those it got right; {} when the corpus has
    none (KGFact)."""
    echo_items = echo.echo_ids(root / "corpus")
    if not echo_items:
        return {}
    eval_dir = sweep_dir(root, probes=True)
    splits = list(read_result(eval_dir / "base")["metrics"]["accuracy"])
    base = echo.split_counts(eval_dir / "base", splits, echo_items)
    rows = {"base": {"seeds": 1} | _echo_row([base], splits)}
    for method, entry in methods.items():
        counts = [
            echo.split_counts(step_dir(eval_dir / run.directory.name, run.results[-1][0]), splits, echo_items)
            for run in entry["runs"]
        ]
        rows[method] = {"seeds": len(counts)} | _echo_row(counts, splits)
    return rows


def _echo_row(counts: list[dict], splits: list[str]) -> dict:
    return {
        split: {
            "without": mean_interval([echo.accuracy_without_echo(c)[split] for c in counts]),
            "n": counts[0][split]["rest"][1],
            "echo right": [c[split]["echo"][0] for c in counts],
            "echo n": counts[0][split]["echo"][1],
        }
        for split in splits
    }


def _echo_table(rows: dict) -> str:
    if not rows:
        return ""
    splits = [k for k in rows["base"] if k != "seeds"]
    sizes = ", ".join(
        f"{rows['base'][s]['echo n']} of {rows['base'][s]['echo n'] + rows['base'][s]['n']} {s}" for s in splits
    )
    lines = [
        f"Accuracy at the final step without the items whose answer is their own input ({sizes}): on those a "
        "reply that only repeats the input is right under the last-number rule (mean over seeds ± 95% t "
        "half-width; then how many of those items each seed got right):",
        "",
        "| method | seeds | " + " | ".join(f"{s} without (n)" for s in splits) + " | echo items right |",
        "|---|---|" + "---|" * len(splits) + "---|",
    ]
    for method, row in rows.items():
        cells = [f"{_cell(row[s]['without'])} ({row[s]['n']})" for s in splits]
        right = "; ".join(
            f"{s} {', '.join(map(str, row[s]['echo right']))} of {row[s]['echo n']}" for s in splits if row[s]["echo n"]
        )
        lines.append(f"| {method} | {row['seeds']} | " + " | ".join(cells) + f" | {right} |")
    return "\n".join(lines)


def verified_by_attempt(rows: list[dict]) -> list[int]:
    """How many verified targets the generator had after 1, 2, … attempts (a retry redraws the coins): the
    ceiling of what training on verified targets can teach, as a function of the retry budget."""
    attempts = [row["attempts"] for row in rows if row["correct"]]
    return [sum(1 for a in attempts if a <= k) for k in range(1, max((r["attempts"] for r in rows), default=0) + 1)]


def _verified_counts(methods: dict) -> dict[str, dict]:
    """Per MixSD run: its shards' verified targets by attempt (the shards its train_config.json names)."""
    counts = {}
    for method, entry in methods.items():
        for run in entry["runs"] if method.startswith("mixsd") else []:
            patterns = json.loads((run.directory / "train_config.json").read_text())["config"]["shards"]
            rows = [row for shard in expand_run_dirs(patterns) for row in read_rows(shard)]
            counts[run.directory.name] = {"rows": len(rows), "verified after attempts": verified_by_attempt(rows)}
    return counts


def _verified_line(counts: dict[str, dict]) -> str:
    if not counts:
        return ""
    parts = [
        f"{name}: {', '.join(map(str, c['verified after attempts']))} of {c['rows']}" for name, c in counts.items()
    ]
    return (
        "Verified targets after 1, 2, … attempts (each retry redraws the expert/naive coins; training uses "
        "verified targets only, so this is the ceiling of its train accuracy): " + "; ".join(parts) + "."
    )


def _against_table(rows: list[dict]) -> str:
    if not rows:  # no reference, or nothing else to compare with it
        return ""
    lines = [
        f"Held-out retention against {REFERENCE} at the same step (mean over seeds; difference with a 95% Welch "
        "interval at min(n) − 1 degrees of freedom, conservative; an interval that excludes 0 is a difference "
        "these seeds establish; intervals are per row, not adjusted for the number of rows):",
        "",
        f"| method | step | train acc (method / {REFERENCE}) | avg retention (method / {REFERENCE}) "
        "| difference [95%] |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        steps = "/".join(map(str, row["steps"]))
        acc, ret, diff = row["train accuracy"], row["retention"], row["difference"]
        interval = (
            "–"
            if diff is None or diff["interval"] is None
            else (f"{diff['mean']:+.3f} [{diff['interval'][0]:+.3f}, {diff['interval'][1]:+.3f}]")
        )
        lines.append(
            f"| {row['method']} | {steps} | {acc[0]:.3f} / {acc[1]:.3f} | {ret[0]:.3f} / {ret[1]:.3f} | {interval} |"
        )
    return "\n".join(lines)


def _base_line(base_result: Path) -> str:
    """The base model's raw scores, which every retention ratio divides by: correct / n and a Wilson interval."""
    metrics = json.loads((base_result / "metrics.json").read_text())["metrics"]
    parts = [
        f"{split} {d['correct']}/{d['n']} [{d['interval'][0]:.2f}, {d['interval'][1]:.2f}]"
        for split, d in metrics["accuracy_detail"].items()
    ]
    parts += [
        f"{probe} {round(d['base_score'] * d['n'])}/{d['n']} [{d['base_interval'][0]:.2f}, {d['base_interval'][1]:.2f}]"
        + (" (in-distribution)" if d.get("in_distribution") else "")
        + (" (under the floor: not averaged)" if left_out(d) else "")
        for probe, d in metrics["held_out"].items()
    ]
    return "Base model (correct / n, Wilson 95%): " + "; ".join(parts) + "."


def _table(rows: dict[str, dict]) -> str:
    own = ("lr", "lr_choice", "seeds", "steps")
    keys = list(dict.fromkeys(k for row in rows.values() for k in row if k not in own))
    lines = [
        "| method | lr | seeds | final step | " + " | ".join(keys) + " |",
        "|---|---|---|---|" + "---|" * len(keys),
    ]
    for method, row in rows.items():
        cells = [_cell(row.get(key)) for key in keys]
        steps = "/".join(map(str, row["steps"]))
        lines.append(f"| {method} | {row['lr']:g} | {row['seeds']} | {steps} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value: dict | None) -> str:
    if value is None:
        return "–"
    if value["interval"] is None:
        return f"{value['mean']:.3f}"
    return f"{value['mean']:.3f} ± {(value['interval'][1] - value['interval'][0]) / 2:.3f}"


def _method_note(settings: ReproduceConfig) -> str:
    return (
        f"Methods {', '.join(settings.methods)}; seeds {settings.seeds}; every number of a final checkpoint is the "
        "mean over seeds ± the half-width of a 95% t-interval. The learning rate of each method was chosen from "
        f"{settings.lr_grid} on seed {settings.seeds[0]} by the train accuracy alone (`lr.json` under each corpus's "
        "run directory: the lowest rate within "
        f"{settings.lr_tolerance} of the best rate's best train accuracy); no retention probe was read for it. "
        "`acc` columns are accuracies on the corpus's splits; `ret` columns are retention ratios (tuned / base) "
        "of capability probes, `ret in_context` being in-distribution and not in the average. The average leaves "
        f"out probes the base model answers fewer than {MIN_BASE_CORRECT} items of (their ratios move by whole "
        "items; they keep their own `ret` column and are marked in the base model's line)."
    )


def main_command(config: str | None = None, **flags) -> None:
    """The report of what is trained and scored so far (the rest listed as pending)."""
    print(summarize(cfg.load(ReproduceConfig, config, "reproduce", **flags), partial=True))


def main() -> None:
    run_cli(main_command, join_list_flags(sys.argv[1:], names=("--corpora", "--methods", "--seeds", "--lr_grid")))


if __name__ == "__main__":
    main()

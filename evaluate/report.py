"""`python -m evaluate.report --runs TRAIN_DIR [TRAIN_DIR …] --eval_dir DIR --base M --out DIR`

Gathers a sweep's results (`python -m evaluate.sweep`) into OUT/results.md and OUT/results.json (final
checkpoint of each run, every checkpoint for the trade-off) and the PNG figures: target NLL CDF, Fisher
movement, accuracy–retention trade-off and error modes. Target NLL is computed here (cheap: one forward pass
per training example) and cached in OUT/target_nll.json keyed by the shards' checksums.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from evaluate import echo, plots
from evaluate.nll import target_nll
from evaluate.results import ANSWERS, read_result
from evaluate.retention import floor_note, headline_average, headline_interval
from mixsd.atomic import write_json, write_text
from mixsd.checkpoints import RUN_INFO_FILE, checkpoints, run_info, step_dir, step_of
from mixsd.checksums import model_fingerprint
from mixsd.cli import join_list_flags, run_cli
from mixsd.errors import UserError
from mixsd.run_format import RunManifest, expand_run_dirs
from mixsd.versions import versions

PROBE_COLUMNS = ("in_context", "arithmetic", "general_knowledge", "unseen", "drift")


@dataclass
class Run:
    directory: Path
    label: str
    method: str
    lam: float | None
    shards: list[str]
    results: list[tuple[int, dict]]  # (step, metrics document), in step order


class ReportError(UserError):
    """A training run or evaluation the report needs is missing."""


def load_run(directory: Path, eval_dir: Path) -> Run:
    info = run_info(directory)
    if info is None:
        raise ReportError(f"{directory / RUN_INFO_FILE}: not found (is {directory} a training run?)")
    config = info["config"]
    lams = {s.get("lam") for s in info.get("shards", [])}
    lam = lams.pop() if len(lams) == 1 else None
    method = config["method"]
    label = {"mixsd": f"MixSD λ={lam}", "sft": "SFT", "opsd": "OPSD"}.get(method, method)
    results = []
    for checkpoint in checkpoints(directory):
        result_dir = eval_dir / directory.name / checkpoint.name
        document = read_result(result_dir)
        if document is None:
            raise ReportError(f"{result_dir}: not evaluated yet (run python -m evaluate.sweep first)")
        results.append((step_of(checkpoint), document))
    if not results:
        raise ReportError(f"{directory}: no checkpoint yet (still training?)")
    return Run(directory, label, method, lam, config["shards"], results)


def _column(table, name: str) -> list:
    """A column's values, or None per row where the shards predate it."""
    return table.column(name).to_pylist() if name in table.column_names else [None] * table.num_rows


@dataclass
class TargetNLL:
    """Per-token target NLL under the base model: over the verified targets (what training uses by default)
    and over all targets, wrong ones included."""

    verified: list[float]
    all: list[float]

    @staticmethod
    def mean(values: list[float]) -> float | None:
        return sum(values) / len(values) if values else None


def nll_per_run(runs: list[Run], base: str, cache_path: Path) -> dict[str, TargetNLL]:
    """Target NLL for each run with fixed targets (not OPSD), cached by the base model and shard checksums."""
    from transformers import AutoModelForCausalLM

    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    model, found, changed = None, {}, False
    for run in runs:
        if run.method == "opsd":
            continue
        manifests = [RunManifest.load(d) for d in expand_run_dirs(run.shards)]
        key = json.dumps([model_fingerprint(base)] + sorted(s.sha256 for m in manifests for s in m.shards))
        if cache.get(run.label, {}).get("key") != key or "rows" not in cache[run.label]:
            changed = True
            model = model or AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
            tables = [t for m in manifests for t in m.tables(["prompt_ids", "target_ids", "correct"])]
            pairs = [
                (p, t)
                for table in tables
                for p, t in zip(table.column("prompt_ids").to_pylist(), table.column("target_ids").to_pylist())
            ]
            cache[run.label] = {
                "key": key,
                "rows": target_nll(model, pairs),
                "correct": [c for table in tables for c in _column(table, "correct")],
            }
        entry = cache[run.label]
        found[run.label] = TargetNLL(
            verified=[v for row, ok in zip(entry["rows"], entry["correct"]) if ok for v in row],
            all=[v for row in entry["rows"] for v in row],
        )
    if changed:  # a cache that is already current is left as it is
        write_json(cache_path, cache)
    return found


def row_of(label: str, lam, step: int, metrics: dict, nll: TargetNLL | None, answers: tuple[Path, Path]) -> dict:
    """One table row; `answers`: the answers files of this result and of the base model's (for the average's
    interval where the stored one predates the probe floor)."""
    retention = metrics["retention"]
    movement = metrics.get("fisher_movement")
    return {
        "method": label,
        "lambda": lam,
        "step": step,
        **{f"acc_{k}": v for k, v in metrics["accuracy"].items()},
        **{f"ret_{k}": retention.get(k) for k in PROBE_COLUMNS if k in retention or k in metrics["held_out"]},
        "ret_average": headline_average(metrics),
        "acc_train_ci": metrics.get("accuracy_detail", {}).get("train", {}).get("interval"),
        "ret_average_ci": headline_interval(metrics, *answers),
        "kl": metrics["drift"]["kl_base_tuned"],
        "target_nll": TargetNLL.mean(nll.verified) if nll else None,
        "target_nll_all": TargetNLL.mean(nll.all) if nll else None,
        "fisher": movement["total"] if movement else None,
    }


def _cell(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, list):  # an interval
        return "[" + ", ".join(f"{v:.2f}" for v in value) + "]"
    if not isinstance(value, float):
        return str(value)
    return f"{value:.3g}" if value and not 0.01 <= abs(value) < 1000 else f"{value:.3f}"


def markdown_table(rows: list[dict]) -> str:
    columns = [
        ("method", "method"),
        ("lambda", "λ"),
        ("step", "step"),
        ("acc_train", "train acc"),
        ("acc_train_ci", "train acc 95% CI"),
        ("acc_paraphrase", "paraphrase"),
        ("acc_test", "test (held-out inputs)"),
        ("acc_compositional", "2-hop / chains"),
        ("acc_train_no_echo", "train acc without echo items"),
        ("acc_test_no_echo", "test without echo items"),
        ("acc_compositional_no_echo", "chains without echo items"),
        ("acc_retrieval", "retrieval"),
        ("ret_in_context", "ret. in-context (in-distribution, not averaged)"),
        ("ret_arithmetic", "ret. arithmetic"),
        ("ret_general_knowledge", "ret. general kn."),
        ("ret_unseen", "ret. unseen operations"),
        ("ret_drift", "greedy agreement"),
        ("ret_average", "avg retention (held-out)"),
        ("ret_average_ci", "avg retention 95% CI"),
        ("kl", "KL(base‖tuned)"),
        ("target_nll", "mean target NLL (verified)"),
        ("target_nll_all", "mean target NLL (all)"),
        ("fisher", "Fisher movement"),
    ]
    # A corpus has either KGFact's splits or KGFunc's: columns no row has are left out.
    columns = [(key, title) for key, title in columns if key == "method" or any(key in row for row in rows)]
    lines = ["| " + " | ".join(title for _, title in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(key)) for key, _ in columns) + " |")
    return "\n".join(lines)


def report(runs: list[str], eval_dir: str, base: str, out: str) -> str:
    eval_path, out_path = Path(eval_dir), Path(out)
    loaded = [load_run(Path(r), eval_path) for r in runs]
    base_doc = read_result(eval_path / "base")
    if base_doc is None:
        raise ReportError(f"{eval_path / 'base'}: the base model is not evaluated yet")
    nll = nll_per_run(loaded, base, out_path / "target_nll.json")
    base_answers = eval_path / "base" / ANSWERS

    def answers(run: Run, step: int) -> tuple[Path, Path]:  # a result's answers, and the base model's beside them
        return step_dir(eval_path / run.directory.name, step) / ANSWERS, base_answers

    # KGFunc's items that map their input to itself are right for a reply that only repeats it: the rows also
    # give accuracy without them (evaluate/echo.py).
    echo_items = echo.echo_ids(Path(base_doc["config"]["corpus"])) if base_doc["config"].get("corpus") else set()
    splits = list(base_doc["metrics"]["accuracy"])

    def without_echo(answers_file: Path) -> dict:
        return echo.report_columns(answers_file.parent, splits, echo_items)

    base_row = row_of("base model", None, 0, base_doc["metrics"], None, (base_answers, base_answers))
    base_row |= without_echo(base_answers)
    last = [(r, *r.results[-1]) for r in loaded]
    finals = [
        row_of(r.label, r.lam, step, doc["metrics"], nll.get(r.label), answers(r, step))
        | without_echo(answers(r, step)[0])
        for r, step, doc in last
    ]
    every = [
        row_of(r.label, r.lam, step, doc["metrics"], None, answers(r, step)) | without_echo(answers(r, step)[0])
        for r in loaded
        for step, doc in r.results
    ]
    figures = _figures(loaded, base_row, nll, out_path)
    table = markdown_table([base_row] + finals)
    text = (
        "\n\n".join(
            [
                "# Knowledge injection on the embedded default model",
                f"Base model `{base}`; evaluation settings: `{json.dumps(base_doc['config'], sort_keys=True)}`.",
                "## Final checkpoints\n\n" + table + _floor_line(base_doc["metrics"]),
                "## Every checkpoint (trade-off)\n\n" + markdown_table(every),
                "## Figures\n\n" + "\n".join(f"![{name}]({path.name})" for name, path in figures.items()),
            ]
        )
        + "\n"
    )
    write_text(out_path / "results.md", text)
    write_json(
        out_path / "results.json",
        {
            "final": [base_row] + finals,
            "checkpoints": every,
            "versions": versions(),
            "figures": [p.name for p in figures.values()],
        },
    )
    return table


def _floor_line(base_metrics: dict) -> str:
    note = floor_note(base_metrics.get("held_out") or {})
    return "\n\n" + note if note else ""


def _figures(runs: list[Run], base_row: dict, nll: dict[str, TargetNLL], out: Path) -> dict[str, Path]:
    figures = {}
    verified = {f"{label}, verified targets": v.verified for label, v in nll.items() if v.verified}
    if verified:
        figures["target NLL"] = plots.nll_cdf(verified, out / "target_nll_cdf.png")
    movement = {r.label: (r.results[-1][1]["metrics"].get("fisher_movement") or {}).get("per_group", {}) for r in runs}
    if any(movement.values()):
        figures["Fisher movement"] = plots.fisher_bars(movement, out / "fisher_movement.png")
    curves = {
        r.label: [(d["metrics"]["accuracy"]["train"], headline_average(d["metrics"])) for _, d in r.results]
        for r in runs
    }
    figures["trade-off"] = plots.tradeoff(
        curves, (base_row.get("acc_train") or 0.0, base_row["ret_average"]), out / "tradeoff.png"
    )
    modes = {r.label: r.results[-1][1]["metrics"]["error_modes"] for r in runs}
    figures["error modes"] = plots.error_modes(modes, out / "error_modes.png")
    return figures


def main_command(runs: str | list[str], eval_dir: str, base: str, out: str) -> None:
    run_list = runs.split(",") if isinstance(runs, str) else [str(r) for r in runs]
    print(report(run_list, eval_dir, base, out))


def main() -> None:
    run_cli(main_command, join_list_flags(sys.argv[1:], names=("--runs",)))


if __name__ == "__main__":
    main()

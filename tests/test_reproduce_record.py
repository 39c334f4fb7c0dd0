"""The reproduction's record: a finished run saved without weights, restored on a machine that has nothing,
is continued by `python -m reproduce` without redoing or rescoring any of it; a restore never overwrites."""

from __future__ import annotations

import json
import shutil
import tarfile

import pytest

from mixsd.checkpoints import STATE_FILE, checkpoints, has_weights
from reproduce.pipeline import best_train_accuracy, main_command
from reproduce.record import RecordError
from reproduce.record import main_command as record_command
from reproduce.summary import main_command as summary_command
from tests.test_reproduce import CONFIG


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")}


def _unfinished_copy(run, copy):
    """A run that stopped before its last step: the same files, a run info that asks for one step more."""
    shutil.copytree(run, copy)
    info = json.loads((copy / "train_config.json").read_text())
    info["total_steps"] += 1
    (copy / "train_config.json").write_text(json.dumps(info))


def test_record_saves_results_without_weights_and_restores_a_run_that_redoes_nothing(tiny_model_dir, tmp_path):
    config = tmp_path / "reproduce.yaml"
    config.write_text(
        CONFIG.format(model=tiny_model_dir, out=tmp_path).replace("[sft, opsd, mixsd-0.5]", "[mixsd-0.5]")
    )
    flags = {"config": str(config), "seeds": "0", "lr_grid": "1e-3"}
    main_command(**flags)
    root, record = tmp_path / "runs" / "kgfact", tmp_path / "report" / "kgfact-record.tar.xz"
    _unfinished_copy(root / "train" / "mixsd-0.5-lr0.001-seed0", root / "train" / "mixsd-0.5-lr0.001-seed9")
    shutil.copytree(root / "eval" / "mixsd-0.5-lr0.001-seed0", root / "eval" / "mixsd-0.5-lr0.001-seed9")
    unscored = root / "train" / "mixsd-0.5-lr0.001-seed8"  # finished, resume state kept: not scored for every role
    shutil.copytree(root / "train" / "mixsd-0.5-lr0.001-seed0", unscored)
    (checkpoints(unscored)[-1] / STATE_FILE).write_bytes(b"state")
    started = root / "train" / "mixsd-0.5-lr0.001-seed7"  # training, no checkpoint yet (another process's run)
    started.mkdir()
    shutil.copy(root / "train" / "mixsd-0.5-lr0.001-seed0" / "train_config.json", started)
    record_command("save", **flags)
    first = record.read_bytes()
    record_command("save", **flags)
    assert record.read_bytes() == first  # the same results, the same bytes: nothing new to commit

    with tarfile.open(record) as tar:
        names = tar.getnames()
    assert not [n for n in names if n.endswith((".safetensors", ".bin", ".pt"))]
    assert not [n for n in names if "seed9" in n or "seed8" in n or "seed7" in n]  # none could be continued
    shutil.rmtree(started)
    shutil.rmtree(root / "train" / "mixsd-0.5-lr0.001-seed9")
    shutil.rmtree(unscored)
    shutil.rmtree(root / "eval" / "mixsd-0.5-lr0.001-seed9")
    assert [n for n in names if n.startswith("eval/") and n.endswith("answers.jsonl")]
    last = checkpoints(root / "train" / "mixsd-0.5-lr0.001-seed0")[-1]
    assert has_weights(last)  # kept on disk for loading, recorded as pruned
    assert f"train/{last.parent.name}/{last.name}/pruned_weights.json" in names

    report = (tmp_path / "report" / "results.md").read_text()
    before = _files(root)
    shutil.rmtree(tmp_path / "runs")
    record_command("restore", **flags)
    restored = _files(root)
    outside = {p for p in before if not (p.parts[0] == "train" and p.parts[2].startswith("step-"))}
    assert {p: restored[p] for p in outside} == {p: before[p] for p in outside}
    assert {p.name for p in set(restored) - outside} == {"checkpoint.json", "pruned_weights.json"}
    stamps = {p: (root / p).stat().st_mtime_ns for p in restored}
    main_command(**flags)  # everything is reused: no target, checkpoint or result is rewritten
    assert {p: (root / p).stat().st_mtime_ns for p in stamps} == stamps
    assert not any(has_weights(step) for step in checkpoints(last.parent))  # nothing was retrained
    assert (tmp_path / "report" / "results.md").read_text() == report

    # A file that exists with other content stops the restore before anything is written.
    metrics = next(root.glob("eval/mixsd-*/step-*/metrics.json"))
    metrics.write_text("{}")
    (root / "lr.json").unlink(missing_ok=True)
    shutil.rmtree(root / "target-nll")
    with pytest.raises(RecordError, match="already exist .* other content .*metrics.json.*nothing restored"):
        record_command("restore", **flags)
    assert metrics.read_text() == "{}" and not (root / "target-nll").exists()
    with pytest.raises(RecordError, match="prune false"):
        record_command("save", prune=False, **flags)


@pytest.mark.parametrize("scored_with_probes", [True, False])
def test_a_part_that_ends_between_rate_candidates_keeps_the_scored_ones(
    tiny_model_dir, tmp_path, monkeypatch, scored_with_probes
):
    """A rate candidate is settled once scored, so the record keeps it when the part ends before the next
    candidate. Restored and then chosen, it is seed 0's final run as it stands: it was scored with every probe
    when trained. One recorded before candidates were (scored on the train split alone) is trained again for
    that scoring, its weights not being in the record. The train-split results are reused, not redone."""
    from reproduce.pipeline import Reproduction

    config = tmp_path / "reproduce.yaml"
    config.write_text(CONFIG.format(model=tiny_model_dir, out=tmp_path).replace("[sft, opsd, mixsd-0.5]", "[sft]"))
    # Tolerance 1: the lowest rate is chosen whatever the scores, so the recorded candidate is the chosen one.
    flags = {"config": str(config), "seeds": "0", "lr_grid": "1e-3,1e-2", "lr_tolerance": 1.0}
    train = Reproduction.train

    def ends_at_the_second_candidate(self, cell, corpus_dir, lr, *rest):
        if lr == 1e-2:
            raise KeyboardInterrupt
        return train(self, cell, corpus_dir, lr, *rest)

    monkeypatch.setattr(Reproduction, "train", ends_at_the_second_candidate)
    with pytest.raises(KeyboardInterrupt):
        main_command(**flags)
    monkeypatch.undo()
    root, record = tmp_path / "runs" / "kgfact", tmp_path / "report" / "kgfact-record.tar.xz"
    first = root / "train" / "sft-lr0.001-seed0"
    if not scored_with_probes:
        shutil.rmtree(root / "eval" / first.name)
    record_command("save", **flags)
    with tarfile.open(record) as tar:
        names = tar.getnames()
    assert f"train/{first.name}/train_config.json" in names
    assert [n for n in names if n.startswith(f"eval-train-split/{first.name}/") and n.endswith("metrics.json")]
    # The report between parts names the candidates scored so far with what the rule will compare.
    summary_command(**flags)
    best = best_train_accuracy(root / "eval-train-split", first)
    pending = json.loads((tmp_path / "report" / "results.json").read_text())["corpora"]["kgfact"]["pending"]
    assert pending == [f"sft (learning rate not chosen yet; best train accuracy so far, seed 0: lr 0.001 {best:.3f})"]

    shutil.rmtree(tmp_path / "runs")
    record_command("restore", **flags)
    scored = {p: p.stat().st_mtime_ns for p in root.glob("eval*/**/metrics.json")}
    assert not any(has_weights(step) for step in checkpoints(first))
    main_command(**flags)
    assert json.loads((root / "lr.json").read_text())["sft"]["chosen"] == 1e-3
    assert {p: p.stat().st_mtime_ns for p in scored} == scored  # its results reused
    # Trained again (its last checkpoint kept for loading) only if it had not been scored with every probe.
    assert has_weights(checkpoints(first)[-1]) == (not scored_with_probes)
    assert all((root / "eval" / first.name / step.name / "metrics.json").is_file() for step in checkpoints(first))
    assert (root / "train" / "sft-lr0.01-seed0" / "train_config.json").is_file()

"""The reproduction's record: every finished result of `make reproduce` without its weights, one file per corpus
(REPORT/<corpus>-record.tar.xz), so that a run done in parts on machines that do not keep their disks can be
committed, audited and continued.

    python -m reproduce.record save --config configs/reproduce.yaml      # OUT/<corpus>/ → REPORT/<corpus>-record.tar.xz
    python -m reproduce.record restore --config configs/reproduce.yaml   # and back, before `make reproduce` goes on

What it holds: the corpus, the targets (shards and manifests), each training run's config, metrics and its
checkpoints' `checkpoint.json`, every evaluation (metrics and answers), the target-NLL caches and the rate
choice. Only runs the pipeline is done with for now: trained to their last step and scored, which `prune: true`
marks by deleting their resume state (a run cut short is trained again by the next part; so is a rate candidate
recorded after its train-split scoring and chosen later, whose final scoring needs the weights). What it leaves
out: weights, optimizer state and the tokenizer copies inside checkpoints. A checkpoint
whose weights are still on disk is recorded as pruned (`pruned_weights.json`, the weights' sha256), exactly as
`prune` leaves it, so a restored run is recognized as trained and its results as its own: the pipeline redoes
none of it and scores only what is missing. Restoring never overwrites: a file that exists with other content
stops the restore before anything is written, naming it.
"""

from __future__ import annotations

import io
import json
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from mixsd import config as cfg
from mixsd.atomic import atomic_path
from mixsd.checkpoints import CHECKPOINT_INFO_FILE, STATE_FILE, checkpoints
from mixsd.checksums import PRUNED_FINGERPRINT_FILE, model_fingerprint
from mixsd.cli import join_list_flags, run_cli
from mixsd.errors import UserError
from reproduce.pipeline import ReproduceConfig, is_finished

CHECKPOINT_FILES = (CHECKPOINT_INFO_FILE, PRUNED_FINGERPRINT_FILE)  # all a checkpoint keeps in the record


class RecordError(UserError):
    pass


@dataclass(frozen=True)
class Entry:
    name: str  # path relative to OUT/<corpus>, POSIX
    data: bytes


def record_path(settings: ReproduceConfig, corpus: str) -> Path:
    return Path(settings.report) / f"{corpus}-record.tar.xz"


def entries(root: Path) -> list[Entry]:
    """What the record of OUT/<corpus> holds, sorted by name (see the module docstring)."""
    unsettled = _unsettled_runs(root)
    found = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if not path.is_file() or any(part.startswith(".") for part in relative.parts):
            continue  # locks and unfinished temporaries
        if _run_of(relative) in unsettled:
            continue
        checkpoint = _checkpoint_of(relative)
        if checkpoint is None:
            found.append(Entry(relative.as_posix(), path.read_bytes()))
        elif path.name == CHECKPOINT_INFO_FILE:
            found.append(Entry(relative.as_posix(), path.read_bytes()))
            # model_fingerprint reads pruned_weights.json where the weights are gone, else hashes them.
            fingerprint = json.dumps(model_fingerprint(path.parent), indent=2, sort_keys=True) + "\n"
            found.append(Entry((relative.parent / PRUNED_FINGERPRINT_FILE).as_posix(), fingerprint.encode()))
    return sorted(found, key=lambda e: e.name)


def _unsettled_runs(root: Path) -> set[str]:
    """Training runs the pipeline is not done with: not at their last step, or still holding resume state (it
    deletes that only once a run is scored for its last role; the chosen learning-rate candidate keeps it until
    it is scored again as seed 0's final run). Recorded as pruned they could be neither continued nor scored,
    so neither they nor their scores are recorded: the next part trains and scores them anew."""
    return {run.name for run in (root / "train").glob("*") if run.is_dir() and not _settled(run)}


def _settled(run: Path) -> bool:
    return is_finished(run) and not any((step / STATE_FILE).is_file() for step in checkpoints(run))


def _run_of(relative: Path) -> str | None:
    """The training run a file belongs to: train/<run>/… and eval*/<run>/… (evaluations are named by run)."""
    parts = relative.parts
    if len(parts) >= 3 and (parts[0] == "train" or parts[0].startswith("eval")):
        return parts[1]
    return None


def _checkpoint_of(relative: Path) -> Path | None:
    """The checkpoint directory (train/<run>/step-N) a file lies in, or None."""
    parts = relative.parts
    if len(parts) >= 4 and parts[0] == "train" and parts[2].startswith("step-"):
        return Path(*parts[:3])
    return None


def save(root: Path, record: Path) -> int:
    """Writes the record of `root`; byte-identical for identical results (sorted, no times or owners), so an
    unchanged record is no change to commit. Returns the number of files."""
    found = entries(root)
    if not found:
        raise RecordError(f"{root}: nothing to record (no finished work there)")
    record.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(record) as tmp, tarfile.open(tmp, "w:xz", format=tarfile.PAX_FORMAT) as tar:
        for entry in found:
            info = tarfile.TarInfo(entry.name)
            info.size, info.mode = len(entry.data), 0o644
            tar.addfile(info, io.BytesIO(entry.data))
    return len(found)


def read(record: Path) -> list[Entry]:
    """The record's files, each name checked to stay inside the directory it restores to."""
    found = []
    with tarfile.open(record, "r:xz") as tar:
        for member in tar.getmembers():
            name = PurePosixPath(member.name)
            if not member.isfile() or name.is_absolute() or ".." in name.parts:
                raise RecordError(f"{record}: member {member.name!r} is not a plain relative file")
            found.append(Entry(member.name, tar.extractfile(member).read()))
    return found


def restore(record: Path, root: Path) -> tuple[int, int]:
    """Writes the record's files missing under `root`; (written, already there). Checks every file first and
    writes nothing if one exists with other content."""
    found = read(record)
    conflicts = [e.name for e in found if (root / e.name).is_file() and (root / e.name).read_bytes() != e.data]
    if conflicts:
        shown = ", ".join(str(root / name) for name in conflicts[:5])
        raise RecordError(
            f"{record}: {len(conflicts)} file(s) already exist under {root} with other content ({shown}); "
            "nothing restored. Move that run directory away to restore the record."
        )
    missing = [e for e in found if not (root / e.name).is_file()]
    for entry in missing:
        target = root / entry.name
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            tmp.write_bytes(entry.data)
    return len(missing), len(found) - len(missing)


def main_command(action: str, config: str | None = None, **flags) -> None:
    settings = cfg.load(ReproduceConfig, config, "reproduce", **flags)
    for corpus in settings.corpora:
        root, record = Path(settings.out) / corpus, record_path(settings, corpus)
        if action == "save":
            if not settings.prune:
                raise RecordError("--prune false keeps every run's resume state, so no run is settled to record")
            if root.is_dir():
                print(f"record: {save(root, record)} files of {root} → {record} ({record.stat().st_size:,} bytes)")
        elif action == "restore":
            if record.is_file():
                written, present = restore(record, root)
                print(f"record: {record} → {root}: {written} files written, {present} already there")
        else:
            raise RecordError(f"unknown action {action!r}: save or restore")


def main() -> None:
    run_cli(main_command, join_list_flags(sys.argv[1:], names=("--corpora", "--methods", "--seeds", "--lr_grid")))


if __name__ == "__main__":
    main()

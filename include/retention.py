"""Retention: what the artifact root keeps, so that a year of nightly runs fits in bounded disk.

The policy names everything it removes; nothing else is touched:
- models/<run>/ of every run but the newest `keep_model_runs` (runs ordered by their newest file);
- superseded champion models (models/champion/*.keras that champion.json does not point to);
- split store entries (data/splits/<key>/) beyond the `keep_split_sets` most recently used;
- data/<run>/ scratch a run left behind (its teardown never ran, e.g. the worker died);
- hidden temporary files and folders of killed writers (`.<name>.*.tmp*`).
Always kept: every report, the history, the champion. Anything modified within `grace` (the longest
task timeout) is kept too: it may belong to a run still in flight, or a writer still writing.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from include import history

log = logging.getLogger("tl.retention")

STORE = "splits"  # data/splits/<key>/: split arrays shared by runs (tasks/split_data.py)
CHAMPION = "champion"


@dataclass(frozen=True)
class RetentionPolicy:
    """keep_model_runs and keep_split_sets are run settings (include/config.py, section Retention)."""

    keep_model_runs: int = 5
    keep_split_sets: int = 2
    # Younger files may belong to a running task; none runs longer than the longest task timeout.
    grace: timedelta = timedelta(hours=2)


@dataclass(frozen=True)
class Removal:
    path: Path
    bytes: int
    why: str


@dataclass
class Outcome:
    removed: list[Removal] = field(default_factory=list)

    @property
    def freed_bytes(self) -> int:
        return sum(r.bytes for r in self.removed)

    def summary(self, root: Path) -> dict[str, Any]:
        """Small JSON for XCom: counts and bytes, plus the removed paths relative to the root."""
        return {"removed": [str(r.path.relative_to(root)) for r in self.removed], "freed_bytes": self.freed_bytes}


def size_of(path: Path) -> int:
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def newest_mtime(path: Path) -> float:
    """The newest modification time of `path` or anything in it."""
    inside = path.rglob("*") if path.is_dir() and not path.is_symlink() else ()
    return max([path.lstat().st_mtime, *(p.lstat().st_mtime for p in inside)])


def disk_usage(root: Path) -> dict[str, int]:
    """Bytes under data/, models/ and reports/ of an artifact root."""
    return {sub: size_of(root / sub) if (root / sub).exists() else 0 for sub in ("data", "models", "reports")}


def _is_temp(path: Path) -> bool:
    return path.name.startswith(".") and ".tmp" in path.name


def _remove(path: Path, why: str, outcome: Outcome) -> None:
    try:
        size = size_of(path)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)  # read-only files in a writable folder (the split store) unlink fine
        else:
            path.unlink()
    except FileNotFoundError:  # a run's own teardown removed it first
        return
    outcome.removed.append(Removal(path, size, why))
    log.info("Retention removed %s (%d bytes): %s", path, size, why)


def _run_folders(parent: Path, reserved: set[str]) -> list[Path]:
    if not parent.is_dir():
        return []
    return [p for p in parent.iterdir() if p.is_dir() and not p.is_symlink() and p.name not in reserved
            and not _is_temp(p)]


def remove_run_scratch(root: Path, run: str) -> Outcome:
    """A finished run's own scratch: data/<run>/ (its split manifest and subset indices) and temp files
    left in its model and report folders. Nothing of any other run, the history or the champion."""
    outcome = Outcome()
    scratch = root / "data" / run
    if scratch.is_dir():
        _remove(scratch, "scratch of this run (split manifest and subsets); the run has ended", outcome)
    for folder in (root / "models" / run, root / "reports" / run):
        if folder.is_dir():
            for tmp in sorted(p for p in folder.rglob(".*") if _is_temp(p)):
                _remove(tmp, "temporary file of a killed writer in this run, which has ended", outcome)
    return outcome


def apply(root: Path, policy: RetentionPolicy, current_run: str, now: float | None = None) -> Outcome:
    """Remove what the policy names under artifact root `root`; `current_run` is always kept."""
    # One policy pass at a time: teardowns of runs ending together would race for the same folders.
    with history.locked(root / ".retention"):
        return _apply(root, policy, current_run, time.time() if now is None else now)


def _apply(root: Path, policy: RetentionPolicy, current_run: str, now: float) -> Outcome:
    cutoff = now - policy.grace.total_seconds()
    outcome = Outcome()

    def settled(path: Path) -> bool:  # nothing in it changed within the grace period
        return newest_mtime(path) < cutoff

    # Models: the newest keep_model_runs runs (the current one first), the champion always.
    runs = sorted(_run_folders(root / "models", {CHAMPION}), key=newest_mtime, reverse=True)
    kept = [p for p in runs if p.name == current_run]
    kept += [p for p in runs if p.name != current_run][: policy.keep_model_runs - len(kept)]
    for folder in runs:
        if folder not in kept and settled(folder):
            _remove(folder, f"models of a run older than the newest {policy.keep_model_runs}", outcome)
    _remove_superseded_champions(root / "models" / CHAMPION, outcome)

    # Split store: the most recently used entries (use touches the folder).
    entries = sorted(_run_folders(root / "data" / STORE, set()), key=lambda p: p.stat().st_mtime, reverse=True)
    for entry in entries[policy.keep_split_sets:]:
        if entry.stat().st_mtime < cutoff:
            _remove(entry, f"split arrays not among the {policy.keep_split_sets} most recently used", outcome)

    # Scratch a run left behind when its teardown never ran.
    for folder in _run_folders(root / "data", {STORE}):
        if folder.name != current_run and settled(folder):
            _remove(folder, "scratch of a run that ended without its teardown", outcome)

    # Temp files and folders of writers killed longer ago than any task may run.
    for sub in ("data", "models", "reports"):
        base = root / sub
        if base.is_dir():
            for tmp in sorted(p for p in base.rglob(".*") if _is_temp(p)):
                if tmp.exists() and tmp.lstat().st_mtime < cutoff:
                    _remove(tmp, f"temporary file of a writer killed over {policy.grace} ago", outcome)

    log.info("Retention freed %d bytes in %d items (policy: %s)", outcome.freed_bytes, len(outcome.removed), policy)
    return outcome


def _remove_superseded_champions(champion_dir: Path, outcome: Outcome) -> None:
    """Champion models champion.json no longer points to. Under the champion lock: a promotion (which
    copies its model in, then flips the pointer, all under that lock) is never seen half-way."""
    if not (champion_dir / "champion.json").is_file():
        return
    with history.locked(champion_dir / "champion.json"):
        current = history.read_champion(champion_dir) or {}
        keep = Path(current.get("model_path", "")).name
        for model in sorted(champion_dir.glob("*.keras")):
            if model.name != keep and not model.name.startswith("."):
                _remove(model, "superseded champion model (champion.json points elsewhere)", outcome)

"""Run history (reports/history.jsonl) and the champion pointer, safe against concurrent writers."""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include import artifacts

if TYPE_CHECKING:
    from include.report.document import RunEvidence

log = logging.getLogger("tl.history")

@contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on `<path>.lock` (flock: released even if the holder is killed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(str(path) + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def entry(m: RunEvidence) -> dict[str, Any]:
    """A run's history.jsonl line, from its metrics document (metrics.json) or the run's evidence."""
    h = m.headline
    return {"run": m.run, "run_id": m.run_id, "finished_at": m.finished_at, "n_seeds": len(h.seeds),
            "transfer_fraction": h.transfer_fraction,
            "scratch_accuracy": m.models.scratch.test_accuracy.mean,
            "transfer_accuracy": m.models.transfer.test_accuracy.mean,
            "diff_mean": h.difference.mean, "diff_low": h.difference.low,
            "diff_high": h.difference.high, "verdict_kind": h.verdict.kind,
            "data_sha256": dict(m.data.sha256), "report": f"{m.run}/report.html"}


def _lines(path: Path) -> list[tuple[int, str, dict[str, Any] | None]]:
    """(1-based line number, text, parsed object) for every non-blank line; None where it is damaged."""
    if not path.is_file():
        return []
    out: list[tuple[int, str, dict[str, Any] | None]] = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        out.append((number, line, row if isinstance(row, dict) else None))
    return out


def read_history_lines(path: Path) -> list[tuple[int, dict[str, Any] | None]]:
    """(1-based line number, parsed line) for every non-blank line; None where the line is damaged."""
    return [(number, row) for number, _, row in _lines(path)]


def read_history(path: Path) -> list[dict[str, Any]]:
    """Every readable line; a damaged one is skipped with a warning naming it."""
    rows = []
    for number, row in read_history_lines(path):
        if row is None:
            log.warning("%s line %d is damaged (not a JSON object); skipped", path, number)
        else:
            rows.append(row)
    return rows


def _rewrite(path: Path, change: Callable[[dict[str, Any]], dict[str, Any] | None],
             extra: dict[str, Any] | None = None, force: bool = False) -> None:
    """Rewrite history.jsonl (temp file, then os.replace; callers hold the lock): `change` maps each
    parsed line to its new content (None drops it); damaged lines stay verbatim for a person to see."""
    out, changed = [], extra is not None or force
    for _, line, row in _lines(path):
        if row is None:
            out.append(line)
            continue
        new = change(row)
        changed = changed or new != row
        if new is not None:
            out.append(json.dumps(new, sort_keys=True))
    if not changed:  # nothing to say: leave the file exactly as it is, damaged bytes included
        return
    if extra is not None:
        out.append(json.dumps(extra, sort_keys=True))
    artifacts.write_text(path, "".join(line + "\n" for line in out))


def append_history(path: Path, entry: dict[str, Any]) -> list[dict[str, Any]]:
    """Append one line; a re-run of the same night replaces its earlier line in place, so the
    history's order stays the order in which nights arrived (the pooled evidence's order)."""
    from include.pooled import same_night

    placed = []

    def put(row: dict[str, Any]) -> dict[str, Any] | None:
        if not same_night(row, entry):
            return row
        placed.append(row)
        return entry if len(placed) == 1 else None  # a second copy of the same night goes

    with locked(path):
        if any(same_night(row, entry) for _, _, row in _lines(path)):
            _rewrite(path, put, force=True)
        else:
            _rewrite(path, lambda r: r, extra=entry)
    return read_history(path)


def _set_failed(path: Path, run: str, reason: str | None) -> bool:
    found = []

    def flag(row: dict[str, Any]) -> dict[str, Any]:
        if row.get("run") != run:
            return row
        found.append(row)
        rest = {k: v for k, v in row.items() if k not in ("failed", "failed_reason")}
        return rest if reason is None else {**rest, "failed": True, "failed_reason": reason}

    with locked(path):
        if path.is_file():
            _rewrite(path, flag)
    return bool(found)


def mark_failed(path: Path, run: str, reason: str) -> bool:
    """Flag a run's line as failed (a task after its report failed): pooled evidence leaves it out."""
    return _set_failed(path, run, reason)


def mark_succeeded(path: Path, run: str) -> bool:
    """Clear the flag once the run succeeds (its failed task cleared and re-run): its seeds count again,
    once, at the line's place in the arrival order."""
    return _set_failed(path, run, None)


def read_champion(champion_dir: Path) -> dict[str, Any] | None:
    meta = champion_dir / "champion.json"
    return artifacts.read_json(meta) if meta.is_file() else None


def promote_if_better(champion_dir: Path, candidate: dict[str, Any], margin: float) -> dict[str, Any]:
    """Copy the candidate model in and update champion.json, only if it beats the champion by > margin.

    The whole decision runs under the champion lock, so two runs finishing together cannot both
    promote against the same old champion. A candidate that does not win touches nothing (a NaN
    accuracy never wins); a failed copy leaves the old champion.json in place.
    """
    import shutil

    with locked(champion_dir / "champion.json"):
        current = read_champion(champion_dir)
        old_sha, new_sha = (current or {}).get("data_sha256"), candidate.get("data_sha256")
        if old_sha is not None and new_sha is not None and old_sha != new_sha:
            # Accuracies on different test sets do not compare: never replace the champion on that basis.
            return {"promoted": False, "champion": current, "candidate": candidate,
                    "reason": "candidate was trained and tested on different data (sha256 differs) than the "
                              f"champion; to start a new baseline, move {champion_dir} aside"}
        if current is not None and not candidate["test_accuracy"] > current["test_accuracy"] + margin:
            return {"promoted": False, "champion": current, "candidate": candidate,
                    "reason": f"candidate {candidate['test_accuracy']:.4f} does not beat champion "
                              f"{current['test_accuracy']:.4f} by more than {margin:g}"}
        champion_dir.mkdir(parents=True, exist_ok=True)
        model_name = f"{candidate['run']}__{Path(candidate['model_path']).name}"
        with artifacts.atomic_path(champion_dir / model_name, suffix=".keras") as tmp:
            shutil.copyfile(candidate["model_path"], tmp)
        champion = {**candidate, "model_path": str(champion_dir / model_name),
                    "source_model_path": candidate["model_path"]}
        artifacts.write_json(champion_dir / "champion.json", champion)  # the pointer flips last
        reason = "no champion yet" if current is None else (
            f"candidate {candidate['test_accuracy']:.4f} beats champion {current['test_accuracy']:.4f}")
        return {"promoted": True, "champion": champion, "previous": current, "reason": reason}

"""Run history (reports/history.jsonl) and the champion pointer, safe against concurrent writers."""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from include import artifacts


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


def read_history(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rows.append(json.loads(line))
    return rows


def append_history(path: Path, entry: dict[str, Any]) -> list[dict[str, Any]]:
    """Append one line: under the lock, rewrite the whole file to a temp name and os.replace it."""
    with locked(path):
        rows = [r for r in read_history(path) if r.get("run") != entry.get("run")]  # a rerun replaces its line
        rows.append(entry)
        artifacts.write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    return rows


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
        champion = {**candidate, "model_path": str(champion_dir / model_name), "source_model_path": candidate["model_path"]}
        artifacts.write_json(champion_dir / "champion.json", champion)  # the pointer flips last
        reason = "no champion yet" if current is None else (
            f"candidate {candidate['test_accuracy']:.4f} beats champion {current['test_accuracy']:.4f}")
        return {"promoted": True, "champion": champion, "previous": current, "reason": reason}

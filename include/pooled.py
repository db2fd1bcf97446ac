"""Evidence pooled across nights: every seed of one experiment so far, under an anytime-valid interval.

Runs belong to one experiment when the settings that define it (all but seeds and operational
knobs) and the data hashes are equal; `experiment_key` is a short hash of exactly those. The
pooled observations are the per-seed paired differences (transfer - scratch test accuracy at the
headline fraction) of every history line with that key, in night order, each seed counted once
(its first night). Their confidence sequence (include/confidence_sequence.py) stays valid although
the report shows it every night; the verdict applies the nightly rules to it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from include import confidence_sequence
from include.config import ExperimentConfig

log = logging.getLogger("tl.pooled")

# Settings declared operational (include/config.py): where the files are, speed, display, the
# champion gate, alerting, and the seeds (nights differ by their seeds).
OPERATIONAL = ExperimentConfig.operational_settings()
KEY_LENGTH = 12
DIFF_BOUNDS = (-1.0, 1.0)  # a difference of two accuracies: no assumption beyond that


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:KEY_LENGTH]


def settings_key(settings: Mapping[str, Any]) -> str:
    """Hash of the settings that define the experiment (no data): the sentinel's comparison group."""
    return _digest({k: v for k, v in settings.items() if k not in OPERATIONAL})


def experiment_key(settings: Mapping[str, Any], data_sha256: Mapping[str, str]) -> str:
    """Short hash of the defining settings and the data files' content hashes."""
    return _digest({"settings": settings_key(settings), "data": dict(data_sha256)})


def night_order(row: Mapping[str, Any]) -> datetime:
    """When a history line happened as a night: its logical date, else when its report finished."""
    stamp = row.get("logical_date") or row.get("finished_at")
    when = datetime.fromisoformat(str(stamp))
    return when if when.tzinfo else when.replace(tzinfo=datetime.now().astimezone().tzinfo)


@dataclass
class Skipped:
    line: int | None  # 1-based line of history.jsonl; None for tonight's own entry
    run: str | None
    reason: str

    def message(self) -> str:
        where = f"history.jsonl line {self.line}" if self.line else "tonight's entry"
        return f"{where}{f' (run {self.run})' if self.run else ''}: {self.reason}; not pooled"


@dataclass
class Pooled:
    experiment_key: str
    method: str
    confidence: float
    margin: float
    n_seeds: int
    n_nights: int
    mean: float
    low: float
    high: float
    verdict: dict[str, str]
    nights: list[dict[str, Any]] = field(default_factory=list)  # the interval after each night
    seeds: list[int] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _usable(lineno: int | None, row: Any, key: str) -> tuple[dict[str, Any] | None, Skipped | None]:
    """The line if it can be pooled, else why not."""
    run = row.get("run") if isinstance(row, dict) else None
    if not isinstance(row, dict):
        return None, Skipped(lineno, None, "damaged: not a JSON object")
    if row.get("experiment_key") is None:
        return None, Skipped(lineno, run, "no experiment key (written before pooling existed)")
    if row["experiment_key"] != key:
        return None, Skipped(lineno, run, f"experiment key {row['experiment_key']!r} is not this experiment's {key!r}")
    if row.get("failed"):
        return None, Skipped(lineno, run, "its run failed")
    diffs = row.get("per_seed_diff")
    try:
        night_order(row)
        ok = isinstance(diffs, dict) and diffs and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)
            and DIFF_BOUNDS[0] <= v <= DIFF_BOUNDS[1] and str(int(s)) == s for s, v in diffs.items())
    except (TypeError, ValueError):
        ok = False
    if not ok:
        return None, Skipped(lineno, run, "damaged: per_seed_diff or its date is missing or not valid")
    return row, None


def _same_night(row: Mapping[str, Any], tonight: Mapping[str, Any]) -> bool:
    """The same run, or another attempt at the same scheduled night (same logical date)."""
    if row.get("run") == tonight.get("run"):
        return True
    nightly = {"scheduled", "backfill"}
    return (row.get("run_type") in nightly and tonight.get("run_type") in nightly
            and row.get("logical_date") is not None and row.get("logical_date") == tonight.get("logical_date"))


def pool(history: Iterable[tuple[int | None, Any]], tonight: Mapping[str, Any], confidence: float,
         margin: float) -> Pooled:
    """Pool every seed of tonight's experiment from `history` ((line number, parsed row or None))
    and tonight's entry. Lines of later nights (a re-run of an old night) and tonight's own earlier
    line are left out, so a re-run night pools exactly what it pooled the first time."""
    key = tonight["experiment_key"]
    rows, skipped = [], []
    until = night_order(tonight)
    for lineno, row in history:
        if isinstance(row, dict) and _same_night(row, tonight):
            continue  # this night's previous attempt: replaced by tonight
        good, why = _usable(lineno, row, key)
        if why is not None:
            log.warning("%s", why.message())
            skipped.append(why.message())
        elif night_order(good) <= until:
            rows.append(good)
    good, why = _usable(None, dict(tonight), key)
    if why is not None:
        raise ValueError(f"tonight's history entry cannot be pooled: {why.reason}")
    rows.append(good)
    rows.sort(key=night_order)

    seen: set[int] = set()
    values: list[float] = []
    seeds: list[int] = []
    ends: list[tuple[dict[str, Any], int, int]] = []
    for row in rows:
        new = 0
        for s in sorted(row["per_seed_diff"], key=int):
            if int(s) in seen:
                continue  # a seed that repeats (the sentinel, a re-typed seed) counts once
            seen.add(int(s))
            seeds.append(int(s))
            values.append(float(row["per_seed_diff"][s]))
            new += 1
        ends.append((row, len(values), new))

    alpha = 1 - confidence
    cs = confidence_sequence.confidence_sequence(np.array(values), alpha, *DIFF_BOUNDS)
    nights = [{"run": r.get("run"), "night": (r.get("logical_date") or r.get("finished_at")),
               "new_seeds": new, "n_seeds": n, "mean": float(cs.mean[n - 1]), "low": float(cs.low[n - 1]),
               "high": float(cs.high[n - 1])} for r, n, new in ends]
    last = nights[-1]
    return Pooled(experiment_key=key, method=confidence_sequence.METHOD, confidence=confidence, margin=margin,
                  n_seeds=len(values), n_nights=len(rows), mean=last["mean"], low=last["low"], high=last["high"],
                  verdict=verdict(last["mean"], last["low"], last["high"], len(values), len(rows), confidence, margin),
                  nights=nights, seeds=seeds, skipped=skipped)


def verdict_kind(low: float, high: float, margin: float) -> str:
    """The nightly verdict's rules (include/stats.verdict), on any interval."""
    if low > 0:
        return "improves"
    if low > -margin:
        return "non_inferior"
    if high < 0:
        return "worse"
    return "no_difference"


def verdict(mean: float, low: float, high: float, n_seeds: int, n_nights: int, confidence: float,
            margin: float) -> dict[str, str]:
    kind = verdict_kind(low, high, margin)
    nums = (f"mean difference {mean * 100:+.2f} points, {confidence:.0%} anytime-valid interval "
            f"[{low * 100:+.2f}, {high * 100:+.2f}] over {n_seeds} seeds from {n_nights} "
            f"night{'s' if n_nights != 1 else ''}")
    text = {
        "improves": f"Pooled: transfer learning improves test accuracy ({nums}).",
        "non_inferior": f"Pooled: transfer learning is not worse than scratch ({nums}; the lower bound is above "
                        f"the -{margin * 100:.2f}-point non-inferiority margin).",
        "worse": f"Pooled: transfer learning is worse than scratch ({nums}).",
        "no_difference": f"Pooled: no conclusion yet ({nums}); the interval still reaches below the "
                         f"-{margin * 100:.2f}-point margin and above zero. Each night narrows it.",
    }[kind]
    return {"kind": kind, "text": text}

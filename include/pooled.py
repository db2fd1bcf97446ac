"""Evidence pooled across nights: every seed of one experiment segment so far, under an anytime-valid interval.

Runs belong to one experiment when the settings that define it (all but seeds and operational
knobs; `difference_range` included) and the data hashes are equal; `experiment_key` is a short
hash of exactly those. A sentinel drift starts a new *segment* of the experiment; pooling never
crosses one. The pooled observations are the per-seed paired differences (transfer - scratch
test accuracy at the headline fraction), clipped to the declared range, in *arrival* order: the
order of the lines in history.jsonl (a re-run keeps its line's place, a backfill appends), each
seed counted once (its first line).

Each night's pool is stored with its history line ("pool": segment, seeds, differences, interval,
verdict) when it is computed and never recomputed: a re-run of a night rebuilds exactly the pool
its line stored, and the report's table of earlier nights is read from their stored pools.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import PrivateAttr

from include import confidence_sequence
from include.config import ExperimentConfig
from include.report.document import Pooled as PooledSection
from include.report.tables import pooled_verdict_text
from include.seeding import NIGHTLY_RUN_TYPES as NIGHTLY

log = logging.getLogger("tl.pooled")

# Settings declared operational (include/config.py): where the files are, speed, display, the
# champion gate, alerting, and the seeds (nights differ by their seeds).
OPERATIONAL = ExperimentConfig.operational_settings()
KEY_LENGTH = 12
GRID_STEP = 1e-5  # 0.001 points: the bounds' resolution


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:KEY_LENGTH]


def settings_key(settings: Mapping[str, Any]) -> str:
    """Hash of the settings that define the experiment (no data): the sentinel's comparison group."""
    return _digest({k: v for k, v in settings.items() if k not in OPERATIONAL})


def experiment_key(settings: Mapping[str, Any], data_sha256: Mapping[str, str]) -> str:
    """Short hash of the defining settings and the data files' content hashes."""
    return _digest({"settings": settings_key(settings), "data": dict(data_sha256)})


def night_label(row: Mapping[str, Any]) -> str | None:
    """When a history line happened as a night: its logical date, else when its report finished."""
    return row.get("logical_date") or row.get("finished_at")


def same_night(row: Any, tonight: Mapping[str, Any]) -> bool:
    """The same run, or another attempt at the same scheduled night (same logical date)."""
    if not isinstance(row, dict):
        return False
    if row.get("run") == tonight.get("run"):
        return True
    return (row.get("run_type") in NIGHTLY and tonight.get("run_type") in NIGHTLY
            and row.get("logical_date") is not None and row.get("logical_date") == tonight.get("logical_date"))


def before_tonight(history: Iterable[tuple[int | None, Any]], tonight: Mapping[str, Any]) -> tuple[list, Any]:
    """The lines that arrived before tonight: all of them, or those above tonight's earlier line."""
    rows = list(history)
    for i, (_, row) in enumerate(rows):
        if same_night(row, tonight):
            return rows[:i], row
    return rows, None


class Pooled(PooledSection):
    """metrics.json's nightly.pooled (include/report/document.Pooled), plus what tonight's history line
    keeps as its pool (`stored`: not part of the report)."""

    _stored: dict[str, Any] = PrivateAttr(default_factory=dict)

    @property
    def stored(self) -> dict[str, Any]:
        return self._stored


def _bad_pool(pool: Any) -> str | None:
    """Why a line's stored pool cannot be read, or None."""
    try:
        seeds, diffs, own = pool["seeds"], pool["diffs"], pool["own"]
        ok = (isinstance(pool["segment"], str) and len(seeds) == len(diffs) and 0 <= own <= len(seeds)
              and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
              and all(isinstance(v, (int, float)) and np.isfinite(v) for v in diffs)
              and all(isinstance(pool[k], (int, float)) for k in ("low", "high", "mean", "nights")))
    except (KeyError, TypeError):
        ok = False
    return None if ok else "its stored pool cannot be read (missing or damaged 'pool')"


def _refusal(row: Any, key: str, diff_range: float) -> str | None:
    """Why a line of this experiment cannot be pooled, or None (lines of other experiments: not ours)."""
    if not isinstance(row, dict):
        return "damaged: not a JSON object"
    if row.get("failed"):
        return "its run failed"
    if row.get("difference_range") != diff_range:
        return (f"its declared difference_range {row.get('difference_range')!r} differs from the experiment "
                f"key's {diff_range!r}")
    return _bad_pool(row.get("pool"))


@dataclass
class _Scan:
    usable: list[dict[str, Any]]
    skipped: list[str]
    latest_segment: str | None  # of the last readable line, failed or not: where a new night belongs


def _scan(history: list[tuple[int | None, Any]], key: str, diff_range: float) -> _Scan:
    """This experiment's usable lines in arrival order; every refused line named, with why."""
    ours = [(n, row) for n, row in history if not (isinstance(row, dict) and row.get("experiment_key") != key)]
    # Readable lines, flagged failed or not: a failed night leaves the pool, not its segment.
    readable = [row for _, row in ours if _rebuildable(row, key, diff_range)]
    starters = {row.get("run") for row in readable if row["pool"]["segment"] == row.get("run")}
    usable, skipped = [], []
    for lineno, row in ours:
        why = _refusal(row, key, diff_range)
        if why is None and row["pool"]["segment"] not in starters:
            why = f"unknown segment {row['pool']['segment']!r} (no line starts it)"
        if why is None:
            usable.append(row)
        else:
            skipped.append(_say(lineno, row, why))
    for s in skipped:
        log.warning("%s", s)
    known = [row for row in readable if row["pool"]["segment"] in starters]
    return _Scan(usable, skipped, known[-1]["pool"]["segment"] if known else None)


def _say(lineno: int | None, row: Any, why: str) -> str:
    run = row.get("run") if isinstance(row, dict) else None
    return f"history.jsonl line {lineno}{f' (run {run})' if run else ''}: {why}; not pooled"


def _rebuildable(row: Any, key: str, diff_range: float) -> bool:
    return (isinstance(row, dict) and row.get("experiment_key") == key and row.get("difference_range") == diff_range
            and _bad_pool(row.get("pool")) is None)


def _own(row: Mapping[str, Any]) -> list[tuple[int, float]]:
    p = row["pool"]
    k = p["own"]
    return list(zip(p["seeds"][len(p["seeds"]) - k:], p["diffs"][len(p["diffs"]) - k:], strict=True))


def pool(history: Iterable[tuple[int | None, Any]], tonight: Mapping[str, Any], confidence: float, margin: float,
         difference_range: float, drift: bool = False) -> Pooled:
    """Tonight's pool: the stored pools of its segment's earlier lines plus tonight's new seeds.

    `history`: (line number, parsed row or None) in file order. A re-run of a night (its line is
    already there) rebuilds that line's stored pool and keeps its segment; a new night joins the
    segment of the latest usable line of its experiment, or starts one (the first night, or `drift`).
    """
    key, r = tonight["experiment_key"], difference_range
    earlier, previous = before_tonight(history, tonight)
    scan = _scan(earlier, key, r)
    if _rebuildable(previous, key, r):  # a re-run (failed before or not): rebuild the line's stored pool
        segment = previous["pool"]["segment"]
        started = previous["pool"].get("started")
        p = previous["pool"]
        base = list(zip(p["seeds"][:len(p["seeds"]) - p["own"]], p["diffs"][:len(p["diffs"]) - p["own"]], strict=True))
        nights_before = p["nights"] - (1 if p["own"] else 0)
    else:
        latest = scan.latest_segment
        segment = tonight["run"] if drift or latest is None else latest
        started = (None if segment != tonight["run"] else
                   "first night of this experiment" if latest is None else "sentinel drift")
        base, nights_before, seen = [], 0, set()
        for row in (u for u in scan.usable if u["pool"]["segment"] == segment):
            new = [(s, v) for s, v in _own(row) if s not in seen]
            seen.update(s for s, _ in new)
            base += new
            nights_before += bool(new)
    have = {s for s, _ in base}
    own = [(int(s), float(v)) for s, v in sorted(tonight["per_seed_diff"].items(), key=lambda kv: int(kv[0]))
           if int(s) not in have]
    values = base + own
    if not values:
        raise ValueError("tonight's history entry has no per-seed difference to pool")
    clipped, n_outside = confidence_sequence.clip(np.array([v for _, v in values]), -r, r)
    cs = confidence_sequence.confidence_sequence(clipped, 1 - confidence, -r, r, grid_step=GRID_STEP)
    n_nights = nights_before + bool(own)
    mean, low, high = float(cs.mean[-1]), float(cs.low[-1]), float(cs.high[-1])
    v = verdict(mean, low, high, len(values), n_nights, confidence, margin, r, n_outside)
    stored = {"segment": segment, "seeds": [s for s, _ in values], "diffs": [d for _, d in values], "own": len(own),
              "nights": n_nights, "mean": mean, "low": low, "high": high, "verdict": v["kind"],
              "n_outside": n_outside, **({"started": started} if started else {})}
    tonight_row = {**tonight, "pool": stored}
    same = [row for row in scan.usable if row["pool"]["segment"] == segment]
    p = Pooled(experiment_key=key, segment=segment, method=confidence_sequence.METHOD, confidence=confidence,
               margin=margin, difference_range=r, n_seeds=len(values), n_nights=n_nights, n_outside=n_outside,
               mean=mean, low=low, high=high, verdict=v, nights=[_night(row) for row in [*same, tonight_row]],
               segments=_segments([*scan.usable, tonight_row]), seeds=stored["seeds"], skipped=scan.skipped)
    p._stored = stored
    return p


def _night(row: Mapping[str, Any]) -> dict[str, Any]:
    p = row["pool"]
    return {"run": row.get("run"), "night": night_label(row), "new_seeds": p["own"], "n_seeds": len(p["seeds"]),
            "counts_as_night": p["own"] > 0, "mean": p["mean"], "low": p["low"], "high": p["high"],
            "verdict": p["verdict"]}


def _segments(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each segment of the experiment, with its latest stored interval, in the order they started."""
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        p = row["pool"]
        seg = out.setdefault(p["segment"], {"segment": p["segment"], "started": None})
        seg["started"] = p.get("started") or seg["started"]
        seg.update(last_run=row.get("run"), n_seeds=len(p["seeds"]), n_nights=p["nights"], mean=p["mean"],
                   low=p["low"], high=p["high"], verdict=p["verdict"], below_zero=p["high"] < 0)
    return list(out.values())


def verdict_kind(low: float, high: float, margin: float) -> str:
    """The nightly verdict's rules (include/stats.verdict), on any interval."""
    if low > 0:
        return "improves"
    if low > -margin:
        return "non_inferior"
    if high < 0:
        return "worse"
    return "no_difference"


def verdict(mean: float, low: float, high: float, n_seeds: int, n_nights: int, confidence: float, margin: float,
            difference_range: float, n_outside: int = 0) -> dict[str, Any]:
    kind = verdict_kind(low, high, margin)
    return {"kind": kind, "below_zero": bool(high < 0),
            "text": pooled_verdict_text(kind, mean, low, high, n_seeds, n_nights, confidence, margin,
                                        difference_range, n_outside)}

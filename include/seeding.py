"""Which seeds a run trains: fresh ones every scheduled night, the form's on a manual trigger, plus a sentinel.

A scheduled (or backfilled) run derives its seeds from its logical date alone, so clearing and
re-running a night trains exactly the same models. Night `d` (whole UTC days since 2000-01-01)
owns the block `[FIRST_DRAWN + d * MAX_SEEDS_PER_NIGHT, ... + MAX_SEEDS_PER_NIGHT)` and takes
the first `n` seeds of it: two different nights can never share a seed, by construction, and no
drawn seed can equal a hand-typed small seed or the sentinel.

Every run also trains the fixed SENTINEL_SEED. With the same data, code and packages it must give
the same accuracies bit for bit every night; a difference is environment drift.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

from include.config import ConfigError
from include.settings import NIGHTLY_SEEDS_FROM, RESERVED_SEEDS

# The seed notebook's seed: manual runs with the default form already train it.
SENTINEL_SEED = 42
FIRST_DRAWN = NIGHTLY_SEEDS_FROM  # above every seed a person may type (the form refuses more); below 2**31
MAX_SEEDS_PER_NIGHT = 1_000
EPOCH = date(2000, 1, 1)
# Run types that stand for "a night of the schedule": each gets its own fresh seeds.
NIGHTLY_RUN_TYPES = frozenset({"scheduled", "backfill"})
_LAST_NIGHT = (2**31 - FIRST_DRAWN) // MAX_SEEDS_PER_NIGHT - 1


class SeedingError(ConfigError):
    """The run's seeds cannot be derived (too many seeds per night, a date out of range): permanent."""


def run_type_name(run_type: Any) -> str:
    """'scheduled', 'manual', ... from a DagRunType enum member or its string value."""
    return str(getattr(run_type, "value", run_type) or "manual").lower()


def night_index(logical_date: datetime | date) -> int:
    """Whole UTC days from EPOCH to the logical date: one number per night of the schedule."""
    if isinstance(logical_date, datetime):
        if logical_date.tzinfo is not None:
            logical_date = logical_date.astimezone(UTC)
        logical_date = logical_date.date()
    return (logical_date - EPOCH).days


def nightly_seeds(logical_date: datetime | date, n: int) -> tuple[int, ...]:
    """The `n` seeds of the night of `logical_date`: disjoint from every other night's."""
    if not 1 <= n <= MAX_SEEDS_PER_NIGHT:
        raise SeedingError(f"a night trains 1 to {MAX_SEEDS_PER_NIGHT} seeds; the seeds param asks for {n}. "
                           "Give fewer seeds (their count, not their values, sets how many a night draws).")
    night = night_index(logical_date)
    if not 0 <= night <= _LAST_NIGHT:
        raise SeedingError(f"logical date {logical_date} is outside the nights seeds can be drawn for "
                           f"({EPOCH} onwards, {_LAST_NIGHT} nights).")
    first = FIRST_DRAWN + night * MAX_SEEDS_PER_NIGHT
    return tuple(range(first, first + n))


def run_seeds(form_seeds: Sequence[int], run_type: Any, logical_date: datetime | date | None,
              sentinel: int = SENTINEL_SEED) -> tuple[int, ...]:
    """The seeds this run trains, sentinel included (last, and once).

    Nightly runs (scheduled, backfill) draw len(form_seeds) fresh seeds from their logical date;
    any other run (manual, asset-triggered) keeps the seeds typed in the form.
    """
    kind = run_type_name(run_type)
    if kind in NIGHTLY_RUN_TYPES:
        if logical_date is None:
            raise SeedingError(f"a {kind} run has no logical date to draw its seeds from")
        seeds = nightly_seeds(logical_date, len(form_seeds))
    else:
        seeds = tuple(int(s) for s in form_seeds)
        reserved = [s for s in seeds if s >= FIRST_DRAWN]
        if reserved:  # the form refuses them too; a conf sent around the form lands here
            raise SeedingError(f"seeds {reserved} cannot be typed: {RESERVED_SEEDS}.")
    return seeds if sentinel in seeds else (*seeds, sentinel)


def seeds_from_context(form_seeds: Sequence[int], context: Any, sentinel: int = SENTINEL_SEED) -> tuple[int, ...]:
    """run_seeds() for the running Airflow task: run type and logical date from its DagRun."""
    dag_run = context["dag_run"]
    return run_seeds(form_seeds, getattr(dag_run, "run_type", None), getattr(dag_run, "logical_date", None),
                     sentinel)


def seed_chunks(seeds: Sequence[int], per_task: int) -> list[list[int]]:
    """The seeds in order, cut into chunks of `per_task` (seeds_per_task): chunk i is what map index i
    of every mapped training task trains, as one batch."""
    n = max(1, per_task)
    return [list(seeds[i:i + n]) for i in range(0, len(seeds), n)]

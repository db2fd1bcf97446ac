"""Seeds per run: nightly runs draw fresh, disjoint seeds from their logical date; manual runs keep the form's."""

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from include import seeding
from include.seeding import SENTINEL_SEED, SeedingError, nightly_seeds, run_seeds


def test_a_night_gets_the_same_seeds_on_every_rerun_and_any_hour_of_its_day():
    night = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)
    assert nightly_seeds(night, 5) == nightly_seeds(night, 5)
    assert nightly_seeds(night, 5) == nightly_seeds(night.replace(hour=23, minute=59), 5)
    assert len(set(nightly_seeds(night, 5))) == 5


def test_seeds_never_repeat_across_nights_even_when_the_seed_count_changes():
    start = date(2026, 1, 1)
    seen: dict[int, date] = {}
    for d in range(400):
        night = start + timedelta(days=d)
        for s in nightly_seeds(night, seeding.MAX_SEEDS_PER_NIGHT if d % 50 == 0 else 1 + d % 7):
            assert s not in seen, f"seed {s} drawn on {seen.get(s)} and again on {night}"
            seen[s] = night
    assert min(seen) >= seeding.FIRST_DRAWN > SENTINEL_SEED and max(seen) < 2**31


def test_logical_date_is_read_in_utc():
    # 01:30 on Dec 1 in UTC+2 is still Nov 30 in UTC: the same night.
    local = datetime(2026, 12, 1, 1, 30, tzinfo=timezone(timedelta(hours=2)))
    assert nightly_seeds(local, 3) == nightly_seeds(date(2026, 11, 30), 3)


def test_scheduled_and_backfill_draw_manual_keeps_the_form_and_the_sentinel_is_added_once():
    night = datetime(2026, 11, 30, 2, tzinfo=UTC)
    scheduled = run_seeds([42, 1, 2], "scheduled", night)
    assert scheduled == (*nightly_seeds(night, 3), SENTINEL_SEED)
    assert run_seeds([42, 1, 2], "backfill", night) == scheduled
    assert run_seeds([42, 1, 2], "manual", night) == (42, 1, 2)  # the sentinel is already there
    assert run_seeds([5, 6], "manual", None) == (5, 6, SENTINEL_SEED)
    assert run_seeds([5, 6], "asset_triggered", night) == (5, 6, SENTINEL_SEED)


def test_run_type_enum_members_are_understood():
    from airflow.utils.types import DagRunType

    night = date(2026, 11, 30)
    assert run_seeds([1], DagRunType.SCHEDULED, night) == (*nightly_seeds(night, 1), SENTINEL_SEED)
    assert run_seeds([1], DagRunType.MANUAL, night) == (1, SENTINEL_SEED)


@pytest.mark.parametrize("n", [0, seeding.MAX_SEEDS_PER_NIGHT + 1])
def test_a_seed_count_outside_the_nightly_block_is_refused_with_the_fix(n):
    with pytest.raises(SeedingError, match=r"Give fewer seeds|1 to"):
        nightly_seeds(date(2026, 11, 30), n)


def test_a_date_before_the_epoch_or_a_nightly_run_without_a_date_is_refused():
    with pytest.raises(SeedingError, match="outside"):
        nightly_seeds(date(1999, 12, 31), 1)
    with pytest.raises(SeedingError, match="no logical date"):
        run_seeds([1], "scheduled", None)

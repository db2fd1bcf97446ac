"""The champion regression check that decides the regression alert."""

from datetime import UTC, datetime
from types import SimpleNamespace

from tasks.nightly import regression, run_info

CANDIDATE = {"test_accuracy": 0.950, "data_sha256": {"test_images": "aa"}}


def test_regression_beyond_the_margin_alerts_within_it_does_not():
    champion = {"test_accuracy": 0.965, "data_sha256": {"test_images": "aa"}, "run": "scheduled__old"}
    out = regression(CANDIDATE, champion, margin=0.01)
    assert out["status"] == "regressed" and round(out["gap"], 6) == -0.015 and out["champion_run"] == "scheduled__old"
    assert regression(CANDIDATE, champion, margin=0.02)["status"] == "ok"
    assert regression(CANDIDATE, {**champion, "test_accuracy": 0.94}, margin=0.0)["status"] == "ok"


def test_no_champion_or_a_champion_on_other_data_is_not_compared():
    assert regression(CANDIDATE, None, 0.01)["status"] == "no_champion"
    other = {"test_accuracy": 0.99, "data_sha256": {"test_images": "bb"}}
    assert regression(CANDIDATE, other, 0.01)["status"] == "other_data"


def test_run_info_reads_the_dag_run_and_defaults_to_manual():
    when = datetime(2026, 11, 30, 2, tzinfo=UTC)
    assert run_info({"dag_run": SimpleNamespace(run_type="scheduled", logical_date=when)}) == {
        "run_type": "scheduled", "logical_date": "2026-11-30T02:00:00+00:00"}
    assert run_info(None) == {"run_type": "manual", "logical_date": None}

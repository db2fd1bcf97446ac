"""Pooled evidence across nights and the sentinel drift check, on hand-written history lines."""

import json
import logging

import numpy as np
import pytest

from include import drift, history, pooled
from include.confidence_sequence import confidence_sequence
from include.report import tables

SETTINGS = {"seeds": [42, 1], "fractions": [0.7], "scratch_epochs": 20, "noninferiority_margin": 0.005,
            "confidence": 0.95, "data_dir": "/a", "max_replicas_per_graph": 3,
            "architecture": "mlp", "difference_range": 0.03}
SHA = {"train_images": "aa", "test_images": "bb"}
KEY = pooled.experiment_key(SETTINGS, SHA)
SKEY = pooled.settings_key(SETTINGS)
ENV = {"package numpy": "2.4.6", "python": "3.11.2", "data train_images": "aa"}
R = 0.03


def line(run, night, diffs, key=KEY, sentinel=None, env=ENV, **extra):
    return {"run": run, "logical_date": f"2026-11-{night:02d}T02:00:00+00:00", "experiment_key": key,
            "settings_key": SKEY, "per_seed_diff": {str(s): d for s, d in diffs.items()}, "difference_range": R,
            "run_type": "scheduled", "sentinel": sentinel, "environment": env, **extra}


def numbered(rows):
    return list(enumerate(rows, start=1))


def arrive(path, tonight, drift_=False):
    """What compare_report does: pool against the history file, store the pool with the line, append it."""
    p = pooled.pool(history.read_history_lines(path), tonight, 0.95, 0.005, R, drift=drift_)
    history.append_history(path, {**tonight, "pool": p.stored})
    return p


def stored(path):
    return {r["run"]: r["pool"] for r in history.read_history(path)}


def test_experiment_key_ignores_seeds_and_operational_knobs_but_not_settings_range_or_data():
    assert pooled.experiment_key({**SETTINGS, "seeds": [9], "data_dir": "/b", "max_replicas_per_graph": 1},
                                  SHA) == KEY
    assert pooled.experiment_key({**SETTINGS, "scratch_epochs": 21}, SHA) != KEY
    assert pooled.experiment_key({**SETTINGS, "difference_range": 0.05}, SHA) != KEY
    assert pooled.experiment_key({**SETTINGS, "architecture": "cnn"}, SHA) != KEY
    assert pooled.experiment_key(SETTINGS, {**SHA, "test_images": "cc"}) != KEY
    assert len(KEY) == pooled.KEY_LENGTH and all(c in "0123456789abcdef" for c in KEY)


def test_every_seed_pooled_once_in_arrival_order_with_its_interval_stored(tmp_path):
    path = tmp_path / "history.jsonl"
    arrive(path, line("n2", 2, {1000: 0.01, 1001: 0.02, 42: 0.005}))
    arrive(path, line("n1", 1, {2000: -0.01, 42: 0.005}))  # a backfill of an earlier night: arrives second
    p = arrive(path, line("n3", 3, {3000: 0.03, 42: 0.005}))
    assert p.seeds == [42, 1000, 1001, 2000, 3000]  # arrival order; the sentinel 42 counted once
    assert p.n_seeds == 5 and p.n_nights == 3 and p.segment == "n2"
    assert [n.run for n in p.nights] == ["n2", "n1", "n3"] and [n.n_seeds for n in p.nights] == [3, 4, 5]
    cs = confidence_sequence(np.array([0.005, 0.01, 0.02, -0.01, 0.03]), 0.05, -R, R, grid_step=pooled.GRID_STEP)
    assert (p.low, p.high) == (cs.low[-1], cs.high[-1]) and p.mean == pytest.approx(0.011)
    assert stored(path)["n3"]["low"] == p.low and stored(path)["n3"]["seeds"] == p.seeds


def test_earlier_nights_never_change_and_a_rerun_reproduces_its_own_pool(tmp_path):
    path = tmp_path / "history.jsonl"
    for n, d in ((1, {1000: 0.004, 42: 0.001}), (2, {2000: 0.002}), (3, {3000: -0.003})):
        arrive(path, line(f"n{n}", n, d))
    before = stored(path)
    rerun = arrive(path, line("n2", 2, {2000: 0.002}))  # night 2 cleared and re-run after night 3
    assert stored(path) == before  # every stored pool, night 2's included, as it was
    assert rerun.stored == before["n2"] and [n.run for n in rerun.nights] == ["n1", "n2"]
    assert [json.loads(x)["run"] for x in path.read_text().splitlines()] == ["n1", "n2", "n3"]  # kept its place
    p4 = arrive(path, line("n4", 4, {4000: 0.001}))
    assert [(n.run, n.low, n.high) for n in p4.nights[:3]] == [
        (r, before[r]["low"], before[r]["high"]) for r in ("n1", "n2", "n3")]  # shown as stored


def test_a_failed_run_leaves_the_pool_and_once_it_succeeds_counts_once_at_its_place(tmp_path):
    path = tmp_path / "history.jsonl"
    arrive(path, line("n1", 1, {1000: 0.01, 42: 0.0}))
    arrive(path, line("n2", 2, {2000: 0.02, 42: 0.0}))
    history.mark_failed(path, "n2", "promote_champion failed")
    p3 = arrive(path, line("n3", 3, {3000: 0.03, 42: 0.0}))
    assert p3.seeds == [42, 1000, 3000] and p3.n_nights == 2
    assert any("line 2 (run n2): its run failed" in s for s in p3.skipped)
    assert history.mark_succeeded(path, "n2") is True  # its promote task cleared and re-run: the run succeeded
    assert "failed" not in history.read_history(path)[1]
    p4 = arrive(path, line("n4", 4, {4000: 0.04, 42: 0.0}))
    assert p4.seeds == [42, 1000, 2000, 3000, 4000] and p4.n_nights == 4 and not p4.skipped


def test_a_failed_first_night_leaves_the_pool_but_not_the_segment_it_started(tmp_path):
    path = tmp_path / "history.jsonl"
    arrive(path, line("n1", 1, {1000: 0.01, 42: 0.0}))
    history.mark_failed(path, "n1", "promote_champion failed")
    p2 = arrive(path, line("n2", 2, {2000: 0.02}))
    assert p2.segment == "n1" and p2.seeds == [2000] and p2.n_nights == 1
    assert len(p2.skipped) == 1 and "its run failed" in p2.skipped[0]
    history.mark_succeeded(path, "n1")
    p3 = arrive(path, line("n3", 3, {3000: 0.03}))
    assert p3.segment == "n1" and p3.seeds == [42, 1000, 2000, 3000] and p3.n_nights == 3 and not p3.skipped


def test_a_run_adding_no_new_seed_is_not_a_night(tmp_path):
    path = tmp_path / "history.jsonl"
    arrive(path, line("m1", 1, {1: 0.01, 42: 0.0}, run_type="manual", logical_date=None))
    p = arrive(path, line("m2", 1, {1: 0.01, 42: 0.0}, run_type="manual", logical_date=None))
    assert p.n_nights == 1 and p.n_seeds == 2 and p.nights[-1].counts_as_night is False
    assert "1 night)" in p.verdict.text and "not a night" in tables.pooled_rows(p)[-1][2]


def test_sentinel_drift_starts_a_segment_and_pooling_never_crosses_it(tmp_path):
    path = tmp_path / "history.jsonl"
    arrive(path, line("n1", 1, {1000: 0.02, 42: 0.0}))
    arrive(path, line("n2", 2, {2000: 0.02}))
    p3 = arrive(path, line("n3", 3, {3000: -0.01, 42: 0.001}), drift_=True)
    assert p3.segment == "n3" and p3.seeds == [42, 3000] and p3.n_nights == 1
    p4 = arrive(path, line("n4", 4, {4000: -0.02}))
    assert p4.segment == "n3" and p4.seeds == [42, 3000, 4000] and [n.run for n in p4.nights] == ["n3", "n4"]
    assert [(g.segment, g.started, g.n_seeds) for g in p4.segments] == [
        ("n1", "first night of this experiment", 3), ("n3", "sentinel drift", 3)]
    assert len(tables.segment_rows(p4)) == 3


def test_bad_lines_are_refused_naming_the_line_and_nothing_is_pooled_from_them(tmp_path, caplog):
    path = tmp_path / "history.jsonl"
    arrive(path, line("n1", 1, {1000: 0.01}))
    good = history.read_history(path)[0]
    bad = [
        '{"run": "broken", "per_seed_diff": {"1": 0.',                                  # line 2: truncated
        json.dumps({**good, "run": "seg", "pool": {**good["pool"], "segment": "nowhere", "own": 1,
                                                   "seeds": [5000], "diffs": [0.02]}}),  # line 3
        json.dumps({**good, "run": "range", "difference_range": 0.05}),                  # line 4
        json.dumps({**good, "run": "nopool", "pool": {"seeds": "x"}}),                   # line 5
        json.dumps({**good, "run": "failed", "failed": True}),                          # line 6
        json.dumps({**good, "run": "other", "experiment_key": "0123456789ab"}),         # another experiment
    ]
    with path.open("a") as f:
        f.write("\n".join(bad) + "\n")
    before = path.read_bytes()
    caplog.set_level(logging.WARNING, logger="tl.pooled")
    p = pooled.pool(history.read_history_lines(path), line("n2", 2, {2000: 0.02}), 0.95, 0.005, R)
    assert p.seeds == [1000, 2000] and len(p.skipped) == 5
    said = " | ".join(p.skipped)
    for n, why in ((2, "damaged"), (3, "unknown segment 'nowhere'"), (4, "difference_range 0.05 differs"),
                   (5, "stored pool cannot be read"), (6, "its run failed")):
        assert f"history.jsonl line {n}" in said and why in said
    assert "0123456789ab" not in said  # another experiment's line is not this pool's business
    assert said == " | ".join(r.getMessage() for r in caplog.records)
    assert path.read_bytes() == before  # pooling reads only: every stored pool untouched


def test_differences_outside_the_declared_range_are_clipped_counted_and_said():
    p = pooled.pool([], line("n1", 1, {1: 0.05, 2: -0.2, 3: 0.01}), 0.95, 0.005, R)
    assert p.n_outside == 2 and p.stored["diffs"] == [0.05, -0.2, 0.01]  # the raw values are kept
    assert p.mean == pytest.approx((0.03 - 0.03 + 0.01) / 3)
    assert "2 outside that range were clipped" in p.verdict.text and "clipped differences" in p.verdict.text


def test_pooled_verdict_uses_the_nightly_rules_and_reads_as_words():
    from include import stats

    for low, high in ((0.001, 0.02), (-0.004, 0.01), (-0.004, -0.001), (-0.02, -0.01), (-0.02, 0.01)):
        nightly = stats.verdict({"mean": (low + high) / 2, "low": low, "high": high, "n": 5, "confidence": 0.95},
                                0.005, 0.3)
        assert pooled.verdict_kind(low, high, 0.005) == nightly["kind"]
        v = pooled.verdict((low + high) / 2, low, high, 30, 6, 0.95, 0.005, R)
        words = tables.verdict_words(v["kind"], v["below_zero"])
        assert words in tables.VERDICT_WORDS.values() or words.endswith("(inside the margin)")  # never a raw key
    below = pooled.verdict(-0.0025, -0.004, -0.001, 30, 6, 0.95, 0.005, R)
    assert below["kind"] == "non_inferior" and below["below_zero"] is True
    assert "below zero" in below["text"] and "by less than the margin" in below["text"]
    assert tables.verdict_words("non_inferior", True) == "not worse than scratch, but below zero (inside the margin)"
    assert tables.verdict_words("no_difference") == "no conclusion yet"


def test_figure_marks_zero_and_the_margin(monkeypatch):
    from include.report import figures

    drawn = []
    monkeypatch.setattr(figures, "_png", lambda fig: drawn.append(fig) or "png")
    first = line("n1", 1, {1000: 0.01, 1001: 0.0})
    first["pool"] = pooled.pool([], first, 0.95, 0.005, R).stored
    p = pooled.pool(numbered([first]), line("n2", 2, {2000: 0.02}), 0.95, 0.005, R)
    assert figures.figure_pooled(p) == "png"
    ax = drawn[0].axes[0]
    hlines = sorted(round(line.get_ydata()[0], 6) for line in ax.get_lines()
                    if list(line.get_xdata()) == [0, 1])  # axhline spans the axes: x in axes coordinates
    assert hlines == [-0.5, 0.0]
    assert len(ax.collections) >= 1  # the interval band (and the error bars)
    assert "2 seeds" in ax.get_xticklabels()[0].get_text()


def sentinel(acc_t, acc_s=0.96):
    return {"seed": 42, "accuracies": {"scratch@1": acc_s, "transfer@0.7": acc_t}}


def test_sentinel_reproduced_bit_for_bit():
    prev = line("n1", 1, {42: 0.001}, sentinel=sentinel(0.9635))
    out = drift.check(numbered([prev]), line("n2", 2, {42: 0.001}, sentinel=sentinel(0.9635)))
    assert out["status"] == "reproduced" and out["previous_run"] == "n1"


def test_sentinel_drift_names_the_package_that_changed_or_says_nothing_recorded_changed():
    prev = line("n1", 1, {42: 0.001}, sentinel=sentinel(0.9635), env={**ENV, "package numpy": "2.4.5"})
    older = line("n0", 0 + 1, {42: 0.001}, sentinel=sentinel(0.5))
    older["logical_date"] = "2026-10-01T02:00:00+00:00"
    tonight = line("n2", 2, {42: 0.0015}, sentinel=sentinel(0.9640))
    out = drift.check(numbered([older, prev]), tonight)
    assert out["status"] == "drift" and out["previous_run"] == "n1"  # the latest earlier night
    assert out["accuracy_changes"] == {"transfer@0.7": {"previous": 0.9635, "tonight": 0.964}}
    assert out["environment_changes"] == ["package numpy: 2.4.5 -> 2.4.6"]
    assert "package numpy: 2.4.5 -> 2.4.6" in out["text"]
    out = drift.check(numbered([{**prev, "environment": ENV}]), tonight)
    assert out["status"] == "drift" and out["text"].endswith("Nothing recorded changed.")


def test_drift_ignores_other_settings_failed_and_lines_that_arrived_after_tonight():
    tonight = line("n2", 2, {42: 0.0}, sentinel=sentinel(0.9635))
    rows = [{**line("x", 1, {42: 0.0}, sentinel=sentinel(0.1)), "settings_key": "other"},
            line("f", 1, {42: 0.0}, sentinel=sentinel(0.2), failed=True), None,
            tonight, line("later", 3, {42: 0.0}, sentinel=sentinel(0.3))]  # tonight is a re-run: 'later' came after
    assert drift.check(numbered(rows), tonight)["status"] == "no_reference"


def test_drift_compares_with_the_line_that_arrived_last_whatever_its_logical_date():
    manual = {**line("manual", 9, {42: 0.0}, sentinel=sentinel(0.9635)), "run_type": "manual", "logical_date": None}
    old = line("n1", 1, {42: 0.0}, sentinel=sentinel(0.5))
    out = drift.check(numbered([old, manual]), line("n2", 2, {42: 0.0}, sentinel=sentinel(0.9635)))
    assert out["status"] == "reproduced" and out["previous_run"] == "manual"


def test_sentinel_record_and_environment_from_run_results():
    results = [{"model": "scratch", "fraction": 1.0, "seed": 42, "test_accuracy": 0.96},
               {"model": "transfer", "fraction": 0.7, "seed": 42, "test_accuracy": 0.965},
               {"model": "transfer", "fraction": 0.7, "seed": 7, "test_accuracy": 0.5}]
    assert drift.sentinel_record(42, results) == sentinel(0.965)
    assert drift.sentinel_record(99, results) is None
    env = drift.environment({"packages": {"numpy": "2.4.6"}, "python": "3.11.2", "git_commit": "abc",
                             "git_dirty": False}, {"train_images": "aa"})
    assert env == {"package numpy": "2.4.6", "python": "3.11.2", "git commit": "abc",
                   "code changed since commit": "False", "data train_images": "aa"}


def test_history_keeps_damaged_lines_and_marks_a_failed_run(tmp_path):
    path = tmp_path / "history.jsonl"
    history.append_history(path, {"run": "a", "x": 1})
    with path.open("a") as f:
        f.write("{not json\n")
    history.append_history(path, {"run": "b", "x": 2})
    assert history.mark_failed(path, "a", "promote_champion failed") is True
    assert history.mark_failed(path, "zzz", "") is False
    lines = path.read_text().splitlines()
    assert lines[1] == "{not json" and len(lines) == 3
    assert json.loads(lines[0])["failed"] is True and "failed" not in json.loads(lines[2])


def test_marking_a_run_that_has_no_line_leaves_the_history_byte_for_byte(tmp_path):
    # A failed run that never wrote a line must not rewrite the file: undecodable bytes would be lost.
    path = tmp_path / "history.jsonl"
    history.append_history(path, {"run": "a", "x": 1})
    with path.open("ab") as f:
        f.write(b"\xff\xfe damaged \x00 bytes\n")
    before = path.read_bytes()
    assert history.mark_failed(path, "zzz", "split_data failed") is False
    assert path.read_bytes() == before

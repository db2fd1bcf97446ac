"""Pooled evidence across nights and the sentinel drift check, on hand-written history lines."""

import json
import logging

import numpy as np
import pytest

from include import drift, history, pooled
from include.confidence_sequence import confidence_sequence

SETTINGS = {"seeds": [42, 1], "fractions": [0.7], "scratch_epochs": 20, "noninferiority_margin": 0.005,
            "confidence": 0.95, "data_dir": "/a", "max_replicas_per_graph": 3,
            "architecture": "mlp"}
SHA = {"train_images": "aa", "test_images": "bb"}
KEY = pooled.experiment_key(SETTINGS, SHA)
SKEY = pooled.settings_key(SETTINGS)
ENV = {"package numpy": "2.4.6", "python": "3.11.2", "data train_images": "aa"}


def line(run, night, diffs, key=KEY, sentinel=None, env=ENV, **extra):
    return {"run": run, "logical_date": f"2026-11-{night:02d}T02:00:00+00:00", "experiment_key": key,
            "settings_key": SKEY, "per_seed_diff": {str(s): d for s, d in diffs.items()},
            "sentinel": sentinel, "environment": env, **extra}


def numbered(rows):
    return list(enumerate(rows, start=1))


def test_experiment_key_ignores_seeds_and_operational_knobs_but_not_settings_or_data():
    assert pooled.experiment_key({**SETTINGS, "seeds": [9], "data_dir": "/b", "max_replicas_per_graph": 1},
                                  SHA) == KEY
    assert pooled.experiment_key({**SETTINGS, "scratch_epochs": 21}, SHA) != KEY
    assert pooled.experiment_key({**SETTINGS, "architecture": "cnn"}, SHA) != KEY
    assert pooled.experiment_key(SETTINGS, {**SHA, "test_images": "cc"}) != KEY
    assert len(KEY) == pooled.KEY_LENGTH and all(c in "0123456789abcdef" for c in KEY)


def test_every_seed_of_the_experiment_pooled_once_in_night_order():
    rows = [line("n2", 2, {1000: 0.01, 1001: 0.02, 42: 0.005}),
            line("n1", 1, {2000: -0.01, 42: 0.005})]
    tonight = line("n3", 3, {3000: 0.03, 42: 0.005})
    p = pooled.pool(numbered(rows), tonight, 0.95, 0.005)
    assert p.seeds == [42, 2000, 1000, 1001, 3000]  # night 1 first; the sentinel 42 counted once
    assert p.n_seeds == 5 and p.n_nights == 3
    assert [n["run"] for n in p.nights] == ["n1", "n2", "n3"] and [n["n_seeds"] for n in p.nights] == [2, 4, 5]
    cs = confidence_sequence(np.array([0.005, -0.01, 0.01, 0.02, 0.03]), 0.05)
    assert (p.low, p.high) == (cs.low[-1], cs.high[-1]) and p.mean == pytest.approx(0.011)
    assert p.verdict["kind"] == "no_difference" and "5 seeds from 3 nights" in p.verdict["text"]


def test_damaged_other_key_and_failed_lines_are_skipped_with_a_warning_naming_the_line(tmp_path, caplog):
    path = tmp_path / "history.jsonl"
    good = line("n1", 1, {1000: 0.01})
    path.write_text("\n".join([
        json.dumps(good),
        '{"run": "broken", "per_seed_diff": {"1": 0.',                       # line 2: truncated
        json.dumps(line("other", 1, {5000: 0.9}, key="0123456789ab")),       # line 3: other experiment
        json.dumps(line("failed", 1, {6000: 0.9}, failed=True)),             # line 4: its run failed
        json.dumps(line("bad", 1, {7000: 7.0})),                             # line 5: not a difference
        json.dumps({**line("nodate", 1, {8000: 0.1}), "logical_date": "yesterday"}),  # line 6
    ]) + "\n")
    caplog.set_level(logging.WARNING, logger="tl.pooled")
    p = pooled.pool(history.read_history_lines(path), line("n2", 2, {1001: 0.02}), 0.95, 0.005)
    assert p.seeds == [1000, 1001]
    warned = " | ".join(r.getMessage() for r in caplog.records)
    for n in (2, 3, 4, 5, 6):
        assert f"history.jsonl line {n}" in warned
    assert "0123456789ab" in warned and "its run failed" in warned and "damaged" in warned
    assert len(p.skipped) == 5


def test_a_rerun_night_pools_what_it_pooled_the_first_time():
    n1, n2, n3 = line("n1", 1, {1000: 0.01}), line("n2", 2, {2000: 0.02}), line("n3", 3, {3000: -0.03})
    first = pooled.pool(numbered([n1]), n2, 0.95, 0.005)
    again = pooled.pool(numbered([n1, n2, n3]), n2, 0.95, 0.005)  # night 2 cleared after night 3 ran
    assert again.to_dict() == first.to_dict()


def test_pooled_verdict_uses_the_nightly_rules():
    from include import stats

    for low, high in ((0.001, 0.02), (-0.004, 0.01), (-0.004, -0.001), (-0.02, -0.01), (-0.02, 0.01)):
        nightly = stats.verdict({"mean": (low + high) / 2, "low": low, "high": high, "n": 5, "confidence": 0.95},
                                0.005, 0.3)
        assert pooled.verdict_kind(low, high, 0.005) == nightly["kind"]


def test_figure_marks_zero_and_the_margin(monkeypatch):
    from include.report import figures

    drawn = []
    monkeypatch.setattr(figures, "_png", lambda fig: drawn.append(fig) or "png")
    p = pooled.pool(numbered([line("n1", 1, {1000: 0.01, 1001: 0.0})]), line("n2", 2, {2000: 0.02}), 0.95, 0.005)
    assert figures.figure_pooled(p.to_dict()) == "png"
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


def test_drift_ignores_other_settings_failed_and_later_nights():
    tonight = line("n2", 2, {42: 0.0}, sentinel=sentinel(0.9635))
    rows = [{**line("x", 1, {42: 0.0}, sentinel=sentinel(0.1)), "settings_key": "other"},
            line("f", 1, {42: 0.0}, sentinel=sentinel(0.2), failed=True),
            line("later", 3, {42: 0.0}, sentinel=sentinel(0.3)), None]
    assert drift.check(numbered(rows), tonight)["status"] == "no_reference"


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

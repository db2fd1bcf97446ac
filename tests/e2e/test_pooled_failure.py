"""A night whose report fails leaves every earlier night's stored pool untouched.

One tiny training on synthetic IDX files, then compare_report three times on its results, as three
nights: the first succeeds, the second fails while writing its report, the third (the second
cleared and re-run) succeeds. Cost: one tiny run of the task functions (about 20-40 s on 2 cores).
"""

import json
from pathlib import Path

import pytest

from include import history
from include.artifacts import RunPaths
from include.report import render
from tasks import compare_report
from tests.e2e.tiny_pipeline import tiny_config, train_all
from tests.synthetic import write_tiny_fashion_mnist

pytestmark = pytest.mark.training


def test_a_failing_report_leaves_the_history_and_earlier_stored_pools_untouched(tmp_path, monkeypatch):
    idx = write_tiny_fashion_mnist(tmp_path / "idx")
    cfg = tiny_config(idx, fractions=[0.7])
    manifest, scratch, transfer = train_all(cfg, RunPaths.for_run("manual__trained", root=tmp_path))
    night1 = {"run_type": "scheduled", "logical_date": "2026-12-01T02:00:00+00:00"}
    compare_report.run(cfg, manifest, scratch, transfer, RunPaths.for_run("scheduled__n1", root=tmp_path),
                       "scheduled__n1", info=night1)
    path = tmp_path / "reports" / "history.jsonl"
    before = path.read_bytes()
    [first] = history.read_history(path)
    assert first["pool"]["nights"] == 1 and first["pool"]["own"] == len(first["per_seed_diff"])

    def broken(*args, **kwargs):
        raise OSError("disk full while writing report.html")

    monkeypatch.setattr(render, "render_html", broken)
    night2 = {"run_type": "scheduled", "logical_date": "2026-12-02T02:00:00+00:00"}
    paths2 = RunPaths.for_run("scheduled__n2", root=tmp_path)
    with pytest.raises(OSError, match="disk full"):
        compare_report.run(cfg, manifest, scratch, transfer, paths2, "scheduled__n2", info=night2)
    assert path.read_bytes() == before  # no line for the failed night; night 1's stored pool as it was

    monkeypatch.undo()  # the task cleared and re-run
    out = compare_report.run(cfg, manifest, scratch, transfer, paths2, "scheduled__n2", info=night2)
    rows = history.read_history(path)
    m = json.loads(Path(out["metrics_path"]).read_text())
    assert m["trend"][-1]["pool"] == rows[1]["pool"]  # the recent-runs table shows tonight's pooled verdict
    assert [r["run"] for r in rows] == ["scheduled__n1", "scheduled__n2"] and rows[0] == first
    # Night 2 trained the same seeds (one training stands in for both): no new seed, so not a night.
    assert rows[1]["pool"]["own"] == 0 and rows[1]["pool"]["nights"] == 1
    assert rows[1]["pool"]["seeds"] == first["pool"]["seeds"]

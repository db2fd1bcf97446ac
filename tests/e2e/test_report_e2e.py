"""The report end to end on tiny synthetic IDX data: metrics.json against its documented schema,
report.md/report.html carrying the same numbers, report.html rendered offline in headless Chromium,
and history + champion across two runs.

Cost: two tiny runs of the plain task functions (about 30-60 s on 2 shared cores) and one Chromium
render (about 3 s).
"""

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from include import history, stats
from include.artifacts import RunPaths
from include.report import tables
from tasks import promote
from tests import browser as chromium
from tests.e2e.tiny_pipeline import run_tiny, tiny_config
from tests.synthetic import write_tiny_fashion_mnist

pytestmark = pytest.mark.training

ROOT = Path(__file__).resolve().parents[2]
# Fractions like the real run (headline 0.7), a learning rate that learns something in 3 epochs.
TINY = {"fractions": [0.3, 0.7], "pretrain_epochs": 2, "scratch_epochs": 3, "head_epochs": 2, "finetune_epochs": 3,
        "pretrain_lr": 0.05, "scratch_lr": 0.05, "head_lr": 0.05, "finetune_lr": 0.05, "target_val_accuracy": 0.8}


def schema() -> dict:
    """The schema generated from include/report/document.py (tests/unit/test_metrics_document.py keeps it current)."""
    return json.loads((ROOT / "reports" / "metrics.schema.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Run 1 then run 2 into one artifact root, each followed by the champion gate.

    Run 2 must beat the champion by 49 accuracy points (the largest margin the config allows): once run 1
    scores above 51%, run 2 cannot be promoted, whatever it scores.
    """
    root = tmp_path_factory.mktemp("artifacts")
    idx = write_tiny_fashion_mnist(root / "idx")
    out = {"root": root}
    for name, margin in (("run1", 0.0), ("run2", 0.49)):
        res = run_tiny(root, f"manual__{name}", data_dir=idx, **TINY, champion_margin=margin)
        champion = root / "models" / "champion"
        before = {p.name: p.read_bytes() for p in champion.iterdir()} if champion.exists() else None
        cfg = tiny_config(idx, **TINY, champion_margin=margin)
        decision = promote.run(cfg, res, RunPaths.for_run(f"manual__{name}", root=root))
        after = {p.name: p.read_bytes() for p in champion.iterdir()}
        out[name] = {"result": res, "decision": decision, "before": before, "after": after,
                     "metrics": json.loads(Path(res["metrics_path"]).read_text())}
    return out


def test_metrics_json_matches_the_documented_schema(two_runs):
    import jsonschema

    s = schema()
    jsonschema.Draft202012Validator.check_schema(s)
    for name in ("run1", "run2"):
        errors = sorted(jsonschema.Draft202012Validator(s).iter_errors(two_runs[name]["metrics"]),
                        key=lambda e: list(e.path))
        assert not errors, [f"{list(e.path)}: {e.message}" for e in errors[:5]]


def test_metrics_json_round_trips_through_the_typed_document(two_runs):
    """What compare_report wrote parses as the model and dumps back to the same JSON: readers of old
    files and the writer agree on every key."""
    from include.report.document import MetricsDocument

    for name in ("run1", "run2"):
        path = Path(two_runs[name]["result"]["metrics_path"])
        m = MetricsDocument.read(path)
        assert m.to_json() == two_runs[name]["metrics"]
        assert m.headline.verdict.basis == "tonight" and m.verdict.basis == "pooled"


def test_schema_rejects_a_broken_document(two_runs):
    import jsonschema

    m = json.loads(json.dumps(two_runs["run1"]["metrics"]))
    m["verdict"]["kind"] = "great"
    del m["headline"]["mcnemar"]
    assert len(list(jsonschema.Draft202012Validator(schema()).iter_errors(m))) >= 2


def test_metrics_numbers_are_consistent(two_runs):
    m = two_runs["run1"]["metrics"]
    cfg = m["config"]
    h = m["headline"]
    seeds = [str(s) for s in cfg["seeds"]]
    # Per-seed accuracies for every (model, fraction), scratch on 100% included, straight from the task results.
    raw = {(r["model"], r["fraction"], str(r["seed"])): r["test_accuracy"] for r in m["results"]}
    rows = {(r["model"], r["fraction"]) for r in m["accuracy_table"]}
    assert rows == {("scratch", f) for f in (*cfg["fractions"], 1.0)} | {("transfer", f) for f in cfg["fractions"]}
    for r in m["accuracy_table"]:
        assert r["per_seed"] == {s: raw[(r["model"], r["fraction"], s)] for s in seeds}
    # The paired difference and its interval.
    diffs = [raw[("transfer", 0.7, s)] - raw[("scratch", 1.0, s)] for s in seeds]
    assert [h["difference"]["per_seed"][s] for s in seeds] == pytest.approx(diffs)
    assert h["difference"]["low"] == pytest.approx(stats.t_interval(diffs)["low"])
    # The verdict follows the interval.
    expected = stats.verdict(h["difference"], cfg["noninferiority_margin"], 0.3)["kind"]
    assert h["verdict"]["kind"] == expected and h["verdict"]["basis"] == "tonight"
    # The pooled verdict leads metrics.json.
    assert m["verdict"] == {**m["nightly"]["pooled"]["verdict"], "basis": "pooled"}
    assert h["noninferiority"]["holds"] == (h["difference"]["low"] > -cfg["noninferiority_margin"])
    # McNemar per seed, recomputed from the saved test predictions.
    root = Path(m["results"][0]["predictions_path"]).parents[2]
    y = np.load(json.loads((root / "data" / m["run"] / "split.json").read_text())["arrays"]["target_y_test"])
    for s in seeds:
        pa = np.load(next(r["predictions_path"] for r in m["results"]
                          if (r["model"], r["fraction"], str(r["seed"])) == ("scratch", 1.0, s)))
        pb = np.load(next(r["predictions_path"] for r in m["results"]
                          if (r["model"], r["fraction"], str(r["seed"])) == ("transfer", 0.7, s)))
        assert h["mcnemar"][s] == stats.mcnemar_exact(y, pa, pb)
    # Time to accuracy per seed for both models, and a timing line per task and seed.
    for model in ("scratch", "transfer"):
        tta = m["time_to_accuracy"]["models"][model]
        assert set(tta["per_seed"]) == set(seeds) and tta["n_seeds"] == len(seeds)
        for v in tta["per_seed"].values():
            assert v["epochs_to_best"] >= 1 and v["seconds_to_best"] > 0
            if v["epochs_to_target"] is not None:
                assert v["epochs_to_target"] <= v["epochs_to_best"] or v["best_val_accuracy"] >= 0.8
    assert {(t["task_id"], str(t["seed"])) for t in m["timings"]["fit_seconds"]} == \
        {(t, s) for t in ("pretrain", "train_scratch", "transfer.head", "transfer.finetune") for s in seeds}
    assert m["provenance"]["packages"]["keras"] and len(m["data"]["sha256"]) == 4
    # The numbers behind the figures: confusion matrices count every test image once per seed,
    # learning curves span both transfer phases.
    cms = m["confusion_matrices"]
    for model in ("scratch", "transfer"):
        assert set(cms[model]["per_seed"]) == set(seeds)
        for cm in cms[model]["per_seed"].values():
            assert [sum(row) for row in cm] == [int((y == 0).sum()), int((y == 1).sum())]
        assert np.array(cms[model]["summed"]).sum() == len(y) * len(seeds)
    lc = m["learning_curves"]
    assert lc["scratch"]["epoch"] == list(range(1, cfg["scratch_epochs"] + 1))
    assert lc["transfer"]["epoch"] == list(range(1, cfg["head_epochs"] + cfg["finetune_epochs"] + 1))
    assert [p["phase"] for p in lc["transfer"]["phases"]] == ["transfer.head", "transfer.finetune"]
    assert all(lo <= mu <= hi for lo, mu, hi in zip(lc["transfer"]["min"], lc["transfer"]["mean"],
                                                     lc["transfer"]["max"], strict=True))


def test_report_md_and_html_carry_the_same_numbers(two_runs):
    m = two_runs["run1"]["metrics"]
    folder = Path(two_runs["run1"]["result"]["report_dir"])
    md, page = (folder / "report.md").read_text(), (folder / "report.html").read_text()
    h = m["headline"]
    import html as htmllib

    text = htmllib.unescape(re.sub(r"<[^>]+>", " ", page))
    for doc in (md, text):
        assert m["verdict"]["text"] in doc
        assert f"{tables.pts(h['difference']['low'])}, {tables.pts(h['difference']['high'])}]" in doc
        for r in m["accuracy_table"]:
            for acc in r["per_seed"].values():
                assert tables.pct(acc) in doc
        for mc in h["mcnemar"].values():
            assert f"{mc['p_value']:.3f} ({mc['a_only_correct']} / {mc['b_only_correct']})" in doc
        assert m["provenance"]["git_commit"] is None or m["provenance"]["git_commit"] in doc
        for digest in m["data"]["sha256"].values():
            assert digest in doc
        assert "Student-t" in doc and "one-sided t test at \N{GREEK SMALL LETTER ALPHA} = 2.5%" in doc
    for heading in ("Comparison", "Per seed", "Learning curves", "Data efficiency", "Confusion matrices",
                    "Time to accuracy", "Recent runs", "Provenance", "Timings", "Pooled evidence"):
        assert f">{heading}" in page, heading
    # Self-contained: four inline PNGs (the fourth: pooled evidence), no script, no link to anything.
    assert page.count('src="data:image/png;base64,') == 4
    assert not re.search(r"<script|<link|https?://|src=\"(?!data:)", page)


@pytest.mark.browser
def test_report_renders_offline_in_headless_chromium(two_runs, tmp_path):
    m = two_runs["run2"]["metrics"]
    page = Path(two_runs["run2"]["result"]["html_path"])
    shot_dir = Path(os.environ.get("TL_SCREENSHOT_DIR") or tmp_path)
    seen = chromium.render(page, shot_dir / "report.png")

    words = tables.verdict_words(m["verdict"]["kind"], m["verdict"]["below_zero"])
    assert seen["verdict"] == f"Verdict: {words}. {m['verdict']['text']}"
    assert "Recent runs (last 2)" in seen["text"]  # run 1 and run 2 in the trend
    assert len(seen["images"]) == 4
    for img in seen["images"]:  # every figure decoded: a broken image has naturalWidth 0
        assert img["complete"] and img["width"] > 300 and img["height"] > 200 and img["scheme"] == "data", img
    # Nothing left the machine: the only requests are the file itself and its data: images; none failed,
    # and Chromium logged no blocked (CSP) or failed load.
    assert seen["requests"][0] == page.resolve().as_uri()
    assert all(u.startswith(("file:", "data:")) for u in seen["requests"]), seen["requests"]
    assert not seen["failed"] and not seen["console"], (seen["failed"], seen["console"])
    # The screenshot is the whole page and not blank.
    import matplotlib.image as mpimg

    png = mpimg.imread(seen["screenshot"])
    assert png.shape[0] >= min(seen["height"], 4000) and png.shape[1] >= 1000
    assert len(np.unique(png.reshape(-1, png.shape[-1])[::97], axis=0)) > 50  # text and plots, not one colour


def test_history_appends_and_the_champion_changes_only_when_the_gate_says_so(two_runs):
    root = two_runs["root"]
    rows = history.read_history(root / "reports" / "history.jsonl")
    assert [r["run"] for r in rows] == ["manual__run1", "manual__run2"]
    assert rows[1]["verdict_kind"] == two_runs["run2"]["metrics"]["headline"]["verdict"]["kind"]
    assert rows[1]["pool"]["verdict"] == two_runs["run2"]["metrics"]["verdict"]["kind"]
    assert [t["run"] for t in two_runs["run2"]["metrics"]["trend"]] == ["manual__run1", "manual__run2"]

    r1, r2 = two_runs["run1"], two_runs["run2"]
    assert r1["before"] is None and r1["decision"]["promoted"]  # no champion yet: run 1 is blessed
    champ = json.loads(r1["after"]["champion.json"])
    assert champ["run"] == "manual__run1" and champ["test_accuracy"] == r1["result"]["candidate"]["test_accuracy"]
    assert champ["data_sha256"] == r1["metrics"]["data"]["sha256"]
    assert champ["test_accuracy"] > 0.51, "run 1 learned nothing: the tiny settings need a look"
    assert not r2["decision"]["promoted"] and "does not beat" in r2["decision"]["reason"]
    assert r2["after"] == r2["before"]  # byte for byte: run 2 touched nothing

"""Two DAG runs at once write disjoint folders; a failed run leaves the champion and earlier reports alone.

The DAG sets max_active_runs=1 on purpose: one run already keeps every core of a small worker busy,
so a second would only slow both down. That is a resource choice, not what keeps runs apart: every
artifact lives under a run-scoped folder and the shared files (history.jsonl, champion.json) are
written under a file lock with atomic replace. This module proves it by running two whole DAG runs
at the same time with dag.test(), which does not apply max_active_runs: two processes, each with
its own copy of the migrated SQLite metadata DB (SQLite does not take two busy writers) and one
shared artifact root.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from include import history
from include.artifacts import RunPaths, load_model, safe_run_id
from include.data import FILES
from tests.reliability.helpers import ROOT, parse_result, snapshot, subprocess_env
from tests.synthetic import TINY_CONF, write_tiny_fashion_mnist

pytestmark = [pytest.mark.airflow, pytest.mark.training]

DAG_RUN = r"""
import json, sys
import pendulum
from airflow.dag_processing.dagbag import DagBag
from tests.airflow_compat import patch_dag_test_deadlines
patch_dag_test_deadlines()
dag = DagBag(dag_folder=sys.argv[1]).dags["fashion_mnist_transfer_learning"]
when = pendulum.parse(sys.argv[3])
dr = dag.test(run_after=when, logical_date=when, run_conf=json.loads(sys.argv[2]))
tis = [[ti.task_id, ti.map_index, str(ti.state), ti.try_number] for ti in dr.get_task_instances()]
print("RESULT " + json.dumps({"run_id": dr.run_id, "state": str(dr.state), "tis": tis}), flush=True)
"""

WHEN = ("2026-03-01T02:00:00+00:00", "2026-03-02T02:00:00+00:00")


@pytest.fixture(scope="module")
def two_runs(airflow_db: Path, tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("concurrent")
    root = base / "artifacts"
    conf = {**TINY_CONF, "seeds": [42], "fractions": [0.5], "data_dir": str(write_tiny_fashion_mnist(base / "idx"))}
    # A writer killed 3 hours ago (longer than any task may run) and one killed a minute ago.
    stale, fresh = root / "reports" / ".history.jsonl.k1ll.tmp", root / "models" / ".champion.json.k2ll.tmp"
    for path, age in ((stale, 3 * 3600), (fresh, 60)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("half")
        os.utime(path, (time.time() - age,) * 2)
    procs = []
    for i, when in enumerate(WHEN):
        home = base / f"airflow-{i}"
        home.mkdir()
        shutil.copyfile(airflow_db / "airflow.db", home / "airflow.db")  # already migrated
        env = subprocess_env(AIRFLOW_HOME=str(home), TL_ARTIFACT_ROOT=str(root))
        procs.append(subprocess.Popen([sys.executable, "-c", DAG_RUN, str(ROOT / "dags"), json.dumps(conf), when],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                                      env=env))
    results = []
    for p in procs:
        out, _ = p.communicate(timeout=900)
        results.append(parse_result(p.returncode, out, ""))
    return {"root": root, "runs": results, "conf": conf, "stale": stale, "fresh": fresh}


@pytest.mark.slow
def test_two_simultaneous_runs_both_succeed(two_runs):
    run_ids = [r["run_id"] for r in two_runs["runs"]]
    assert len(set(run_ids)) == 2
    for r in two_runs["runs"]:
        assert r["state"] == "success", r
        states = {(t, m): s for t, m, s, _ in r["tis"]}
        assert all(s == "success" for (t, _), s in states.items() if t != "promote_champion"), states
        assert states[("promote_champion", -1)] in ("success", "skipped")  # skipped = did not beat the champion
        assert all(tries == 1 for *_, tries in r["tis"])  # nothing needed a retry


def test_two_simultaneous_runs_write_disjoint_folders(two_runs):
    root = two_runs["root"]
    runs = [safe_run_id(r["run_id"]) for r in two_runs["runs"]]
    assert runs[0] != runs[1]
    files = set(snapshot(root)) - {str(two_runs["fresh"].relative_to(root))}
    per_run = [{f for f in files if any(f.startswith(f"{d}/{run}/") for d in ("data", "models", "reports"))}
               for run in runs]
    for own in per_run:
        assert any(f.endswith("report.html") for f in own) and any(f.endswith(".keras") for f in own)
        assert not any(f.startswith("data/") for f in own), "each run's teardown removed its scratch"
    shared = files - per_run[0] - per_run[1]
    # The only shared files are the history and the champion, both written under a lock, and the split
    # arrays: one read-only store entry, the same content for both runs.
    assert shared and all(f == "reports/history.jsonl" or f.startswith(("models/champion/", "data/splits/"))
                          for f in shared), shared
    assert len({f.split("/")[2] for f in shared if f.startswith("data/splits/")}) == 1
    names = [{f.split("/", 2)[2] for f in own} for own in per_run]
    assert names[0] == names[1]  # the same artifacts, each in its own folder


def test_successful_runs_apply_retention_to_killed_writers_temp_files(two_runs):
    """Each run's teardown applied the policy: the temp file older than the longest task timeout is
    gone, the one killed a minute ago (its writer could still be running) stays."""
    for r in two_runs["runs"]:
        assert ["apply_retention", -1, "success", 1] in r["tis"], r["tis"]
    assert not two_runs["stale"].exists() and two_runs["fresh"].exists()


def test_history_and_champion_are_valid_after_the_race(two_runs):
    root = two_runs["root"]
    runs = {safe_run_id(r["run_id"]): r for r in two_runs["runs"]}
    rows = history.read_history(root / "reports" / "history.jsonl")
    assert sorted(r["run"] for r in rows) == sorted(runs)
    champ = history.read_champion(root / "models" / "champion")
    promoted = {run for run, r in runs.items() if ["promote_champion", -1, "success", 1] in r["tis"]}
    assert champ["run"] in promoted
    load_model(champ["model_path"])  # a whole, loadable model (safe mode)


def test_failed_nightly_run_leaves_champion_and_earlier_reports_untouched(two_runs, monkeypatch, tmp_path):
    from tasks import promote
    from tests.conftest import load_dag

    root = two_runs["root"]
    monkeypatch.setenv("TL_ARTIFACT_ROOT", str(root))
    before = snapshot(root, "models", "reports")

    # 1. Through Airflow: tonight's data is corrupt, the run fails in split_data.
    bad = write_tiny_fashion_mnist(tmp_path / "idx")
    (bad / FILES["train_images"]).write_bytes(b"\x1f\x8b" + os.urandom(500))
    dr = load_dag().test(run_conf={**two_runs["conf"], "data_dir": str(bad)})
    assert str(dr.state) == "failed"
    assert snapshot(root, "models", "reports") == before

    # 2. A run that fails late, inside the champion gate: its candidate beats everything but its model
    #    file is gone (say, the disk was wiped mid-run). The copy fails before the pointer flips.
    from include.config import ExperimentConfig

    cfg = ExperimentConfig.from_params(two_runs["conf"])
    paths = RunPaths.for_run("scheduled__2026-03-03T02:00:00+00:00", root=root)
    candidate = {"run": paths.run, "run_id": "x", "seed": 42, "fraction": 0.5, "model": "transfer",
                 "test_accuracy": 1.5, "model_path": str(paths.models / "transfer_seed42_frac0.5.keras"),
                 "data_sha256": history.read_champion(root / "models" / "champion").get("data_sha256")}
    with pytest.raises(FileNotFoundError):
        promote.run(cfg, {"candidate": candidate}, paths)
    assert snapshot(root, "models", "reports") == before
    assert not list((root / "models" / "champion").glob(".*.tmp*"))
    load_model(history.read_champion(root / "models" / "champion")["model_path"])

"""Disk use stays bounded: split arrays stored once per content, run scratch removed at run end,
a retention policy for models, champions, split sets and killed writers' temp files.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from include import artifacts, history, retention, store
from include.artifacts import RunPaths, safe_run_id
from include.config import ExperimentConfig
from include.retention import RetentionPolicy
from tests.reliability.helpers import ROOT, parse_result, snapshot, subprocess_env
from tests.synthetic import TINY_CONF, write_tiny_fashion_mnist

CONF = {**TINY_CONF, "seeds": [42], "fractions": [0.5]}


def config(data_dir: Path, **overrides) -> ExperimentConfig:
    return ExperimentConfig.from_params({**CONF, "data_dir": str(data_dir), **overrides})


def store_entries(root: Path) -> list[Path]:
    store = root / "data" / "splits"
    return sorted(p for p in store.iterdir() if not p.name.startswith(".")) if store.is_dir() else []


# -- split arrays: once per content --------------------------------------------------------------------
@pytest.mark.unit
def test_split_arrays_are_stored_once_per_content(tmp_path, monkeypatch):
    from tasks import split_data

    root, data = tmp_path / "artifacts", write_tiny_fashion_mnist(tmp_path / "idx")
    def manifest(jobs: list[dict]) -> dict:
        return json.loads(Path(jobs[0]["manifest"]).read_text())

    first = manifest(split_data.run(config(data), RunPaths.for_run("night-1", root=root)))
    # Other seeds and fractions, same data and split settings: the same arrays, not a copy.
    second = manifest(split_data.run(config(data, seeds=[1, 2], fractions=[0.3]), RunPaths.for_run("night-2", root)))
    [entry] = store_entries(root)
    assert first["arrays"] == second["arrays"] and first["store_entry"] == second["store_entry"] == str(entry)
    assert all(Path(p).parent == entry for p in first["arrays"].values())
    modes = {stat.S_IMODE(p.stat().st_mode) for p in entry.iterdir()}
    assert modes == {0o444}, "published split arrays are read-only"
    assert sorted(p.name for p in (root / "data" / "night-2" / "subsets").iterdir()) == [
        "seed1_frac0.3.npy", "seed1_frac1.npy", "seed2_frac0.3.npy", "seed2_frac1.npy"]

    # Each part of the key makes a new entry: split settings, data content, split code version.
    split_data.run(config(data, target_classes=["Coat", "Shirt"]), RunPaths.for_run("other-classes", root))
    split_data.run(config(write_tiny_fashion_mnist(tmp_path / "idx2", seed=1)), RunPaths.for_run("other-data", root))
    monkeypatch.setattr(split_data, "SPLIT_CODE_VERSION", split_data.SPLIT_CODE_VERSION + 1)
    split_data.run(config(data), RunPaths.for_run("new-code", root))
    assert len(store_entries(root)) == 4
    assert not list((root / "data" / "splits").glob(".*")), "no temp folder left behind"


@pytest.mark.unit
def test_a_damaged_store_entry_is_set_aside_and_rebuilt(tmp_path):
    from tasks import split_data

    root, data = tmp_path / "artifacts", write_tiny_fashion_mnist(tmp_path / "idx")
    jobs = split_data.run(config(data), RunPaths.for_run("a", root=root))
    [entry] = store_entries(root)
    good = (entry / "target_x_train.npy").read_bytes()
    (entry / "target_x_train.npy").unlink()  # say, removed by hand
    assert split_data.run(config(data), RunPaths.for_run("b", root=root))[0]["seeds"] == jobs[0]["seeds"]
    assert store_entries(root) == [entry] and (entry / "target_x_train.npy").read_bytes() == good
    [aside] = (root / "data" / "splits").glob(".*.tmp")  # removed by retention once past the grace period
    assert retention.apply(root, RetentionPolicy(grace=timedelta(0)), "b").removed[-1].path == aside


SPLITTER = r"""
import json, sys, time
from pathlib import Path
from include.artifacts import RunPaths
from include.config import ExperimentConfig
from tasks import split_data
root, run, conf = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
while not (root / "go").exists():
    time.sleep(0.001)
jobs = split_data.run(ExperimentConfig.from_params(conf), RunPaths.for_run(run, root=root))
print("RESULT " + json.dumps(json.loads(Path(jobs[0]["manifest"]).read_text())["arrays"]), flush=True)
"""


@pytest.mark.unit
def test_concurrent_runs_creating_the_same_split_get_one_whole_entry(tmp_path):
    """Four processes split the same data at the same moment: each gets the same whole entry."""
    root = tmp_path / "artifacts"
    root.mkdir()
    conf = json.dumps({**CONF, "data_dir": str(write_tiny_fashion_mnist(tmp_path / "idx"))})
    procs = [subprocess.Popen([sys.executable, "-c", SPLITTER, str(root), f"run-{i}", conf], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=ROOT, env=subprocess_env()) for i in range(4)]
    (root / "go").touch()
    outputs = [p.communicate(timeout=300) for p in procs]
    results = [parse_result(p.returncode, *out) for p, out in zip(procs, outputs, strict=True)]
    assert all(r == results[0] for r in results)
    [entry] = store_entries(root)
    assert not list((root / "data" / "splits").glob(".*")), "the losers' folders are gone"
    # The entry holds exactly what a lone run writes.
    from tasks import split_data

    alone = tmp_path / "alone"
    split_data.run(ExperimentConfig.from_params(json.loads(conf)), RunPaths.for_run("alone", root=alone))
    [lone] = store_entries(alone)
    assert snapshot(entry) == snapshot(lone)


@pytest.mark.unit
def test_publishing_a_folder_someone_else_published_first_keeps_theirs(tmp_path):
    """The race made deterministic: a second writer publishes while the first is still building."""
    final = tmp_path / "store" / "key"

    def slow_build(folder: Path) -> None:
        (folder / "a.npy").write_bytes(b"first")
        assert store.publish_dir(final, lambda f: (f / "a.npy").write_bytes(b"second")) is True

    assert store.publish_dir(final, slow_build) is False
    assert (final / "a.npy").read_bytes() == b"second" and sorted(final.parent.iterdir()) == [final]
    with pytest.raises(RuntimeError):  # a failing build leaves nothing, under any name
        store.publish_dir(tmp_path / "store" / "other", lambda f: (_ for _ in ()).throw(RuntimeError("boom")))
    assert sorted(final.parent.iterdir()) == [final]


# -- retention -----------------------------------------------------------------------------------------
def _file(path: Path, size: int, age_s: float = 0.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    when = time.time() - age_s
    os.utime(path, (when, when))
    return path


def _age(folder: Path, age_s: float) -> None:
    when = time.time() - age_s
    for p in (folder, *folder.rglob("*")):
        os.utime(p, (when, when))


@pytest.mark.unit
def test_retention_removes_exactly_what_the_policy_names(tmp_path, caplog):
    root, hour, day = tmp_path, 3600, 86400
    policy = RetentionPolicy(keep_model_runs=2, keep_split_sets=1, grace=timedelta(hours=2))
    ages = {f"night-{i}": (5 - i) * day for i in range(5)}  # night-0 is the oldest
    # night-5 applies retention; two runs in flight wrote 1 h and 1.5 h ago (the second is beyond the newest 2).
    ages.update({"night-5": 0, "in-flight": hour, "in-flight-2": 1.5 * hour})
    for run in ages:
        _file(root / "models" / run / "transfer.keras", 1000)
        _file(root / "reports" / run / "report.html", 100)
    _file(root / "reports" / "history.jsonl", 50)
    champ = root / "models" / "champion"
    for name in ("night-1__t.keras", "night-3__t.keras"):
        _file(champ / name, 1000)
    artifacts.write_json(champ / "champion.json", {"run": "night-3", "model_path": str(champ / "night-3__t.keras")})
    for key in ("aaa", "bbb", "ccc"):
        _file(root / "data" / "splits" / key / "x.npy", 500)
    _file(root / "data" / "night-2" / "split.json", 10)  # a run whose teardown never ran
    old_tmp = _file(root / "reports" / "night-4" / ".report.html.ab12.tmp", 300)
    young_tmp = _file(root / "reports" / "night-5" / ".report.html.cd34.tmp", 30)
    _file(root / "data" / "splits" / ".ddd.x1.tmp" / "x.npy", 70)

    # Ages, set after creating (creating a file touches its folder).
    for run, age in ages.items():
        _age(root / "models" / run, age)
        _age(root / "reports" / run, age)
    _age(root / "data" / "night-2", 3 * day)
    _age(champ, 3 * day)
    # aaa: last used 5 days ago; bbb: 1 h ago by a run still in flight (kept: within the grace); ccc: now.
    for key, age in (("aaa", 5 * day), ("bbb", hour), ("ccc", 0), (".ddd.x1.tmp", 3 * hour)):
        _age(root / "data" / "splits" / key, age)
    os.utime(old_tmp, (time.time() - 3 * hour,) * 2)
    os.utime(young_tmp, (time.time() - hour,) * 2)

    with caplog.at_level(logging.INFO, logger="tl.retention"):
        outcome = retention.apply(root, policy, current_run="night-5")
    removed = {str(r.path.relative_to(root)) for r in outcome.removed}
    assert removed == {
        *(f"models/night-{i}" for i in range(5)),  # beyond the newest 2 (night-5, in-flight) and the grace
        "models/champion/night-1__t.keras",  # superseded champion
        "data/splits/aaa",  # beyond the 1 most recently used split set, and older than the grace period
        "data/night-2",  # scratch left behind
        "reports/night-4/.report.html.ab12.tmp", "data/splits/.ddd.x1.tmp",  # killed writers, 3 h ago
    }
    assert outcome.freed_bytes == 5 * 1000 + 1000 + 500 + 10 + 300 + 70
    # Kept: every report and the history, the champion, models of the newest runs, anything within the grace.
    assert len(list((root / "reports").glob("night-*/report.html"))) == 6 and (root / "reports/history.jsonl").exists()
    assert history.read_champion(champ)["run"] == "night-3" and (champ / "night-3__t.keras").exists()
    assert young_tmp.exists() and (root / "data/splits/bbb").exists() and (root / "data/splits/ccc").exists()
    assert (root / "models/in-flight").exists() and (root / "models/in-flight-2").exists()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert all(f"removed {root / path} (" in logged for path in removed)
    assert f"freed {outcome.freed_bytes} bytes in 10 items" in logged


@pytest.mark.unit
def test_failed_run_removes_only_its_own_scratch(tmp_path):
    from tasks import retention as step

    root = tmp_path
    paths = RunPaths.for_run("failed-night", root=root)
    _file(paths.data / "split.json", 10)
    _file(paths.data / "subsets" / "seed42_frac0.5.npy", 10)
    _file(paths.models / ".pretrain_seed42.keras.x1.tmp.keras", 20)  # killed just now
    _file(paths.models / "pretrain_seed42.keras", 20)
    _file(root / "models" / "old-night" / "transfer.keras", 20, age_s=30 * 86400)
    _file(root / "data" / "old-night" / "split.json", 20, age_s=30 * 86400)
    _file(root / "models" / "old-night" / ".x.keras.y.tmp.keras", 20, age_s=30 * 86400)
    _file(root / "reports" / "history.jsonl", 20)
    _file(root / "models" / "champion" / "champion.json", 20)
    before = snapshot(root, "models/old-night", "data/old-night", "reports", "models/champion")

    out = step.run(paths, failed=True, policy=RetentionPolicy(keep_model_runs=1, grace=timedelta(0)))
    assert sorted(out["removed"]) == ["data/failed-night", "models/failed-night/.pretrain_seed42.keras.x1.tmp.keras"]
    assert snapshot(root, "models/old-night", "data/old-night", "reports", "models/champion") == before
    assert (paths.models / "pretrain_seed42.keras").exists()  # left to the policy of a later, successful run


@pytest.mark.unit
def test_split_data_failing_leaves_no_scratch(tmp_path):
    from include.data import FILES
    from tasks import split_data

    data = write_tiny_fashion_mnist(tmp_path / "idx")
    (data / FILES["test_labels"]).write_bytes(b"\x1f\x8b" + os.urandom(100))
    paths = RunPaths.for_run("bad-night", root=tmp_path / "artifacts")
    with pytest.raises(Exception, match="not a readable gzip file"):
        split_data.run(config(data), paths)
    assert not paths.data.exists() and store_entries(paths.root) == []


# -- through Airflow: the teardown -----------------------------------------------------------------------
@pytest.mark.airflow
@pytest.mark.training
def test_dag_run_failing_after_split_data_removes_only_its_own_scratch(airflow_db, tmp_path, monkeypatch):
    """pretrain cannot create its model folder (a file is in the way): the run fails after split_data
    wrote its scratch. The teardown still runs, removes data/<run>/, and touches nothing else."""
    import pendulum

    from tests.conftest import load_dag

    root = tmp_path / "artifacts"
    monkeypatch.setenv("TL_ARTIFACT_ROOT", str(root))
    when = pendulum.datetime(2026, 3, 5, 2, tz="UTC")
    run = safe_run_id(f"manual__{when.isoformat()}")  # dag.test()'s run id for this logical date
    _file(root / "models" / run, 10)  # a regular file where pretrain wants its folder
    for other in ("old-night", "older-night"):  # another run's files, old enough for any policy
        _file(root / "models" / other / "transfer.keras", 100, age_s=30 * 86400)
        _file(root / "data" / other / "split.json", 100, age_s=30 * 86400)
        _file(root / "reports" / other / ".report.html.x1.tmp", 100, age_s=30 * 86400)
    (root / "reports" / "history.jsonl").write_text('{"run": "old-night", "run_id": "old-night"}\n')
    _file(root / "models" / "champion" / "old__t.keras", 100, age_s=30 * 86400)
    before = snapshot(root, "models", "reports", "data/old-night", "data/older-night")

    dr = load_dag().test(run_conf={**CONF, "data_dir": str(write_tiny_fashion_mnist(tmp_path / "idx"))},
                         logical_date=when, run_after=when)
    states = {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}
    assert safe_run_id(dr.run_id) == run
    assert str(dr.state) == "failed" and states["pretrain"] == "failed", states
    assert states["split_data"] == "success" and states["apply_retention"] == "success", states
    assert not (root / "data" / run).exists(), "the failed run's scratch is gone"
    assert snapshot(root, "models", "reports", "data/old-night", "data/older-night") == before
    assert len(store_entries(root)) == 1  # shared, content-addressed: kept for the next run


# -- a month of nightly runs -------------------------------------------------------------------------------
NIGHTS = 30
MONTH_POLICY = RetentionPolicy(keep_model_runs=5, keep_split_sets=2, grace=timedelta(0))  # nights are seconds apart


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> dict:
    """One real tiny run (every model trained, a real report): what each simulated night writes."""
    from tests.e2e.tiny_pipeline import run_tiny

    base = tmp_path_factory.mktemp("month")
    data = write_tiny_fashion_mnist(base / "idx")
    result = run_tiny(base / "reference", "reference", data_dir=data, seeds=[42], fractions=[0.5])
    return {"base": base, "data": data, "result": result, "paths": RunPaths.for_run("reference", base / "reference")}


def simulate_month(root: Path, ref: dict, with_retention: bool) -> list[dict[str, int]]:
    """Thirty nights: the real split_data (store reused), the reference run's models and report copied
    in as if trained, a history line, the champion gate, then the teardown (or nothing, as before)."""
    from tasks import promote, split_data
    from tasks import retention as teardown

    cfg = config(ref["data"])
    usage = []
    for night in range(1, NIGHTS + 1):
        paths = RunPaths.for_run(f"scheduled__2026-01-{night:02d}T02:00:00+00:00", root=root)
        split_data.run(cfg, paths)
        for src, dst in ((ref["paths"].models, paths.models), (ref["paths"].reports, paths.reports)):
            shutil.copytree(src, dst, copy_function=shutil.copyfile)  # fresh times, as a real night's files
        history.append_history(paths.reports_root / "history.jsonl", {"run": paths.run, "night": night})
        cand = ref["result"]["candidate"]
        better = night % 3 == 1  # every third night beats the champion: superseded champions pile up
        promote.run(cfg, {"candidate": {**cand, "run": paths.run, "test_accuracy": 0.5 + night / 100 if better else 0.1,
                                        "model_path": str(paths.models / Path(cand["model_path"]).name)}}, paths)
        if with_retention:
            teardown.run(paths, failed=False, policy=MONTH_POLICY)
        usage.append(retention.disk_usage(root))
    return usage


@pytest.mark.slow
@pytest.mark.training
def test_thirty_nights_disk_use_levels_off_with_retention(reference_run):
    from include.artifacts import load_model

    base = reference_run["base"]
    kept = simulate_month(base / "with", reference_run, with_retention=True)
    grown = simulate_month(base / "without", reference_run, with_retention=False)
    def mib(usage: dict[str, int]) -> float:
        return sum(usage.values()) / 2**20

    per_run_models = retention.size_of(reference_run["paths"].models)
    per_run_report = retention.size_of(reference_run["paths"].reports)
    [entry] = store_entries(base / "with")
    print(f"\nafter {NIGHTS} nights: with retention {mib(kept[-1]):.2f} MiB {kept[-1]}, without "
          f"{mib(grown[-1]):.2f} MiB {grown[-1]}; per night: models {per_run_models} B, report {per_run_report} B, "
          f"split arrays {retention.size_of(entry)} B (stored once; copied per run before the store)")

    # With retention, models and data stop growing once the policy's window is full...
    steady = [u["models"] + u["data"] for u in kept[MONTH_POLICY.keep_model_runs:]]
    assert max(steady) - min(steady) < 100, steady  # champion.json's digits vary, nothing else
    assert kept[-1]["models"] <= (MONTH_POLICY.keep_model_runs + 1) * per_run_models  # + the champion's one model
    # ...and only the reports (always kept, as the policy says) grow, by one report and a history line a night.
    growth = [b["reports"] - a["reports"] for a, b in itertools.pairwise(kept)]
    assert all(per_run_report <= g <= per_run_report + 200 for g in growth), growth
    # Without it, every night's models stay.
    assert grown[-1]["models"] >= NIGHTS * per_run_models > 4 * kept[-1]["models"]

    # What the policy keeps is whole: every report and history line, the newest runs' models, the champion.
    root = base / "with"
    assert len(list((root / "reports").glob("*/report.html"))) == NIGHTS
    assert [r["night"] for r in history.read_history(root / "reports" / "history.jsonl")] == list(range(1, NIGHTS + 1))
    assert sorted(p.name for p in (root / "models").iterdir() if p.name != "champion") == sorted(
        RunPaths.for_run(f"scheduled__2026-01-{n:02d}T02:00:00+00:00").run for n in range(26, 31))
    champ = history.read_champion(root / "models" / "champion")
    assert champ["run"] == RunPaths.for_run("scheduled__2026-01-28T02:00:00+00:00").run
    assert sorted((root / "models" / "champion").glob("*.keras")) == [Path(champ["model_path"])]
    load_model(champ["model_path"])
    assert sorted(p.name for p in (root / "data").iterdir()) == ["splits"]  # every night's scratch is gone


@pytest.mark.unit
def test_retention_settings_come_from_the_run_config():
    from tasks import retention as step

    policy = step.policy_for({"keep_model_runs": 9, "keep_split_sets": 3}, timedelta(hours=2))
    assert policy == RetentionPolicy(keep_model_runs=9, keep_split_sets=3, grace=timedelta(hours=2))
    assert step.policy_for({"keep_model_runs": 0}, timedelta(hours=2)) is None  # invalid: the run failed on it
    with pytest.raises(Exception, match="keep_model_runs"):
        ExperimentConfig.from_params({"keep_model_runs": 0})


@pytest.mark.unit
def test_unknown_task_states_count_as_a_failed_run():
    """If Airflow cannot tell the teardown how the run went, it removes only the run's own scratch."""
    from types import SimpleNamespace

    from tasks import retention as step

    def ctx(states):
        def get_ti_count(dag_id, run_ids, states=None, **_):  # the Task SDK's filter, on a fixed run
            if isinstance(run_states, Exception):
                raise run_states
            assert (dag_id, run_ids) == ("d", ["r"])
            return sum(s in states for s in run_states)
        run_states = states
        return {"ti": SimpleNamespace(get_ti_count=get_ti_count), "dag": SimpleNamespace(dag_id="d"), "run_id": "r"}

    assert step.run_failed(ctx(ConnectionError("execution API unreachable"))) is True
    assert step.run_failed(ctx(["success", "upstream_failed"])) is True
    assert step.run_failed(ctx(["success", "failed"])) is True
    assert step.run_failed(ctx(["success", "skipped"])) is False


PROBE_DAG = """
import json, sys
import pendulum
from airflow.sdk import dag, get_current_context, task
from tasks import retention as step

@dag(dag_id="tl_run_failed_probe", schedule=None, start_date=pendulum.datetime(2026, 1, 1))
def probe():
    @task
    def work():
        if get_current_context()["params"]["fail"]:
            raise RuntimeError("boom")

    @task
    def teardown():
        print("RUN_FAILED=" + json.dumps(step.run_failed(get_current_context())), flush=True)

    work() >> teardown().as_teardown()

d = probe()
if __name__ == "__main__":
    d.test(run_conf={"fail": sys.argv[1] == "fail"})
"""


@pytest.mark.airflow
@pytest.mark.slow
def test_the_teardown_reads_the_runs_task_states_through_the_task_sdk(airflow_db, tmp_path):
    """run_failed against Airflow's real records (dag.test() of a two-task DAG in its own dags folder):
    a failed task makes the run count as failed, an all-green run does not."""
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "probe.py").write_text(PROBE_DAG.replace('schedule=None,', 'schedule=None, params={"fail": False},'))
    # Its own metadata DB: another process writing the session's SQLite file while this pytest process
    # holds connections to it is a risk the other airflow tests should not share.
    env = {**os.environ, "AIRFLOW__CORE__DAGS_FOLDER": str(dags), "PYTHONPATH": str(Path(__file__).parents[2]),
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path / 'probe.db'}"}
    migrated = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, capture_output=True,
                              text=True, timeout=300)
    assert migrated.returncode == 0, migrated.stdout[-3000:] + migrated.stderr[-3000:]
    seen = {}
    for how in ("fail", "pass"):
        res = subprocess.run([sys.executable, str(dags / "probe.py"), how], env=env, capture_output=True, text=True,
                             timeout=300)
        lines = [ln for ln in (res.stdout + res.stderr).splitlines() if "RUN_FAILED=" in ln]
        assert lines, res.stdout[-3000:] + res.stderr[-3000:]
        seen[how] = json.loads(lines[-1].split("RUN_FAILED=", 1)[1].split()[0])
    assert seen == {"fail": True, "pass": False}

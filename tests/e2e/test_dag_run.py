"""Whole DAG runs through dag.test(): tiny synthetic IDX files, then a short run on the real data."""

from pathlib import Path

import pytest

from include import data
from tests.conftest import files_under, load_dag

pytestmark = [pytest.mark.airflow, pytest.mark.training]

DAG_ID = "fashion_mnist_transfer_learning"


def run_dag(conf: dict, **test_kwargs):
    """Run one DagRun in-process; return (dagrun, {task_id: [states]}, {(task_id, map_index): xcom value})."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    dr = load_dag().test(run_conf=conf, **test_kwargs)
    with create_session() as session:
        tis = session.scalars(select(type(dr.get_task_instances()[0])).where(
            type(dr.get_task_instances()[0]).run_id == dr.run_id)).all() if dr.get_task_instances() else []
        states: dict[str, list[str]] = {}
        for ti in tis:
            states.setdefault(ti.task_id, []).append(str(ti.state))
        rows = session.scalars(XComModel.get_many(run_id=dr.run_id, dag_ids=DAG_ID, key="return_value")).all()
        xcoms = {(r.task_id, r.map_index): XComModel.deserialize_value(r) for r in rows}
    return dr, states, xcoms


def _paths_in(value) -> list[str]:
    out = []
    if isinstance(value, dict):
        for k, v in value.items():
            if k.endswith("_path") or k in ("manifest", "report_dir"):
                out.append(v)
            else:
                out += _paths_in(v)
    elif isinstance(value, list):
        for v in value:
            out += _paths_in(v)
    return out


@pytest.mark.slow
def test_tiny_run_every_task_succeeds_and_metrics_are_complete(airflow_db, artifact_root, tiny_conf):
    from include.artifacts import read_json

    dr, states, xcoms = run_dag(tiny_conf)
    assert str(dr.state) == "success", states
    assert set(states) == {"split_data", "pretrain", "train_scratch", "transfer.head", "transfer.finetune",
                           "compare_report", "promote_champion", "apply_retention"}
    assert all(s == "success" for v in states.values() for s in v), states
    from include.config import ExperimentConfig
    from tasks.split_data import seed_chunks

    # Mapped per chunk of seeds_per_task seeds; each job names the seeds its tasks train.
    chunks = seed_chunks(ExperimentConfig.from_params(tiny_conf))
    assert len(states["pretrain"]) == len(states["train_scratch"]) == len(chunks)
    assert sorted(s for c in chunks for s in c) == sorted(tiny_conf["seeds"])

    # XCom carries paths (that exist) and small dicts, never arrays.
    paths = _paths_in(list(xcoms.values()))
    # The split manifest was run scratch: the teardown removed it (and said so in its XCom).
    scratch = [p for p in paths if Path(p).name == "split.json"]
    assert scratch and not any(Path(p).exists() for p in scratch)
    assert xcoms[("apply_retention", -1)]["failed_run"] is False
    assert f"data/{Path(scratch[0]).parent.name}" in xcoms[("apply_retention", -1)]["removed"]
    assert len(paths) > 10 and all(Path(p).exists() for p in paths if p not in scratch)
    import json
    assert all(len(json.dumps(v)) < 20_000 for v in xcoms.values())
    for p in paths:
        assert Path(p).resolve().is_relative_to(artifact_root)

    report = xcoms[("compare_report", -1)]
    m = read_json(report["metrics_path"])
    for model in ("scratch", "transfer"):
        s = m["models"][model]
        assert 0.0 <= s["test_accuracy"]["mean"] <= 1.0 and s["test_loss"]["mean"] > 0
        assert s["n_train"] > 0 and all(v > 0 for v in s["wall_seconds"].values())
        assert sum(s["epochs_run"].values()) >= 1
    assert m["models"]["scratch"]["n_train"] == 60  # 40 per class * 2 - 20 validation
    assert m["models"]["transfer"]["epochs_run"] == {"head": 1, "finetune": 1}
    assert set(m["models"]["transfer"]["wall_seconds"]) >= {"head", "finetune"}
    assert "mean" in m["headline"]["error_rate_reduction"]
    assert m["config"]["seeds"] == [42, 7] and m["data"]["sha256"]["train_images"]
    assert m["provenance"]["packages"]["keras"].startswith("3.")
    assert m["verdict"]["kind"] in {"improves", "non_inferior", "no_difference", "worse", "inconclusive"}
    run_dir = Path(report["report_dir"])
    assert {"metrics.json", "report.md", "report.html"} <= files_under(run_dir)
    html = (run_dir / "report.html").read_text()
    assert m["verdict"]["text"].split("(")[0].strip()[:40] in html.replace("&#39;", "'")
    assert html.count("data:image/png;base64,") == 4  # learning curves, data efficiency, confusion, pooled
    # A mapped task's map index is a chunk of seeds, and the timing table says so.
    tis = {(t["task_id"], t["map_index"]): t for t in m["timings"]["task_instances"]}
    for i, chunk in enumerate(chunks):
        assert tis[("pretrain", i)]["seeds"] == list(chunk), tis
        label = f"chunk {i} (seed{'s' if len(chunk) > 1 else ''} {', '.join(map(str, chunk))})"
        assert f"<td>{label}</td>" in html


@pytest.mark.realdata
@pytest.mark.slow
def test_short_run_on_real_fashion_mnist(airflow_db, artifact_root):
    from include.artifacts import read_json

    conf = {"seeds": [42], "fractions": [0.7], "pretrain_epochs": 2, "scratch_epochs": 2, "head_epochs": 2,
            "finetune_epochs": 2, "data_dir": str(data.DEBIAN_DIR)}
    dr, states, xcoms = run_dag(conf)
    assert str(dr.state) == "success", states
    m = read_json(xcoms[("compare_report", -1)]["metrics_path"])
    assert m["data"]["counts"] == {"pretrain_train": 43000, "pretrain_val": 5000, "target_train": 9000,
                                   "target_val": 3000, "target_test": 2000}
    assert m["models"]["scratch"]["n_train"] == 9000 and m["models"]["transfer"]["n_train"] == 6300
    assert m["data"]["sha256"] == data.OFFICIAL_SHA256
    assert m["models"]["scratch"]["test_accuracy"]["mean"] >= 0.90
    assert m["models"]["transfer"]["test_accuracy"]["mean"] >= 0.90

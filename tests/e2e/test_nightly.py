"""Nightly runs through dag.test(): fresh seeds per logical date, pooled evidence, a provoked drift alert.

dag.test() always makes a manual run; here its run is created as a *scheduled* one (the type the
scheduler gives a nightly run), so the tasks see the same run type and logical date as at 02:00.
"""

import json
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import pytest

from include.artifacts import read_json
from include.seeding import SENTINEL_SEED, nightly_seeds
from tests import alert_servers
from tests.e2e.test_dag_run import run_dag

# The real alert receivers, as this module's fixtures (tests take them by these names).
smtp_server = alert_servers.smtp_server
webhook_receiver = alert_servers.webhook_receiver

pytestmark = [pytest.mark.airflow, pytest.mark.training, pytest.mark.services, pytest.mark.slow]

NIGHTS = [datetime(2026, 11, d, 2, 0, tzinfo=UTC) for d in (27, 28, 29)]


@pytest.fixture
def scheduled_runs(monkeypatch):
    """Make dag.test() create its DagRun as the scheduler would: run type 'scheduled'."""
    from airflow.models.dagrun import DagRun
    from airflow.serialization.definitions.dag import SerializedDAG
    from airflow.utils.types import DagRunType

    real = SerializedDAG.create_dagrun

    def as_scheduled(self, *, run_id, run_type, logical_date, run_after, **kw):
        # The scheduler's run id for a cron night: run_after is the night itself, so a re-run keeps the id.
        run_id = DagRun.generate_run_id(run_type=DagRunType.SCHEDULED, logical_date=logical_date, run_after=run_after)
        return real(self, run_id=run_id, run_type=DagRunType.SCHEDULED, logical_date=logical_date,
                    run_after=run_after, **kw)

    monkeypatch.setattr(SerializedDAG, "create_dagrun", as_scheduled)


def night(conf, when):
    dr, states, xcoms = run_dag(conf, logical_date=when, run_after=when)
    assert str(dr.state) == "success", states
    assert dr.run_type == "scheduled"
    return dr, read_json(xcoms[("compare_report", -1)]["metrics_path"]), xcoms[("compare_report", -1)]


def accuracies(m):
    return {(r["model"], r["fraction"], r["seed"]): r["test_accuracy"] for r in m["results"]}


@pytest.mark.slow
def test_three_nights_draw_disjoint_seeds_pool_them_and_a_rerun_with_provoked_drift_alerts(
        airflow_db, artifact_root, tiny_conf, scheduled_runs, smtp_server, webhook_receiver):
    conf = {**tiny_conf, "seeds": [1, 2], "fractions": [0.5]}  # two fresh seeds a night, plus the sentinel
    metrics = [night(conf, when)[1] for when in NIGHTS]

    seed_sets = [set(m["nightly"]["seeds"]) - {SENTINEL_SEED} for m in metrics]
    for when, m in zip(NIGHTS, metrics):
        assert m["nightly"]["seeds"] == [*nightly_seeds(when, 2), SENTINEL_SEED]
        assert m["nightly"]["run_type"] == "scheduled"
        assert m["nightly"]["logical_date"].startswith(when.date().isoformat())
    assert not (seed_sets[0] & seed_sets[1]) and not (seed_sets[1] & seed_sets[2]) and not (seed_sets[0] & seed_sets[2])
    assert len({m["nightly"]["experiment_key"] for m in metrics}) == 1

    third = metrics[2]["nightly"]["pooled"]
    assert third["n_nights"] == 3 and third["n_seeds"] == 7  # 3 nights x 2 fresh seeds + the sentinel once
    assert set(third["seeds"]) == set().union(*seed_sets) | {SENTINEL_SEED}
    assert [n["n_seeds"] for n in third["nights"]] == [3, 5, 7]
    html = (artifact_root / "reports" / metrics[2]["run"] / "report.html").read_text()
    assert third["experiment_key"] in html and third["verdict"]["text"] in html.replace("&#39;", "'")
    assert [m["nightly"]["sentinel"]["status"] for m in metrics] == ["no_reference", "reproduced", "reproduced"]
    assert webhook_receiver == [] and smtp_server == []  # nothing to alert about so far

    # Provoke drift: night 2's record now says it ran with another numpy and got another sentinel number.
    path = artifact_root / "reports" / "history.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    second = next(r for r in lines if r["logical_date"].startswith(NIGHTS[1].date().isoformat()))
    second["environment"]["package numpy"] = "1.0.0"
    key = next(iter(second["sentinel"]["accuracies"]))
    second["sentinel"]["accuracies"][key] -= 0.01
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in lines))

    # Night 3 cleared and re-run: same run, seeds and numbers, same pooled evidence; the drift alerts.
    dr, rerun, out = night(conf, NIGHTS[2])
    assert rerun["run"] == metrics[2]["run"] and rerun["nightly"]["seeds"] == metrics[2]["nightly"]["seeds"]
    assert accuracies(rerun) == accuracies(metrics[2])
    assert rerun["nightly"]["pooled"] == metrics[2]["nightly"]["pooled"]
    drift = rerun["nightly"]["sentinel"]
    assert drift["status"] == "drift" and drift["environment_changes"][0].startswith("package numpy: 1.0.0 -> ")
    assert out["findings"] == [{"kind": "sentinel_drift", "what": drift["text"]}]

    [hook] = webhook_receiver
    [mail] = smtp_server
    for text in (hook["json"]["text"], mail.get_body(("html",)).get_content()):
        assert "package numpy: 1.0.0 -&gt; " in text or "package numpy: 1.0.0 -> " in text
        assert dr.run_id in text and "compare_report" in text and "fashion_mnist_transfer_learning" in text
    assert hook["json"]["link"].endswith(f"/transfer-learning-reports/report/{rerun['run']}/report.html")
    assert mail["Subject"].startswith("[Airflow alert] fashion_mnist_transfer_learning: sentinel drift")


@pytest.mark.slow
def test_a_failed_task_and_the_failed_run_alert_with_links_and_add_no_evidence(
        airflow_db, artifact_root, tiny_conf, tmp_path, smtp_server, webhook_receiver):
    broken = tmp_path / "broken-idx"
    broken.mkdir()
    for f in Path(tiny_conf["data_dir"]).iterdir():
        (broken / f.name).write_bytes(f.read_bytes()[:40])  # truncated files: split_data fails at once
    dr, states, _ = run_dag({**tiny_conf, "data_dir": str(broken)})
    assert str(dr.state) == "failed" and states["split_data"] == ["failed"]
    kinds = {h["json"]["kind"]: h["json"] for h in webhook_receiver}
    assert set(kinds) == {"task_failed", "run_failed"}, webhook_receiver
    assert kinds["task_failed"]["task_id"] == "split_data" and "/tasks/split_data" in kinds["task_failed"]["link"]
    assert kinds["run_failed"]["link"].endswith(f"/dags/fashion_mnist_transfer_learning/runs/{quote(dr.run_id)}")
    subjects = {m["Subject"].split(":")[1].strip().split(" in run")[0] for m in smtp_server}
    assert subjects == {"task failed", "run failed"}
    assert not (artifact_root / "reports" / "history.jsonl").exists()  # a failed night adds nothing

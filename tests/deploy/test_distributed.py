"""The DAG on Airflow's distributed mode with real components (`make e2e-distributed`).

api-server, scheduler, dag-processor, triggerer and celery worker(s) run as separate processes with
CeleryExecutor against the machine's PostgreSQL (fresh database, dropped afterwards) and Redis; runs
are triggered and inspected only through the authenticated REST API (/api/v2).
Cost: about 2 minutes on 2 cores (component start-up ~40 s, a failing run, then eight short tasks).
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from pathlib import Path

import pytest

from deploy.local_stack import DEFAULT_POSTGRES_URL, DEFAULT_REDIS_URL, LocalStack, services_missing
from include.artifacts import safe_run_id
from tests.deploy.airflow_api import DAG_ID, AirflowApi, label, print_run
from tests.synthetic import TINY_CONF

pytestmark = [pytest.mark.slow, pytest.mark.airflow, pytest.mark.services, pytest.mark.training]

# One seed and one fraction: still every task of the DAG, including the parallel branch.
CONF = {**TINY_CONF, "seeds": [42], "fractions": [0.5]}
RUN_TIMEOUT_S = float(os.environ.get("TL_E2E_TIMEOUT", "420"))
# Two workers of two slots each, as `--scale airflow-worker=2`: a finished task's supervisor can hold
# its slot for a few seconds after the task succeeded, which must not serialise the parallel branch.
WORKERS = int(os.environ.get("TL_E2E_WORKERS", "2"))
# Test-only: the nightly cron would otherwise start a full real-data run the moment the DAG is
# unpaused (catchup=False runs the latest missed interval). Manual triggers still run.
NO_CRON = {"AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False"}


@pytest.fixture(scope="module", autouse=True)
def _services() -> None:
    """PostgreSQL and Redis, started here if installed; where they cannot be, one line says how to provide
    them and the tier is skipped, except under CI=true, where a missing service is a failure."""
    missing = services_missing(os.environ.get("TL_E2E_POSTGRES_URL", DEFAULT_POSTGRES_URL),
                               os.environ.get("TL_E2E_REDIS_URL", DEFAULT_REDIS_URL))
    if missing:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{missing} (CI=true: the services tier must run)", pytrace=False)
        pytest.skip(missing)


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _xcom(api: AirflowApi, run_id: str, task_id: str) -> object:
    value = api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value",
                params={"deserialize": "true"})["value"]
    return json.loads(value) if isinstance(value, str) else value


def test_dag_runs_on_celery_workers(tmp_path: Path, tiny_data: Path) -> None:
    conf = {**CONF, "data_dir": str(tiny_data)}
    run_id = f"e2e_distributed__{int(time.time())}"
    with LocalStack(tmp_path / "stack", workers=WORKERS, overrides=NO_CRON) as stack:
        api = AirflowApi(stack.base_url, stack.username, stack.password, check_alive=stack.check_alive,
                         diagnostics=stack.tails)
        dag = api.wait_for_dag()  # authenticates with the admin password
        # ...which reached `airflow users create` on stdin: argv is world-readable through `ps`.
        assert stack.cli_calls and not any(stack.password in " ".join(argv) for argv in stack.cli_calls)
        assert dag["is_paused"] is False, "DAGS_ARE_PAUSED_AT_CREATION=False should leave the DAG unpaused"

        # A run that must fail: the harness stops at once and shows the failing task's log.
        bad_id = f"{run_id}_missing_data"
        api.trigger(bad_id, {**conf, "data_dir": str(tmp_path / "no-such-folder")})
        with pytest.raises(pytest.fail.Exception) as failed:
            api.wait_for_run(bad_id, timeout=120)
        assert "log of split_data" in str(failed.value) and "data folder does not exist" in str(failed.value)
        print("a failing run fails loudly with the task's log: ok")

        api.trigger(run_id, conf)
        state, tis = api.wait_for_run(run_id, RUN_TIMEOUT_S)
        print_run(run_id, state, tis)
        if state != "success":
            api.fail_with_logs(run_id, tis, f"run {run_id} ended {state}")

        by_label = {label(ti): ti for ti in tis}
        assert set(by_label) == {"split_data", "pretrain[0]", "train_scratch[0]", "transfer.head[0]",
                                 "transfer.finetune[0]", "compare_report", "promote_champion", "apply_retention"}
        # Every task went through our celery queue; promotion runs (first run: no champion yet).
        assert all(ti["state"] == "success" and ti["hostname"] for ti in tis), tis
        assert all(ti["queue"] == stack.stack_id for ti in tis)

        # The parallel branch: each of pretrain and train_scratch started before the other finished.
        pre, scr = by_label["pretrain[0]"], by_label["train_scratch[0]"]
        starts = [_ts(pre["start_date"]), _ts(scr["start_date"])]
        ends = [_ts(pre["end_date"]), _ts(scr["end_date"])]
        print(f"parallel branch: last start {max(starts).isoformat()} < first end {min(ends).isoformat()}")
        assert max(starts) < min(ends), f"pretrain and train_scratch did not overlap: {starts} / {ends}"

        # XComs through the API: small JSON with paths on the shared artifact root.
        root = stack.artifact_root
        jobs = _xcom(api, run_id, "split_data")
        report = _xcom(api, run_id, "compare_report")
        assert [j["seeds"] for j in jobs] == [[42]]
        assert Path(jobs[0]["manifest"]).is_relative_to(root) and Path(report["html_path"]).is_relative_to(root)
        listed = api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/pretrain/xcomEntries/return_value",
                     params={"map_index": 0, "deserialize": "true"})["value"]
        # A chunk's pretrained models: one small dict per seed, its model on the shared root.
        pretrained = json.loads(listed) if isinstance(listed, str) else listed
        assert [p["seed"] for p in pretrained] == [42] and Path(pretrained[0]["model_path"]).is_relative_to(root)

        # One task's log through the API: compare_report logs its verdict.
        log = api.task_log(run_id, by_label["compare_report"])
        assert "Verdict:" in log, log[-2000:]

        # The report on the shared artifact root, written by whichever worker ran compare_report.
        run_dir = root / "reports" / safe_run_id(run_id)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["run_id"] == run_id and metrics["headline"]["seeds"] == [42]
        assert report["verdict"] == metrics["verdict"]["kind"]
        assert metrics["verdict"]["text"].split(".")[0] in (run_dir / "report.html").read_text()
        history = [json.loads(line) for line in (root / "reports" / "history.jsonl").read_text().splitlines()]
        assert [h["run_id"] for h in history] == [run_id]
        print(f"report: {run_dir / 'report.html'} (verdict: {metrics['verdict']['kind']})")

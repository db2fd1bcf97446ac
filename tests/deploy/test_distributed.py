"""The DAG on Airflow's distributed mode with real components (`make e2e-distributed`).

api-server, scheduler, dag-processor, triggerer and celery worker(s) run as separate processes with
CeleryExecutor against the machine's PostgreSQL (fresh database, dropped afterwards) and Redis; the
run is triggered and inspected only through the authenticated REST API (/api/v2).
Cost: about 2-3 minutes on 2 cores (component start-up ~40 s, six short TensorFlow tasks).
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from deploy.local_stack import LocalStack, StackError
from include.artifacts import safe_run_id
from tests.synthetic import TINY_CONF

pytestmark = pytest.mark.slow

DAG_ID = "fashion_mnist_transfer_learning"
# One seed and one fraction: still every task of the DAG, including the parallel branch.
CONF = {**TINY_CONF, "seeds": [42], "fractions": [0.5]}
RUN_TIMEOUT_S = float(os.environ.get("TL_E2E_TIMEOUT", "420"))
WORKERS = int(os.environ.get("TL_E2E_WORKERS", "1"))
# Test-only: the nightly cron would otherwise start a full real-data run the moment the DAG is
# unpaused (catchup=False runs the latest missed interval). Manual triggers still run.
NO_CRON = {"AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False"}


def _ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _label(ti: dict[str, Any]) -> str:
    return ti["task_id"] + (f"[{ti['map_index']}]" if ti["map_index"] >= 0 else "")


def _log_line(item: Any) -> str:
    """One structured log event as text, with the exception chain where the task failed."""
    if not isinstance(item, dict):
        return str(item)
    line = " ".join(str(item[k]) for k in ("timestamp", "level", "event") if item.get(k))
    for exc in item.get("error_detail") or []:
        frames = exc.get("frames") or []
        where = f" (at {frames[-1]['filename']}:{frames[-1]['lineno']})" if frames else ""
        line += f"\n    {exc.get('exc_type')}: {exc.get('exc_value')}{where}"
    return line


def task_log(stack: LocalStack, run_id: str, ti: dict[str, Any]) -> str:
    r = stack.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{ti['task_id']}/logs/{max(ti['try_number'], 1)}",
                  params={"map_index": ti["map_index"], "full_content": "true"},
                  headers={"Accept": "application/json"})
    return "\n".join(_log_line(item) for item in r["content"])


def task_instances(stack: LocalStack, run_id: str) -> list[dict[str, Any]]:
    return stack.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances", params={"limit": 100})["task_instances"]


def fail_with_logs(stack: LocalStack, run_id: str, tis: list[dict[str, Any]], why: str) -> None:
    bad = [ti for ti in tis if ti["state"] in ("failed", "up_for_retry")]
    parts = [why]
    for ti in bad:
        try:
            parts.append(f"--- log of {_label(ti)} (state {ti['state']}, try {ti['try_number']}) ---\n"
                         f"{task_log(stack, run_id, ti)}")
        except StackError as exc:
            parts.append(f"--- log of {_label(ti)} unavailable: {exc}")
    if not bad:  # nothing failed: show what the components were doing
        parts += [f"--- {c.name} ---\n{c.tail(20)}" for c in stack.components]
    message = "\n".join(parts)
    print(message)
    pytest.fail(message, pytrace=False)


def wait_for_dag(stack: LocalStack, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stack.check_alive()
        r = stack.api("GET", f"/dags/{DAG_ID}", expect=(200, 404), raw=True)
        if r.status_code == 200:
            return r.json()
        time.sleep(2)
    errors = stack.api("GET", "/importErrors")
    raise StackError(f"{DAG_ID} not parsed after {timeout:.0f}s; import errors: {json.dumps(errors)[:2000]}")


def trigger(stack: LocalStack, run_id: str, conf: dict[str, Any]) -> dict[str, Any]:
    run = stack.api("POST", f"/dags/{DAG_ID}/dagRuns", json={"dag_run_id": run_id, "logical_date": None, "conf": conf})
    assert run["conf"] == conf
    print(f"triggered {run_id} through POST /api/v2/dags/{DAG_ID}/dagRuns")
    return run


def wait_for_run(stack: LocalStack, run_id: str, timeout: float = RUN_TIMEOUT_S) -> tuple[str, list[dict[str, Any]]]:
    """Poll until the run ends; a failed or retrying task fails the test at once, with its log."""
    deadline = time.monotonic() + timeout
    while True:
        stack.check_alive()
        state = stack.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}")["state"]
        tis = task_instances(stack, run_id)
        if any(ti["state"] in ("failed", "up_for_retry") for ti in tis):
            fail_with_logs(stack, run_id, tis, f"run {run_id}: a task failed (run state {state})")
        if state in ("success", "failed"):
            return state, tis
        if time.monotonic() > deadline:
            fail_with_logs(stack, run_id, tis, f"run {run_id} still {state} after {timeout:.0f}s: "
                           + ", ".join(f"{_label(t)}={t['state']}" for t in tis))
        time.sleep(3)


def test_dag_runs_on_celery_workers(tmp_path: Path, tiny_data: Path) -> None:
    conf = {**CONF, "data_dir": str(tiny_data)}
    run_id = f"e2e_distributed__{int(time.time())}"
    with LocalStack(tmp_path / "stack", workers=WORKERS, overrides=NO_CRON) as stack:
        dag = wait_for_dag(stack)
        assert dag["is_paused"] is False, "DAGS_ARE_PAUSED_AT_CREATION=False should leave the DAG unpaused"

        # A run that must fail: the harness stops at once and shows the failing task's log.
        bad_id = f"{run_id}_missing_data"
        trigger(stack, bad_id, {**conf, "data_dir": str(tmp_path / "no-such-folder")})
        with pytest.raises(pytest.fail.Exception) as failed:
            wait_for_run(stack, bad_id, timeout=120)
        assert "log of split_data" in str(failed.value) and "data folder does not exist" in str(failed.value)
        print("a failing run fails loudly with the task's log: ok")

        trigger(stack, run_id, conf)

        state, tis = wait_for_run(stack, run_id)
        print(f"\nrun {run_id}: {state}")
        print(f"{'task':22} {'state':9} {'start (UTC)':27} {'end (UTC)':27} worker hostname")
        for ti in sorted(tis, key=lambda t: (t["start_date"] or "", _label(t))):
            print(f"{_label(ti):22} {ti['state'] or '-':9} {ti['start_date'] or '-':27} {ti['end_date'] or '-':27} "
                  f"{ti['hostname'] or '-'}")
        if state != "success":
            fail_with_logs(stack, run_id, tis, f"run {run_id} ended {state}")

        by_label = {_label(ti): ti for ti in tis}
        expected = {"split_data", "pretrain[0]", "train_scratch[0]", "transfer.head[0]", "transfer.finetune[0]",
                    "compare_report", "promote_champion"}
        assert set(by_label) == expected
        # Every task went through a celery worker; promotion runs (first run: no champion yet).
        assert all(ti["state"] == "success" and ti["hostname"] for ti in tis), tis
        assert all(ti["queue"] == stack.stack_id for ti in tis)

        # The parallel branch: each of pretrain and train_scratch started before the other finished.
        pre, scr = by_label["pretrain[0]"], by_label["train_scratch[0]"]
        starts, ends = [_ts(pre["start_date"]), _ts(scr["start_date"])], [_ts(pre["end_date"]), _ts(scr["end_date"])]
        print(f"parallel branch: last start {max(starts).isoformat()} < first end {min(ends).isoformat()}")
        assert max(starts) < min(ends), f"pretrain and train_scratch did not overlap: {starts} / {ends}"

        # XComs through the API: small JSON with paths on the shared artifact root.
        base = f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances"
        jobs = stack.api("GET", f"{base}/split_data/xcomEntries/return_value", params={"deserialize": "true"})["value"]
        jobs = json.loads(jobs) if isinstance(jobs, str) else jobs
        assert [j["seed"] for j in jobs] == [42]
        report = stack.api("GET", f"{base}/compare_report/xcomEntries/return_value", params={"deserialize": "true"})["value"]
        report = json.loads(report) if isinstance(report, str) else report
        root = stack.artifact_root
        assert Path(jobs[0]["manifest"]).is_relative_to(root) and Path(report["html_path"]).is_relative_to(root)
        listed = stack.api("GET", f"{base}/pretrain/xcomEntries", params={"map_index": 0})
        # `-> dict` tasks also push each key (multiple_outputs); the model path is one of them.
        assert {"return_value", "model_path"} <= {x["key"] for x in listed["xcom_entries"]}

        # One task's log through the API: compare_report logs its verdict.
        log = task_log(stack, run_id, by_label["compare_report"])
        assert "Verdict:" in log, log[-2000:]

        # The report on the shared artifact root, written by whichever worker ran compare_report.
        run_dir = root / "reports" / safe_run_id(run_id)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["run_id"] == run_id and metrics["headline"]["seeds"] == [42]
        assert report["verdict"] == metrics["verdict"]["kind"]
        html = (run_dir / "report.html").read_text()
        assert metrics["verdict"]["text"].split(".")[0] in html
        history = [json.loads(line) for line in (root / "reports" / "history.jsonl").read_text().splitlines()]
        assert [h["run_id"] for h in history] == [run_id]
        print(f"report: {run_dir / 'report.html'} (verdict: {metrics['verdict']['kind']})")

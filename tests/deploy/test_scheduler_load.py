"""Several runs at once through the scheduler: max_active_runs holds, all succeed, disk stays in policy.

The local distributed stack (deploy/local_stack.py: api-server, scheduler, dag-processor, triggerer,
a celery worker; real PostgreSQL and Redis) gets three runs triggered back to back through the REST
API. The DAG allows one active run: the other two must wait queued, then run and succeed one after
the other. Each run's teardown applies the retention policy (keep_model_runs=2 here), so after the
third run the first run's models are gone and every report, the history and the champion remain.
Cost: about 13 minutes on a shared, busy 2-core box (start-up ~1.5 min, then three tiny-data runs of
~3 minutes each, one after the other).
"""

from __future__ import annotations

import itertools
import json
import os
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from deploy.local_stack import LocalStack
from deploy.processes import NotReady, wait_until
from include import history
from include.artifacts import load_model, safe_run_id
from tests.deploy.airflow_api import DAG_ID, AirflowApi, label
from tests.synthetic import TINY_CONF

pytestmark = [pytest.mark.slow, pytest.mark.services, pytest.mark.airflow, pytest.mark.training]

RUNS = 3
CONF = {**TINY_CONF, "seeds": [42], "fractions": [0.5], "keep_model_runs": 2}
RUN_TIMEOUT_S = float(os.environ.get("TL_E2E_TIMEOUT", "420")) * RUNS
NO_CRON = {"AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False"}  # manual triggers only (see test_distributed.py)


class PinnedStack(LocalStack):
    """The local stack, with its database/queue name prefix and first port pinnable by the environment
    (TL_E2E_DB_PREFIX, TL_E2E_PORT_BASE) for machines that share PostgreSQL, Redis and port ranges."""

    def __post_init__(self) -> None:
        super().__post_init__()
        prefix = os.environ.get("TL_E2E_DB_PREFIX")
        if prefix:
            self.stack_id = self.db_name = f"{prefix}_{self.stack_id}"
        base = os.environ.get("TL_E2E_PORT_BASE")
        if base:
            self.api_port, self.scheduler_health_port, self.log_port, self.trigger_log_port = (
                int(base) + i for i in range(4))
            self.base_url = f"http://127.0.0.1:{self.api_port}"


def plant(path: Path, age_days: float = 3) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * 1000)
    when = time.time() - age_days * 86400
    for p in (path, path.parent):
        os.utime(p, (when, when))


def _ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def test_runs_triggered_together_queue_then_all_succeed_within_the_retention_policy(tmp_path: Path,
                                                                                  tiny_data: Path) -> None:
    conf = {**CONF, "data_dir": str(tiny_data)}
    run_ids = [f"load_{int(time.time())}_{i}" for i in range(RUNS)]
    with PinnedStack(tmp_path / "stack", workers=1, overrides=NO_CRON) as stack:
        # Three earlier nights' models and a writer killed then: old enough for the policy to remove.
        # Tonight's three runs are minutes apart, inside the grace period (the longest task timeout).
        old_runs = [f"scheduled__2026-01-0{i}T02:00:00+00:00" for i in (1, 2, 3)]
        for run_id in old_runs:
            plant(stack.artifact_root / "models" / safe_run_id(run_id) / "transfer_seed42_frac0.5.keras")
            plant(stack.artifact_root / "reports" / safe_run_id(run_id) / "report.html")
        plant(stack.artifact_root / "reports" / ".history.jsonl.k1ll.tmp")
        api = AirflowApi(stack.base_url, stack.username, stack.password, check_alive=stack.check_alive,
                         diagnostics=stack.tails)
        dag = api.wait_for_dag()
        assert dag["max_active_runs"] == 1
        for run_id in run_ids:
            api.trigger(run_id, conf)

        # Poll every run's state until all have ended: never more than one running; the others queued.
        seen = {"queued_while_running": False, "most_running": 0, "states": []}

        def all_succeeded() -> dict | None:
            stack.check_alive()
            listed = api("GET", f"/dags/{DAG_ID}/dagRuns", params={"limit": 100})["dag_runs"]
            runs = {r["dag_run_id"]: r for r in listed}
            seen["states"] = states = [runs[r]["state"] for r in run_ids]
            seen["most_running"] = max(seen["most_running"], states.count("running"))
            seen["queued_while_running"] |= "running" in states and "queued" in states
            if any(s == "failed" for s in states):
                bad = run_ids[states.index("failed")]
                api.fail_with_logs(bad, api.task_instances(bad), f"run {bad} failed; states {states}")
            return runs if all(s == "success" for s in states) else None

        try:
            runs = wait_until(all_succeeded, RUN_TIMEOUT_S, f"{RUNS} runs to succeed", interval=2,
                              errors=(httpx.TransportError,))
        except NotReady:
            pytest.fail(f"runs not finished after {RUN_TIMEOUT_S:.0f}s: {dict(zip(run_ids, seen['states']))}\n"
                        f"{stack.tails()}")
        most_running, seen_queued_while_running = seen["most_running"], seen["queued_while_running"]
        print(f"\n{RUNS} runs triggered together: at most {most_running} running at a time; queued runs seen "
              f"while one ran: {seen_queued_while_running}")
        assert most_running == 1 and seen_queued_while_running

        # One after the other: each run started after the previous one ended.
        spans = sorted((_ts(runs[r]["start_date"]), _ts(runs[r]["end_date"]), r) for r in run_ids)
        for (_, end, first), (start, _, second) in itertools.pairwise(spans):
            print(f"{first} ended {end.isoformat()}, {second} started {start.isoformat()}")
            assert start >= end, f"{second} started before {first} ended"
        for run_id in run_ids:
            tis = api.task_instances(run_id)
            states = {label(ti): ti["state"] for ti in tis}
            assert all(s in ("success", "skipped") for s in states.values()), states
            assert states["apply_retention"] == "success" and states["promote_champion"] in ("success", "skipped")

        root = stack.artifact_root
        # History and champion: one line per run, and a champion that is one of the promoted runs' models.
        rows = history.read_history(root / "reports" / "history.jsonl")
        assert sorted(r["run_id"] for r in rows) == sorted(run_ids)
        champ = history.read_champion(root / "models" / "champion")
        promoted = [r for r in run_ids if {label(t): t["state"] for t in api.task_instances(r)}["promote_champion"]
                    == "success"]
        assert champ["run_id"] in promoted, (champ, promoted)
        load_model(champ["model_path"])

        # Disk within the policy: models of the newest 2 runs and of runs within the grace (tonight's
        # three), the earlier nights' gone; the champion's one model, one split set, no run scratch,
        # no temp files; every report stays.
        model_runs = sorted(p.name for p in (root / "models").iterdir() if p.is_dir() and p.name != "champion")
        assert model_runs == sorted(map(safe_run_id, run_ids)), model_runs
        assert [p.name for p in (root / "models" / "champion").glob("*.keras")] == [Path(champ["model_path"]).name]
        assert [p.name for p in (root / "data").iterdir()] == ["splits"]
        assert len(list((root / "data" / "splits").iterdir())) == 1
        assert sorted(p.name for p in (root / "reports").iterdir() if p.is_dir()) == sorted(
            map(safe_run_id, run_ids + old_runs))
        assert not [p for p in root.rglob(".*") if ".tmp" in p.name]
        usage = {sub: sum(f.stat().st_size for f in (root / sub).rglob("*") if f.is_file())
                 for sub in ("data", "models", "reports")}
        print(f"disk after {RUNS} runs with keep_model_runs=2: {json.dumps(usage)}")

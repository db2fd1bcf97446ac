"""Consecutive scheduled nights on the real data through Airflow's scheduler: one backfill, default settings.

Starts `airflow standalone` (LocalExecutor, SQLite) in a fresh AIRFLOW_HOME on a free port, as
`make run` does, creates one backfill of N nights through the REST API (max_active_runs 1, conf
{}), waits for every night, and prints per night: logical date, seeds, wall time, the pooled
interval and verdict stored with it, and tonight's own t interval. JSON on stdout, a table on stderr.

The scheduler's own timetable is off here (AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE=False, as in
`make run`): only the backfill's nights run, none beside them (docs/nightly.md, "Backfills").

    .venv/bin/python benchmarks/real_nights.py --work /tmp/nights --first 2026-12-01 --nights 5
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DAG_ID = "fashion_mnist_transfer_learning"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True, help="fresh folder: AIRFLOW_HOME and the artifact root")
    ap.add_argument("--first", default="2026-12-01", help="logical date of the first night (UTC)")
    ap.add_argument("--nights", type=int, default=5)
    ap.add_argument("--timeout", type=float, default=3600)
    args = ap.parse_args()
    home, artifacts = args.work / "airflow", args.work / "artifacts"
    home.mkdir(parents=True, exist_ok=True)
    os.environ.update({"AIRFLOW_HOME": str(home), "TL_ARTIFACT_ROOT": str(artifacts),
                       "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
                       "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
                       "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                       "AIRFLOW__CORE__UNIT_TEST_MODE": "False", "TF_CPP_MIN_LOG_LEVEL": "2",
                       "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
                       "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db"})
    from scripts.make_run import Api, Components, wait_ready

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `timeout`: stop Airflow's components first

    airflow = Path(sys.executable).with_name("airflow")
    subprocess.run([str(airflow), "db", "migrate"], check=True, stdout=subprocess.DEVNULL)
    components = Components(home, home / "standalone.log")
    api = Api(components.url, home)
    first = datetime.fromisoformat(args.first).replace(tzinfo=UTC)
    started = time.monotonic()
    try:
        wait_ready(components, api)
        backfill = api("POST", "/backfills", json={
            "dag_id": DAG_ID, "from_date": first.isoformat(),
            "to_date": (first + timedelta(days=args.nights - 1, hours=3)).isoformat(),
            "max_active_runs": 1, "reprocess_behavior": "none", "dag_run_conf": {}})
        print(f"backfill {backfill['id']} created {time.monotonic() - started:.0f} s after start", file=sys.stderr)
        runs = wait_for_runs(api, args.nights, args.timeout, artifacts)
    finally:
        components.stop()
    nights = [night(r, artifacts) for r in runs]
    table(nights)
    json.dump({"backfill_id": backfill["id"], "nights": nights, "all_runs": [
        {k: r[k] for k in ("dag_run_id", "run_type", "state", "logical_date")} for r in runs]}, sys.stdout, indent=2)
    print()
    return 0 if all(n["state"] == "success" for n in nights) else 1


def wait_for_runs(api, n: int, timeout: float, artifacts: Path) -> list[dict]:
    """Every run of the DAG once the backfill's n nights are done, or what there is at the timeout."""
    deadline, said = time.monotonic() + timeout, set()
    while True:
        runs = api("GET", f"/dags/{DAG_ID}/dagRuns", params={"limit": 100, "order_by": "logical_date"})["dag_runs"]
        for r in runs:
            if r["state"] in ("success", "failed") and r["dag_run_id"] not in said:
                said.add(r["dag_run_id"])
                table([night(r, artifacts)])  # as each night ends: partial results survive a timeout
        done = [r for r in runs if r["state"] in ("success", "failed")]
        if len([r for r in runs if r["run_type"] == "backfill"]) >= n and len(done) == len(runs):
            return runs
        if time.monotonic() > deadline:
            print(f"timeout after {timeout} s: {[(r['dag_run_id'], r['state']) for r in runs]}", file=sys.stderr)
            return runs
        time.sleep(15)


def night(run: dict, artifacts: Path) -> dict:
    from include.artifacts import safe_run_id

    out = {"run_id": run["dag_run_id"], "run_type": run["run_type"], "state": run["state"],
           "logical_date": run["logical_date"], "start_date": run["start_date"], "end_date": run["end_date"]}
    if run["start_date"] and run["end_date"]:
        out["wall_seconds"] = (datetime.fromisoformat(run["end_date"]) -
                               datetime.fromisoformat(run["start_date"])).total_seconds()
    metrics = artifacts / "reports" / safe_run_id(run["dag_run_id"]) / "metrics.json"
    if metrics.is_file():
        m = json.loads(metrics.read_text())
        p, t = m["nightly"]["pooled"], m["headline"]["difference"]
        out.update(seeds=m["nightly"]["seeds"], sentinel=m["nightly"]["sentinel"]["status"],
                   pooled={k: p[k] for k in ("segment", "n_seeds", "n_nights", "n_outside", "mean", "low", "high")},
                   pooled_verdict=p["verdict"]["kind"], pooled_text=p["verdict"]["text"],
                   tonight_t={k: t[k] for k in ("mean", "low", "high")},
                   tonight_verdict=m["headline"]["verdict"]["kind"])
    return out


def table(nights: list[dict]) -> None:
    w = sys.stderr.write
    w(f"{'logical date':<12} {'state':<8} {'wall s':>7} {'seeds':>6} {'pooled interval, points':>26} "
      f"{'pooled verdict':<16} {'tonight t interval':>20}\n")
    for n in nights:
        p, t = n.get("pooled"), n.get("tonight_t")
        pooled = f"{p['mean'] * 100:+.2f} [{p['low'] * 100:+.2f}, {p['high'] * 100:+.2f}]" if p else "-"
        tt = f"[{t['low'] * 100:+.2f}, {t['high'] * 100:+.2f}]" if t else "-"
        w(f"{str(n['logical_date'])[:10]:<12} {n['state']:<8} {n.get('wall_seconds', 0):>7.0f} "
          f"{p['n_seeds'] if p else '-':>6} {pooled:>26} {n.get('pooled_verdict', '-'):<16} {tt:>20}\n")


if __name__ == "__main__":
    sys.exit(main())

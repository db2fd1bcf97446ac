"""`make run`'s progress view: the summary's counts and estimate, the epoch read from task log files,
plain lines without a terminal, and Rich's live view."""

from __future__ import annotations

import json
from datetime import UTC
from pathlib import Path

import pytest

from scripts import make_run
from scripts.make_run import PLAIN_EVERY_S, Progress, TaskLogs, TaskView


def _tasks(now: float) -> list[TaskView]:
    return [
        TaskView("split_data", "success", now - 100, now - 90),
        TaskView("pretrain[0]", "success", now - 90, now - 50),
        TaskView("pretrain[1]", "running", now - 20, None, "pretrain[seed=7] epoch 3"),
        TaskView("train_scratch[0]", "queued"),
        TaskView("compare_report", "none"),
    ]


def test_summary_counts_and_estimates_from_finished_siblings() -> None:
    now = 1_000_000.0
    p = Progress(_tasks(now))
    assert (p.done, [t.label for t in p.running]) == (2, ["pretrain[1]"])
    # work done 10 + 40 = 50 s in 100 s busy -> throughput 0.5. Left: pretrain[1] 40 - 20 already run,
    # train_scratch[0] and compare_report at the mean of finished tasks (25 s each): 70 s of work -> 140 s.
    assert p.seconds_left(now) == pytest.approx(140.0)
    assert p.summary(elapsed=130, now=now) == "tasks 2/5 done, elapsed 2:10, ~2:20 left"
    assert p.now_running() == "pretrain[1] pretrain[seed=7] epoch 3"


def test_no_estimate_before_anything_finished_and_failures_counted() -> None:
    p = Progress([TaskView("split_data", "running", 1.0), TaskView("pretrain", "none")])
    assert p.seconds_left(10.0) is None
    assert p.summary(5, 10.0) == "tasks 0/2 done, elapsed 0:05, estimating time left"
    p = Progress([TaskView("split_data", "failed", 1.0, 2.0), TaskView("pretrain", "upstream_failed")])
    assert p.summary(5, 10.0).endswith("2 failed")


def test_task_logs_give_the_newest_epoch_and_copy_every_complete_line(tmp_path: Path) -> None:
    run = "manual__x"
    folder = tmp_path / f"dag_id={make_run.DAG_ID}" / f"run_id={run}" / "task_id=pretrain" / "map_index=1"
    folder.mkdir(parents=True)
    lines: list[str] = []
    logs = TaskLogs(tmp_path, run, lines.append)
    log = folder / "attempt=1.log"
    event = "pretrain[seed=7] epoch {}: loss=0.5 accuracy=0.8 val_loss=0.5 val_accuracy=0.8 (1.0s)"
    log.write_text(json.dumps({"timestamp": "T1", "level": "info", "event": event.format(1)}) + "\n"
                   + json.dumps({"timestamp": "T2", "level": "info", "event": event.format(2)})[:20])  # half a line
    logs.poll()
    assert logs.epoch == {"pretrain[1]": "pretrain[seed=7] epoch 1"} and len(lines) == 1
    assert lines[0] == f"[pretrain[1]] T1 info {event.format(1)}"
    log.write_text(log.read_text()[: -20] + json.dumps({"timestamp": "T2", "level": "info", "event": event.format(2)})
                   + "\n")
    logs.poll()
    assert logs.epoch["pretrain[1]"] == "pretrain[seed=7] epoch 2" and len(lines) == 2
    # The batched-replicas trainer's wording (include/models/replicas.py) counts as an epoch line too.
    with log.open("a") as fh:
        event = "pretrain[seed=7] epoch 3: 1 replicas, loss 0.4, val_accuracy 0.9 (1.0s)"
        fh.write(json.dumps({"timestamp": "T3", "level": "info", "event": event}) + "\n")
    logs.poll()
    assert logs.epoch["pretrain[1]"] == "pretrain[seed=7] epoch 3" and len(lines) == 3


def test_plain_view_prints_at_each_finished_task_and_periodically(capsys) -> None:
    view = make_run.PlainView()
    p = Progress([TaskView("split_data", "running", 0.0)])
    view.update(p, 1, 1.0)
    view.update(p, 2, 2.0)  # nothing new, too soon: no line
    view.update(p, 1 + PLAIN_EVERY_S, 1.0 + PLAIN_EVERY_S)
    p.tasks[0] = TaskView("split_data", "success", 0.0, 40.0)
    view.update(p, 40, 40.0)
    out = capsys.readouterr().out.splitlines()
    assert out == ["[0:01] tasks 0/1 done, elapsed 0:01, estimating time left; running: split_data",
                   "[0:31] tasks 0/1 done, elapsed 0:31, estimating time left; running: split_data",
                   "[0:40] tasks 1/1 done, elapsed 0:40, ~0:00 left; running: -"]


def test_live_view_draws_the_summary_with_rich(monkeypatch) -> None:
    from rich.console import Console

    console = Console(record=True, width=100, force_terminal=True)
    monkeypatch.setattr("rich.console.Console", lambda *a, **k: console)
    view = make_run.LiveView("manual__make_run_x")
    now = 1_000_000.0
    view.update(Progress(_tasks(now)), 130, now)
    view.close()
    text = console.export_text()
    assert "manual__make_run_x" in text and "tasks 2/5 done, elapsed 2:10, ~2:20 left" in text
    assert "pretrain[1] pretrain[seed=7] epoch 3" in text


def _job_db(home: Path, state: str, beat: str) -> None:
    import sqlite3

    home.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(home / "airflow.db") as conn:
        conn.execute("CREATE TABLE job (id INTEGER PRIMARY KEY, job_type TEXT, state TEXT, latest_heartbeat TEXT)")
        conn.execute("INSERT INTO job (job_type, state, latest_heartbeat) VALUES ('SchedulerJob', ?, ?)", (state, beat))


def test_a_live_scheduler_on_the_same_database_stops_make_run(tmp_path: Path, monkeypatch, capsys) -> None:
    from datetime import datetime, timedelta

    now = datetime.now(UTC).replace(tzinfo=None)
    _job_db(tmp_path / "live", "running", str(now - timedelta(seconds=5)))
    _job_db(tmp_path / "stale", "running", str(now - timedelta(minutes=10)))  # killed without cleaning up
    _job_db(tmp_path / "ended", "success", str(now))
    assert make_run.Database(tmp_path / "live").scheduler_beat() == str(now - timedelta(seconds=5))
    assert make_run.Database(tmp_path / "stale").scheduler_beat() is None
    assert make_run.Database(tmp_path / "ended").scheduler_beat() is None
    # Beats since a given time: a scheduler that make run started has beaten since it started.
    assert make_run.Database(tmp_path / "live").scheduler_beat(datetime.now(UTC)) is None
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "live"))
    assert make_run.main() == 2
    err = capsys.readouterr().err
    assert "a scheduler is already running on" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "live" / "make-run").exists()  # nothing started, nothing written


def test_a_second_make_run_on_the_same_home_is_refused_in_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    import fcntl

    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    with (tmp_path / "make-run.lock").open("a") as held:  # what the first make run holds while it runs
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert make_run.main() == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"make run: another make run is running on {tmp_path}: wait for it to end, or stop it (Ctrl-C)."]
    assert not (tmp_path / "make-run").exists()


class _Health:
    """A real HTTP server answering Airflow's two health endpoints with the given component states."""

    def __init__(self, states: dict[str, str]) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        body = json.dumps({k: {"status": v} for k, v in states.items()}).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                known = self.path in ("/api/v2/monitor/health", "/execution/health")
                self.send_response(200 if known else 404)
                self.end_headers()
                self.wfile.write(body if known else b"")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


HEALTHY = {"metadatabase": "healthy", "scheduler": "healthy", "dag_processor": "healthy", "triggerer": "healthy"}


def test_a_healthy_make_airflow_is_used_and_an_unhealthy_or_dead_one_is_not(tmp_path: Path, capsys) -> None:
    import os

    from scripts.airflow_standalone import record

    good, bad = _Health(HEALTHY), _Health({**HEALTHY, "scheduler": "unhealthy"})
    try:
        for server, used in ((good, True), (bad, False)):
            os.environ["AIRFLOW__API__PORT"] = server.url.rsplit(":", 1)[1]
            try:
                state = record(tmp_path)  # what `make airflow` writes while it runs (this process stands in)
            finally:
                del os.environ["AIRFLOW__API__PORT"]
            assert json.loads(state.read_text()) == {"pid": os.getpid(), "url": server.url}
            found = make_run.use_make_airflow(tmp_path)
            out = capsys.readouterr().out
            if used:
                assert found == {"pid": os.getpid(), "url": server.url}
                assert f"Using the running make airflow at {server.url}" in out
            else:
                assert found is None
                assert f"Found make airflow (pid {os.getpid()}, {server.url}) but it is unhealthy " \
                       "(scheduler not healthy): not using it." in out
    finally:
        good.close()
        bad.close()
    # Nothing listens any more: unhealthy too.
    assert make_run.use_make_airflow(tmp_path) is None
    assert "does not answer" in capsys.readouterr().out
    # A record left by a make airflow that was killed (its pid is gone): not even looked at.
    (tmp_path / make_run.AIRFLOW_STATE).write_text(json.dumps({"pid": 2**22 + 7, "url": good.url}))
    assert make_run.use_make_airflow(tmp_path) is None and capsys.readouterr().out == ""


def test_run_conf_that_is_not_a_json_object_is_refused(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    for bad in ("[42]", "{seeds: 42}"):
        monkeypatch.setenv("RUN_CONF", bad)
        assert make_run.main() == 2
        assert "RUN_CONF is not a JSON object" in capsys.readouterr().err
    assert not (tmp_path / "make-run").exists()  # nothing started, nothing written


def test_the_benchmark_splits_a_make_runs_wall_time_from_its_own_records(tmp_path: Path) -> None:
    """benchmarks/make_run_section.py: fixed cost, Airflow per task, training, report, the rest."""
    import sqlite3
    from datetime import datetime

    from benchmarks.make_run_section import split_make_run

    t0 = datetime(2026, 12, 7, 7, 0, 0, tzinfo=UTC).timestamp()  # make run started

    def stamp(s: float, sep: str = " ") -> str:
        return datetime.fromtimestamp(t0 + s, UTC).replace(tzinfo=None).isoformat(sep=sep, timespec="microseconds")

    # split 10-12, pretrain 13-30 with a fit 20-28, compare_report 31-34 (a 1 s hand-off gap each time).
    tasks = [("split_data", -1, 10, 12, []), ("pretrain", 0, 13, 30, [(28, "pretrain[seed=42] epoch 2: x (8.0s)")]),
             ("compare_report", -1, 31, 34, [])]
    with sqlite3.connect(tmp_path / "airflow.db") as conn:
        conn.execute("CREATE TABLE task_instance (dag_id, run_id, task_id, map_index, start_date, end_date)")
        for task, idx, start, end, _ in tasks:
            conn.execute("INSERT INTO task_instance VALUES (?, 'r1', ?, ?, ?, ?)",
                         (make_run.DAG_ID, task, idx, stamp(start), stamp(end)))
    for task, idx, start, _end, lines in tasks:
        folder = tmp_path / "logs" / f"dag_id={make_run.DAG_ID}" / "run_id=r1" / f"task_id={task}"
        folder = folder / f"map_index={idx}" if idx >= 0 else folder
        folder.mkdir(parents=True)
        events = [(start + 0.5, "::group::Pre Execute"), (start + 1.5, "::endgroup::"), *lines]
        (folder / "attempt=1.log").write_text("".join(
            json.dumps({"timestamp": stamp(t, "T") + "Z", "event": e}) + "\n" for t, e in events))
    (tmp_path / "make-run").mkdir()
    ready = datetime.fromtimestamp(t0 + 8, UTC).isoformat()
    (tmp_path / "make-run" / "r1.log").write_text(f"{make_run.MARK} ready {ready}\n")
    split = split_make_run(tmp_path, "r1", t0, t0 + 36)
    assert (split["fixed_before_first_task"], split["fixed_after_last_task"], split["fixed"]) == (10, 2, 12)
    assert split["airflow_per_task"] == 3 * 1.5 + 2  # "Pre Execute" of each task + two 1 s gaps
    assert (split["training"], split["report"]) == (8, 3)
    assert split["other_in_tasks"] == 36 - 12 - 6.5 - 8 - 3
    assert split["marks_since_make_started"] == {"ready": 8.0}
    assert split["task_seconds"] == {"split_data": 2, "pretrain[0]": 17, "compare_report": 3}


def test_the_report_lines_name_the_metrics_that_compare_report_wrote(tmp_path: Path, monkeypatch) -> None:
    """Where the run's Airflow wrote the report (compare_report's XCom), not this process's artifact root:
    a running make airflow may have another TL_ARTIFACT_ROOT."""
    import sqlite3

    elsewhere = tmp_path / "make-airflow-artifacts" / "reports" / "r1"
    elsewhere.mkdir(parents=True)
    (elsewhere / "metrics.json").write_text(json.dumps({"verdict": {"text": "Pooled verdict: not worse."}}))
    monkeypatch.setenv("TL_ARTIFACT_ROOT", str(tmp_path / "make-run-artifacts"))
    home = tmp_path / "home"
    home.mkdir()
    with sqlite3.connect(home / "airflow.db") as conn:
        conn.execute("CREATE TABLE xcom (dag_id TEXT, run_id TEXT, task_id TEXT, map_index INT, key TEXT, value JSON)")
        conn.execute("INSERT INTO xcom VALUES (?, 'r1', 'compare_report', -1, 'return_value', ?)",
                     (make_run.DAG_ID, json.dumps({"metrics_path": str(elsewhere / "metrics.json")})))
    db = make_run.Database(home)
    assert make_run.report_lines(db, "r1") == ["Verdict: Pooled verdict: not worse.",
                                              f"Report:  {elsewhere / 'report.html'}",
                                              f"Metrics: {elsewhere / 'metrics.json'}"]
    # No XCom (the run never reached compare_report): this process's artifact root, and it says so.
    assert make_run.report_lines(db, "r2")[0].startswith("No report: the run did not reach compare_report ("
                                                         f"{tmp_path / 'make-run-artifacts'}")

"""Failure callbacks for the DAG: a person hears about it, and a failed night adds no evidence."""

from __future__ import annotations

import logging
from typing import Any

from include.alerts import Alert, FailureNotifier, check_settings, report_url, send

log = logging.getLogger("tl.notify")

# Task-level on_execute_callback: a malformed alert address or URL is one clear log line as each task starts.
on_task_start = check_settings

# Task-level on_failure_callback: Airflow calls it once the task has failed its last try.
on_task_failure = FailureNotifier()


def exclude_failed_night(context: Any) -> None:
    """Flag the run's history line (if its report was already written) so pooling leaves it out."""
    from include import history
    from include.artifacts import RunPaths

    try:
        paths = RunPaths.for_run(context["run_id"])
        reason = str(context.get("reason") or "the run failed")
        if history.mark_failed(paths.reports_root / "history.jsonl", paths.run, reason):
            log.warning("Run %s failed after its report: its history line no longer counts as evidence", paths.run)
    except Exception as exc:  # a callback must not hide the run's own failure
        log.error("Could not flag the failed run in the history: %r", exc)


def include_succeeded_night(context: Any) -> None:
    """DAG-level on_success_callback: a run flagged failed earlier (a task after its report failed) has
    now succeeded, its failed task cleared and re-run: its history line counts as evidence again, once."""
    from include import history
    from include.artifacts import RunPaths

    try:
        paths = RunPaths.for_run(context["run_id"])
        if history.mark_succeeded(paths.reports_root / "history.jsonl", paths.run):
            log.info("Run %s succeeded: its history line counts as evidence", paths.run)
    except Exception as exc:  # a callback must not fail the run it reports on
        log.error("Could not clear the run's failed flag in the history: %r", exc)


# DAG-level on_failure_callback: the run failed.
on_run_failure = [exclude_failed_night, FailureNotifier(run_level=True)]


def deadline_missed(context: dict[str, Any], **_: Any) -> None:
    """The nightly run's DeadlineAlert callback (run by the executor): the run is still going past its
    deadline. `context` is what the scheduler sends: the DagRun as the REST API shows it, and the deadline."""
    from include.alerts import run_url
    from include.operations import DEADLINE_AFTER

    run = context.get("dag_run") or {}
    dag_id, run_id = run.get("dag_id", "?"), run.get("dag_run_id") or run.get("run_id", "?")
    what = (f"The run has not finished {DEADLINE_AFTER} after it was queued ({run.get('queued_at')}; state "
            f"{run.get('state')}): a task may be stuck or waiting for a slot. It is ended at the run timeout.")
    send(Alert("deadline_missed", dag_id, run_id, None, what, run_url(dag_id, run_id)))


def send_findings(context: Any, task_id: str, findings: list[dict[str, str]], run_folder: str) -> None:
    """Alert for what a task found (regression, sentinel drift), linking to the run's report."""
    dag_id, run_id = context["dag"].dag_id, context["run_id"]
    for f in findings:
        send(Alert(f["kind"], dag_id, run_id, task_id, f["what"], report_url(run_folder)))

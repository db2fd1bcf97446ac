"""Step 5: statistics over seeds, figures, verdict; write metrics.json, report.md, report.html.

This task gathers the inputs (results, split manifest, history, Airflow's timings, provenance) and
writes the files; include/evidence.py computes every section of metrics.json, tasks/nightly.py the
nightly one (include/report/document.py states the rule).
"""

from __future__ import annotations

import base64
import logging
import time
from datetime import UTC, datetime
from typing import Any

from include import artifacts, evidence, history, tracking
from include.artifacts import RunPaths
from include.config import ExperimentConfig
from include.provenance import provenance
from include.report import figures, render, tables
from include.results import Candidate, ModelResult, ReportResult
from tasks import nightly

log = logging.getLogger("tl.compare_report")
POOLED_PNG = "pooled.png"


def airflow_timings(context: Any) -> dict[str, Any]:
    """Wall seconds of every finished task instance of this DAG run, from Airflow's own records.

    Called inside the compare_report task (all its upstream tasks are finished by then). The
    timings are provenance, not evidence: if the lookup fails the report still renders, and says so.
    """
    started = getattr(context["dag_run"], "start_date", None)
    out: dict[str, Any] = {"dag_run_started_at": started.isoformat(timespec="seconds") if started else None,
                           "task_instances": None, "error": None}
    try:
        crumbs = context["ti"].get_task_breadcrumbs(context["dag"].dag_id, context["run_id"])
        out["task_instances"] = [{"task_id": c["task_id"], "map_index": int(c["map_index"]), "state": str(c["state"]),
                                  "duration_seconds": None if c["duration"] is None else float(c["duration"])}
                                 for c in crumbs]
    except Exception as exc:  # optional provenance; recorded in the report, never hidden
        log.warning("Could not read task instance timings from Airflow: %r", exc)
        out["error"] = repr(exc)
    return out


def run(cfg: ExperimentConfig, manifest_path: str, scratch: list[dict[str, Any]], transfer: list[dict[str, Any]],
        paths: RunPaths, run_id: str, timings: dict[str, Any] | None = None,
        info: dict[str, Any] | None = None) -> dict[str, Any]:
    """`scratch`, `transfer`: ModelResult dicts from XCom; returns a ReportResult dict.
    `timings`: what airflow_timings() read inside the task; None when called outside Airflow.
    `info`: nightly.run_info() of the DagRun (run type, logical date); None: a manual run."""
    t0 = time.perf_counter()
    scratch_results = [ModelResult.from_dict(r) for r in scratch]
    transfer_results = [ModelResult.from_dict(r) for r in transfer]
    manifest = artifacts.read_json(manifest_path)
    y_test = artifacts.load_npy(manifest["arrays"]["target_y_test"], mmap=False)
    finished = datetime.now(UTC)
    ev = evidence.run_evidence(cfg, manifest, scratch_results, transfer_results, y_test, run_id=run_id,
                               run=paths.run, finished_at=finished.isoformat(timespec="seconds"),
                               provenance=provenance())
    frac = ev.headline.transfer_fraction

    history_path = paths.reports_root / "history.jsonl"
    past = history.read_history(history_path)
    trend = [*[r for r in past if r.get("run") != paths.run][-(cfg.history_window - 1):], history.entry(ev)]
    entry = {**history.entry(ev), **nightly.history_fields(cfg, ev, scratch + transfer, info or {})}
    candidate = _candidate(transfer_results, frac, paths.run, run_id, manifest["sha256"])
    night = nightly.evaluate(cfg, entry, candidate.to_dict(), paths)
    entry["pool"] = night.pool  # fixed now: later nights and re-runs read it, never recompute it
    trend[-1]["pool"] = night.pool  # tonight's row of the recent-runs table shows its pooled verdict
    run_timings = evidence.timings(cfg, scratch_results, transfer_results, timings, time.perf_counter() - t0,
                                   finished)
    m = evidence.document(ev, night.nightly, trend, run_timings)

    pngs = figures.report_figures(m)
    m.timings.compare_report_seconds = time.perf_counter() - t0  # figures included
    paths.ensure(paths.reports)
    # Write the report files first and the history line last: a failure here leaves no history entry.
    metrics_path = artifacts.write_json(paths.reports / "metrics.json", m.to_json())
    # The narrowing plot also as a file: the reports page shows it next to the runs list.
    artifacts.write_bytes(paths.reports / POOLED_PNG, base64.b64decode(pngs["pooled"]))
    md = render.render_markdown(m, trend)
    artifacts.write_text(paths.reports / "report.md", md)
    html_path = artifacts.write_text(paths.reports / "report.html", render.render_html(m, pngs, trend))
    history.append_history(history_path, entry)
    tracking.log_report(m, paths.reports)  # MLflow, when configured; never fails the run
    log.info("Comparison (transfer %.0f%% vs scratch 100%%):\n%s", frac * 100,
             render.md_table(tables.comparison_rows(m)))
    log.info("Verdict: %s", m.verdict.text)
    log.info("Report: %s", html_path)

    return ReportResult(report_dir=str(paths.reports), metrics_path=str(metrics_path), html_path=str(html_path),
                        verdict=m.verdict.kind, candidate=candidate,
                        findings=night.findings).to_dict()


def _candidate(transfer: list[ModelResult], frac: float, run: str, run_id: str,
               data_sha256: dict[str, str]) -> Candidate:
    """The champion candidate: the headline transfer model with the best validation accuracy."""
    best = max((r for r in transfer if abs(r.fraction - frac) < 1e-9),
               key=lambda r: (r.time_to_accuracy.best_val_accuracy or 0.0, -r.seed))
    return Candidate(run=run, run_id=run_id, seed=best.seed, fraction=best.fraction, model="transfer",
                     test_accuracy=best.test_accuracy, model_path=best.model_path, data_sha256=data_sha256)

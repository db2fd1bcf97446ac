"""What a night adds: its history fields, the pooled evidence, the sentinel check and the regression check.

Called by compare_report with the run's evidence (include/report/document.RunEvidence); computes the
`nightly` section of metrics.json (the only place it is computed), the stored pool for tonight's
history line and the findings that deserve an alert.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from include import drift, history, pooled
from include.artifacts import RunPaths
from include.config import ExperimentConfig
from include.report.document import Finding, Nightly, RunEvidence
from include.seeding import SENTINEL_SEED, run_type_name

log = logging.getLogger("tl.nightly")


def run_info(context: Mapping[str, Any] | None) -> dict[str, Any]:
    """Run type and logical date of the running DagRun; a plain call outside Airflow is 'manual'."""
    dag_run = (context or {}).get("dag_run")
    when = getattr(dag_run, "logical_date", None)
    return {"run_type": run_type_name(getattr(dag_run, "run_type", None)),
            "logical_date": when.isoformat() if isinstance(when, datetime) else None}


def history_fields(cfg: ExperimentConfig, ev: RunEvidence, results: list[dict[str, Any]],
                   info: Mapping[str, Any]) -> dict[str, Any]:
    """The fields a history line needs to be pooled and to serve as the next night's sentinel reference."""
    sha = ev.data.sha256
    settings = cfg.to_dict()
    return {"experiment_key": pooled.experiment_key(settings, sha), "settings_key": pooled.settings_key(settings),
            "run_type": info.get("run_type", "manual"), "logical_date": info.get("logical_date"),
            "difference_range": cfg.difference_range,
            "seeds": list(cfg.seeds), "per_seed_diff": dict(ev.headline.difference.per_seed),
            "sentinel": drift.sentinel_record(SENTINEL_SEED, results),
            "environment": drift.environment(ev.provenance.model_dump(exclude_unset=True), sha)}


def regression(candidate: Mapping[str, Any], champion: Mapping[str, Any] | None, margin: float) -> dict[str, Any]:
    """Tonight's best transfer model against the champion, on the same data."""
    if champion is None:
        return {"status": "no_champion", "margin": margin}
    if champion.get("data_sha256") != candidate.get("data_sha256"):
        return {"status": "other_data", "margin": margin, "champion_run": champion.get("run")}
    gap = float(candidate["test_accuracy"]) - float(champion["test_accuracy"])
    return {"status": "regressed" if gap < -margin else "ok", "margin": margin, "gap": gap,
            "tonight": float(candidate["test_accuracy"]), "champion": float(champion["test_accuracy"]),
            "champion_run": champion.get("run")}


@dataclass
class NightOutcome:
    nightly: Nightly  # the metrics.json section
    pool: dict[str, Any]  # tonight's stored pool, for its history line
    findings: list[Finding]  # what deserves an alert


def evaluate(cfg: ExperimentConfig, tonight_entry: dict[str, Any], candidate: Mapping[str, Any],
             paths: RunPaths) -> NightOutcome:
    """Check the sentinel, pool (a drift starts a new segment), check the champion."""
    lines = history.read_history_lines(paths.reports_root / "history.jsonl")
    sentinel = drift.check(lines, tonight_entry)
    p = pooled.pool(lines, tonight_entry, cfg.confidence, cfg.noninferiority_margin, cfg.difference_range,
                    drift=sentinel["status"] == "drift")
    reg = regression(candidate, history.read_champion(paths.champion), cfg.regression_alert_margin)
    if p.stored.get("started") == "sentinel drift":
        sentinel["text"] += f" The pooled evidence starts a new segment with this run ({p.segment})."
    findings = []
    if sentinel["status"] == "drift":
        findings.append({"kind": "sentinel_drift", "what": sentinel["text"]})
    if reg["status"] == "regressed":
        findings.append({"kind": "regression",
                         "what": f"Tonight's best transfer model has test accuracy {reg['tonight'] * 100:.2f}%, "
                                 f"{-reg['gap'] * 100:.2f} points below the champion's {reg['champion'] * 100:.2f}% "
                                 f"(run {reg['champion_run']}); the alert margin is {reg['margin'] * 100:.2f} points."})
    for f in findings:
        log.warning("%s: %s", f["kind"], f["what"])
    log.info("%s", p.verdict.text)
    section = Nightly.model_validate({
        "experiment_key": tonight_entry["experiment_key"], "run_type": tonight_entry["run_type"],
        "logical_date": tonight_entry["logical_date"], "seeds": tonight_entry["seeds"],
        "sentinel_seed": SENTINEL_SEED, "pooled": p, "sentinel": sentinel, "regression": reg,
        "findings": findings})
    return NightOutcome(nightly=section, pool=p.stored, findings=section.findings)

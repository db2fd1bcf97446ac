"""Step 6: the champion gate (like TFX's model blessing): promote only a model that beats the champion."""

from __future__ import annotations

import logging
from typing import Any

from include import history, tracking
from include.artifacts import RunPaths
from include.config import ExperimentConfig
from include.results import Candidate, PromoteDecision

log = logging.getLogger("tl.promote")


def run(cfg: ExperimentConfig, report: dict[str, Any], paths: RunPaths) -> dict[str, Any]:
    """`report`: compare_report's ReportResult dict (only its candidate is read); returns a PromoteDecision dict."""
    candidate = Candidate.from_dict(report["candidate"])
    decision = PromoteDecision.from_dict(
        history.promote_if_better(paths.champion, candidate.to_dict(), cfg.champion_margin))
    log.info("Champion gate: %s (%s)", "PROMOTED" if decision.promoted else "kept current champion",
             decision.reason)
    if decision.promoted:  # MLflow's registry, when configured; the champion file is already written
        tracking.register_champion(decision.champion.to_dict(), report.get("metrics_path"))
    return decision.to_dict()


def data_labels(report: dict[str, Any]) -> dict[str, Any]:
    """The dataset and classes the report's models learned (for the champion Asset event's extra)."""
    from include.report.document import MetricsDocument

    m = MetricsDocument.read(report["metrics_path"])
    return {"dataset": m.dataset_name, "classes": m.data.target_names, "architecture": m.architecture}

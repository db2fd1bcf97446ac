"""Step 7, the run's teardown: remove this run's scratch, then apply the retention policy.

A run that failed removes only its own scratch (data/<run>/ and its temp files): it never touches
another run's files, the history or the champion. A run that succeeded then applies the policy of
include/retention.py to the whole artifact root, and logs each removal and the space freed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from include import retention
from include.artifacts import RunPaths
from include.config import ConfigError
from include.retention import RetentionPolicy
from tasks.common import config_from_params

log = logging.getLogger("tl.retention")


FAILED_STATES = ["failed", "upstream_failed"]


def run_failed(context: Mapping[str, Any]) -> bool:
    """Whether any task of the running DAG run failed, from Airflow's records (the Task SDK's public
    `TaskInstance.get_ti_count`); when Airflow cannot say, assume it did (then only the run's own
    scratch is removed)."""
    try:
        failed = context["ti"].get_ti_count(dag_id=context["dag"].dag_id, run_ids=[context["run_id"]],
                                            states=FAILED_STATES)
        return int(failed) > 0
    except Exception:
        log.warning("Could not read this run's task states; treating the run as failed", exc_info=True)
        return True


def policy_for(params: Mapping[str, Any], grace: timedelta) -> RetentionPolicy | None:
    """The run's retention settings; None when its settings are invalid (the run failed on them)."""
    try:
        cfg = config_from_params(params)
    except ConfigError:
        return None
    return RetentionPolicy(keep_model_runs=cfg.keep_model_runs, keep_split_sets=cfg.keep_split_sets, grace=grace)


def run(paths: RunPaths, failed: bool, policy: RetentionPolicy | None = None) -> dict[str, Any]:
    before = retention.disk_usage(paths.root)
    outcome = retention.remove_run_scratch(paths.root, paths.run)
    if failed or policy is None:
        log.info("Run failed: removed its own scratch only; the retention policy waits for a successful run")
    else:
        outcome.removed += retention.apply(paths.root, policy, paths.run).removed
    after = retention.disk_usage(paths.root)
    log.info("Freed %d bytes in %d items; disk use now %s (was %s)", outcome.freed_bytes, len(outcome.removed),
             after, before)
    return {**outcome.summary(paths.root), "failed_run": failed or policy is None, "disk_usage": after}

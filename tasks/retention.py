"""Step 7, the run's teardown: remove this run's scratch, then apply the retention policy.

A run that failed removes only its own scratch (data/<run>/ and its temp files): it never touches
another run's files, the history or the champion. A run that succeeded then applies the policy of
include/retention.py to the whole artifact root, and logs each removal and the space freed.
"""

from __future__ import annotations

import logging
from typing import Any

from include import retention
from include.artifacts import RunPaths
from include.retention import RetentionPolicy

log = logging.getLogger("tl.retention")


def run(paths: RunPaths, failed: bool, policy: RetentionPolicy | None = None) -> dict[str, Any]:
    before = retention.disk_usage(paths.root)
    outcome = retention.remove_run_scratch(paths.root, paths.run)
    if failed:
        log.info("Run failed: removed its own scratch only; the retention policy waits for a successful run")
    else:
        outcome.removed += retention.apply(paths.root, policy or RetentionPolicy(), paths.run).removed
    after = retention.disk_usage(paths.root)
    log.info("Freed %d bytes in %d items; disk use now %s (was %s)", outcome.freed_bytes, len(outcome.removed),
             after, before)
    return {**outcome.summary(paths.root), "failed_run": failed, "disk_usage": after}

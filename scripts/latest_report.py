"""Print where the newest report is, and its verdict (used at the end of `make run`)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

root = Path(os.environ.get("TL_ARTIFACT_ROOT") or Path(__file__).resolve().parent.parent)
reports = sorted((root / "reports").glob("*/metrics.json"), key=lambda p: p.stat().st_mtime)
if not reports:
    sys.exit(f"No report found under {root / 'reports'}: the run did not reach compare_report; see the log above.")
metrics = reports[-1]
m = json.loads(metrics.read_text())
print(f"\nVerdict: {m['verdict']['text']}")
print(f"Report:  {metrics.parent / 'report.html'}")
print(f"Metrics: {metrics}")

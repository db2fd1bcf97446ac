"""Render report.md, report.html and the reports page from the Jinja2 templates in `templates/`.

HTML templates (`*.html`) autoescape every value, so no string reaches a page unescaped. report.md
is markdown: free text (run ids, earlier runs' history lines) goes through the `md` filter, and
every table cell through `md_table`, so neither can inject markup or break a table row.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.report import tables

if TYPE_CHECKING:
    from include.report.document import MetricsDocument

TEMPLATES = Path(__file__).with_name("templates")
EN_DASH = "\N{EN DASH}"  # shown for a missing value

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|&~!])")  # inline markup; text never starts a line here


def md_text(value: Any) -> str:
    """Free text as literal markdown: one line, inline markup escaped, so no link, image, HTML tag,
    code span or table cell can be injected. Templates never put it at a line start."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(value).split()))


def _md_cell(cell: str) -> str:
    # A raw pipe or a newline would break the row; pipes md_text already escaped stay as they are.
    return re.sub(r"(\\.)|\|", lambda m: m.group(1) or "\\|", " ".join(cell.split()))


def md_table(rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(map(_md_cell, rows[0])) + " |", "|" + "---|" * len(rows[0])]
    out += ["| " + " | ".join(map(_md_cell, r)) + " |" for r in rows[1:]]
    return "\n".join(out)


def when(value: Any) -> str:
    """ISO timestamp as 'YYYY-MM-DD HH:MM' (UTC, as compare_report writes it)."""
    text = str(value or "")
    return text[:16].replace("T", " ") if len(text) >= 16 else (text or EN_DASH)


@functools.cache
def environment() -> Any:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                             autoescape=jinja2.select_autoescape(["html"], default_for_string=True),
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(md=md_text, md_table=md_table, pct=tables.pct, pts=tables.pts, ci=tables.ci_text,
                       when=when, verdict_words=tables.verdict_words)
    return env


def _context(m: MetricsDocument, history: list[dict[str, Any]] | None) -> dict[str, Any]:
    """What both report templates show: the metrics document (attributes, never keys) and its tables."""
    history = m.trend if history is None else history
    pooled = m.nightly.pooled if m.nightly else None
    return {"m": m, "h": m.headline, "verdict": m.verdict, "prov": m.provenance,
            "history": history or [], "history_rows": tables.history_rows(history or []),
            "comparison": tables.comparison_rows(m), "interval_note": tables.interval_note(m),
            "per_seed": tables.per_seed_rows(m), "accuracy": tables.accuracy_rows(m), "curve": tables.curve_rows(m),
            "tta": tables.tta_rows(m), "timings": m.timings,
            "timing_rows": tables.timing_rows(m) if m.timings else None,
            "provenance_rows": tables.provenance_rows(m), "config_rows": tables.config_rows(m),
            "nightly": m.nightly, "dataset": tables.dataset_text(m), "seed_task": tables.is_seed_task(m),
            "dataset_name": m.dataset_name, "classes": m.data.target_names, "architecture": m.architecture,
            "pooled_rows": tables.pooled_rows(pooled) if pooled else None,
            "segment_rows": tables.segment_rows(pooled) if pooled else [],
            "nightly_rows": tables.nightly_rows(m.nightly) if m.nightly else None}


def render_markdown(m: MetricsDocument, history: list[dict[str, Any]] | None = None) -> str:
    ctx = _context(m, history)
    # Earlier runs' lines are data from disk: their free text is escaped like the run id.
    free = tables.HISTORY_FREE_TEXT
    ctx["history_rows"][1:] = [[md_text(c) if i in free else c for i, c in enumerate(r)]
                               for r in ctx["history_rows"][1:]]
    if ctx["nightly"]:  # run names and sentinel text come from earlier history lines too
        ctx["pooled_rows"][1:] = [[r[0], md_text(r[1]), *r[2:]] for r in ctx["pooled_rows"][1:]]
        ctx["segment_rows"][1:] = [[*map(md_text, r[:3]), *r[3:6], md_text(r[6])] for r in ctx["segment_rows"][1:]]
        ctx["nightly_rows"][1:] = [[r[0], md_text(r[1])] for r in ctx["nightly_rows"][1:]]
    return environment().get_template("report.md").render(ctx)


def render_html(m: MetricsDocument, figures: dict[str, str], history: list[dict[str, Any]] | None = None) -> str:
    """One self-contained page: inline CSS, images as data: URIs, no script, no network."""
    return environment().get_template("report.html").render(_context(m, history), figures=figures)


def render_alert_email(alert: Any) -> str:
    """The HTML part of an alert e-mail (include.alerts.Alert)."""
    return environment().get_template("alert_email.html").render(alert=alert)


def render_reports_index(rows: list[dict[str, Any]], root: Path, dag_id: str, url_prefix: str, title: str,
                         pooled: list[dict[str, Any]] | None = None) -> str:
    """The reports page: the pooled evidence per experiment, then one row per run (history.jsonl), newest first."""
    return environment().get_template("reports_index.html").render(rows=rows, root=str(root), dag_id=dag_id,
                                                                    url_prefix=url_prefix, title=title,
                                                                    pooled=pooled or [])

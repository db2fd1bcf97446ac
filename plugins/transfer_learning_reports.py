"""Airflow 3 UI plugin: "Transfer learning reports", a page listing every run's verdict and numbers,
and a "Report" tab on each run's page.

Verdicts read as words (include/report/tables.verdict_words, the one place that words them): the
pooled verdict leads; tonight's t verdict is shown beside it as not a basis for stopping.

A small FastAPI app mounted on the api-server at /transfer-learning-reports, shown inside the Airflow
UI as a nav entry (external view with a url_route) and on every DAG run's page (an external view with
destination dag_run: the UI fills in {DAG_ID} and {RUN_ID}, and /run/... sends it to that run's
report.html, or says why there is none yet). It reads the reports root
($TL_ARTIFACT_ROOT/reports): history.jsonl plus each run's metrics.json, and serves only files under
that root. Every request needs a logged-in Airflow user who may read this DAG's runs. The page is
the repository's Jinja2 template include/report/templates/reports_index.html, on the same layout and
stylesheet as the run report. Imports stay light: every Airflow component loads plugins, not only the
api-server; the project's modules load on the first request.
"""

from __future__ import annotations

import base64
import html
import json
import mimetypes
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

from airflow.plugins_manager import AirflowPlugin
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

if TYPE_CHECKING:
    from include.report.document import MetricsDocument

DAG_ID = "fashion_mnist_transfer_learning"
URL_PREFIX = "/transfer-learning-reports"
TITLE = "Transfer learning reports"
# Report files a browser may open; everything else under the root (locks, temp files) stays private.
SERVED_SUFFIXES = {".html", ".md", ".json", ".jsonl", ".png", ".svg"}


def reports_root() -> Path:
    from include.artifacts import artifact_root

    return artifact_root() / "reports"


def safe_report_path(root: Path, relative: str) -> Path:
    """The file `relative` names under `root`, or HTTPException 404 for anything else.

    Refused: absolute paths, `..` segments, backslashes, NUL, percent signs left after the one URL
    decoding (double-encoded traversal), symlinks leading outside the root, folders, other suffixes.
    """
    def refuse(why: str) -> HTTPException:
        return HTTPException(status_code=404, detail=f"Not a report file: {why}")

    if not relative or "\x00" in relative or "\\" in relative or "%" in relative:
        raise refuse("bad characters")
    pure = PurePosixPath(relative)
    if pure.is_absolute() or any(part in ("..", ".", "") for part in relative.split("/")):
        raise refuse("only plain paths below the reports folder")
    root = root.resolve()
    target = (root / pure).resolve()
    if not target.is_relative_to(root) or not target.is_file() or target.suffix not in SERVED_SUFFIXES:
        raise refuse("no such report file")
    return target


def _row_from_metrics(run: str, m: MetricsDocument) -> dict[str, Any]:
    """The run's history.jsonl line, rebuilt from its metrics.json (for runs missing from the history)."""
    from include.history import entry

    return {**entry(m), "run": run}  # the folder name: where the report files are


def _read_metrics(path: Path) -> MetricsDocument | None:
    """A run's metrics.json as the typed document; None when it is unreadable or not a metrics document."""
    from pydantic import ValidationError

    from include.report.document import MetricsDocument

    try:
        return MetricsDocument.read(path)
    except (OSError, ValueError, ValidationError):
        return None


def list_runs(root: Path) -> list[dict[str, Any]]:
    """Every run with a report, newest first; verdict text from metrics.json where present."""
    from include.report.tables import task_text

    rows: dict[str, dict[str, Any]] = {}
    history = root / "history.jsonl"
    if history.is_file():
        for line in history.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a torn line must not hide the other runs
            if isinstance(entry, dict) and entry.get("run"):
                rows[str(entry["run"])] = entry
    if root.is_dir():
        for metrics_path in root.glob("*/metrics.json"):
            run = metrics_path.parent.name
            m = _read_metrics(metrics_path)
            if m is None:  # not a complete metrics document: list the run alone
                rows.setdefault(run, {"run": run})
                continue
            row = rows.setdefault(run, _row_from_metrics(run, m))
            row["verdict_text"] = m.verdict.text
            # The headline: the pooled verdict (older files' top-level verdict was tonight's).
            row["pooled_verdict"] = m.verdict.model_dump() if m.verdict.basis == "pooled" else None
            row["task"] = task_text(m)  # dataset, classes, architecture
    for run, row in rows.items():
        row["has_html"] = (root / run / "report.html").is_file()
    return sorted(rows.values(), key=lambda r: (str(r.get("finished_at") or ""), r["run"]), reverse=True)


def pooled_panels(rows: list[dict[str, Any]], root: Path, most: int = 3) -> list[dict[str, Any]]:
    """The pooled evidence of the newest run of each experiment (up to `most` experiments), newest first:
    its key, verdict, interval, seed count and narrowing plot (reports/<run>/pooled.png, base64)."""
    panels: dict[str, dict[str, Any]] = {}
    for row in rows:
        if len(panels) >= most:
            break
        m = _read_metrics(root / str(row["run"]) / "metrics.json")
        if m is None or m.nightly is None:
            continue  # an older run without pooled evidence, or a damaged file
        pooled = m.nightly.pooled
        if pooled.experiment_key not in panels:
            panels[pooled.experiment_key] = {
                "key": pooled.experiment_key, "segment": pooled.segment,
                "segments": [g.model_dump() for g in pooled.segments],
                "run": row["run"], "run_id": row.get("run_id") or row["run"],
                "verdict": pooled.verdict.model_dump(), "low": pooled.low, "high": pooled.high, "mean": pooled.mean,
                "n_seeds": pooled.n_seeds, "n_nights": pooled.n_nights, "task": row.get("task"),
                "plot": _png_base64(root / str(row["run"]) / "pooled.png")}
    return list(panels.values())


def _png_base64(path: Path) -> str | None:
    """The plot inline, as the page's Content-Security-Policy allows images only as data: URIs."""
    try:
        return base64.b64encode(path.read_bytes()).decode("ascii")
    except OSError:
        return None


def render_index(rows: list[dict[str, Any]], root: Path) -> str:
    from include.report.render import render_reports_index

    return render_reports_index(rows, root, dag_id=DAG_ID, url_prefix=URL_PREFIX, title=TITLE,
                                pooled=pooled_panels(rows, root))


async def _require_reader(request: Request) -> Any:
    """Airflow's own user resolution (bearer token or the UI's session cookie), then a DAG-run read check."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user

    user = await get_user(request, None, await bearer_scheme(request))
    if not get_auth_manager().is_authorized_dag(method="GET", access_entity=DagAccessEntity.RUN,
                                                details=DagDetails(id=DAG_ID), user=user):
        raise HTTPException(status_code=403, detail=f"You may not read runs of {DAG_ID}")
    return user


def _login_redirect(request: Request) -> Response:
    from airflow.api_fastapi.app import get_auth_manager

    return RedirectResponse(get_auth_manager().get_url_login(next_url=str(request.url)), status_code=303)


def run_report(root: Path, dag_id: str, run_id: str) -> tuple[str | None, str]:
    """(the run's report.html relative to the root, or None; what to say when there is none)."""
    from include.artifacts import safe_run_id

    if dag_id != DAG_ID:
        return None, f"Only runs of {DAG_ID} have a transfer learning report; {dag_id} is another DAG."
    try:
        run = safe_run_id(run_id)
    except ValueError:
        return None, "This run has no id."
    if (root / run / "report.html").is_file():
        return f"{run}/report.html", ""
    return None, (f"No report for run {run_id} yet: compare_report writes it once every model of the run is "
                  "trained (a run that failed before then has none). Its task logs say where it stands.")


def _no_report_page(text: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{TITLE}</title></head>"
            f"<body style='font-family:sans-serif'><p id='no-report'>{html.escape(text)}</p>"
            f"<p><a href='{URL_PREFIX}/' target='_top'>All runs</a></p></body></html>")


def create_app() -> FastAPI:
    app = FastAPI(title=TITLE, docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/", response_class=HTMLResponse)
    async def index(request: Request) -> Response:
        try:
            await _require_reader(request)
        except HTTPException as exc:
            if exc.status_code == 401:  # not logged in: the login page, then back here
                return _login_redirect(request)
            raise
        root = reports_root()
        return HTMLResponse(render_index(list_runs(root), root), headers={"Cache-Control": "no-store"})

    @app.get("/run/{dag_id}/{run_id:path}", response_class=HTMLResponse)
    async def run_view(dag_id: str, run_id: str, request: Request) -> Response:
        """The run page's tab: that run's report, or one line saying why there is none."""
        try:
            await _require_reader(request)
        except HTTPException as exc:
            if exc.status_code == 401:
                return _login_redirect(request)
            raise
        relative, why = run_report(reports_root(), dag_id, run_id)
        if relative:
            return RedirectResponse(f"{URL_PREFIX}/report/{quote(relative)}", status_code=303)
        return HTMLResponse(_no_report_page(why), headers={"Cache-Control": "no-store"})

    @app.get("/api/runs")
    async def runs(request: Request) -> list[dict[str, Any]]:
        await _require_reader(request)
        return list_runs(reports_root())

    @app.get("/report/{relative:path}")
    async def report_file(relative: str, request: Request) -> FileResponse:
        await _require_reader(request)
        path = safe_report_path(reports_root(), relative)
        media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        # The reports are self-contained pages: no script needs to run, nothing loads from elsewhere.
        return FileResponse(path, media_type=media, headers={
            "Content-Security-Policy": "default-src 'none'; img-src data:; style-src 'unsafe-inline'",
            "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"})

    return app


class TransferLearningReportsPlugin(AirflowPlugin):
    name = "transfer_learning_reports"
    fastapi_apps: ClassVar[list[dict[str, Any]]] = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": TITLE}]
    external_views: ClassVar[list[dict[str, str]]] = [{
        "name": TITLE,
        "href": f"{URL_PREFIX}/",
        "url_route": "transfer-learning-reports",  # shown inside the Airflow UI at /plugin/<url_route>
        "destination": "nav",
        "category": "browse",
    }, {
        "name": "Report",
        # The UI fills in the run's DAG and run id (URL-encoded) on each run's page.
        "href": f"{URL_PREFIX}/run/{{DAG_ID}}/{{RUN_ID}}",
        "url_route": "transfer-learning-report",
        "destination": "dag_run",
    }]

"""The "Transfer learning reports" UI plugin: listing, login required, files only from the reports root.

The plugin's FastAPI app runs in-process behind Airflow's real SimpleAuthManager (JWT tokens).
Cost: about 10 seconds (Airflow's auth imports; the session's SQLite DB migration is shared).
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import threading
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from deploy.processes import wait_until
from plugins import transfer_learning_reports as plugin

ROOT = Path(__file__).resolve().parents[2]

SECRET_TEXT = "top secret outside the reports root"


def _tiny_metrics() -> dict:
    return json.loads((ROOT / "tests" / "unit" / "data" / "metrics_v2_previous_writer.json").read_text())


def _metrics(run_id: str, finished: str, kind: str, scratch: float, transfer: float) -> dict:
    """A whole metrics.json (a tiny run's, as the previous writer wrote it), with these numbers and no
    pooled evidence (_add_pooled adds it)."""
    m = _tiny_metrics()
    del m["nightly"]
    diff = transfer - scratch
    text = f"Verdict for {run_id}."
    m.update(run=run_id, run_id=run_id, finished_at=finished, data={**m["data"], "sha256": {"test_images": "b" * 64}})
    m["verdict"] = {**m["verdict"], "kind": kind, "text": text}
    m["headline"].update(seeds=[42, 7], transfer_fraction=0.7, verdict={"kind": kind, "text": text, "basis": "tonight"})
    m["headline"]["difference"].update(mean=diff, low=diff - 0.01, high=diff + 0.01)
    m["models"]["scratch"]["test_accuracy"]["mean"] = scratch
    m["models"]["transfer"]["test_accuracy"]["mean"] = transfer
    return m


@pytest.fixture
def reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two runs: one in history.jsonl, a newer one with metrics.json only; a secret next to the root."""
    root = tmp_path / "artifacts"
    (tmp_path / "secret.txt").write_text(SECRET_TEXT)
    (root / "secret.html").parent.mkdir(parents=True)
    (root / "secret.html").write_text(SECRET_TEXT)  # artifact root, but outside reports/
    for run, finished, kind, s, t in (("manual__old", "2026-01-01T02:00:00+00:00", "inconclusive", 0.95, 0.951),
                                      ("manual__new", "2026-02-01T02:00:00+00:00", "improves", 0.95, 0.965)):
        d = root / "reports" / run
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps(_metrics(run, finished, kind, s, t)))
        (d / "report.html").write_text(f"<html><body><p id='verdict'>{kind}</p>{run}</body></html>")
    (root / "reports" / "history.jsonl").write_text(json.dumps(
        {"run": "manual__old", "run_id": "manual__old", "finished_at": "2026-01-01T02:00:00+00:00", "n_seeds": 2,
         "transfer_fraction": 0.7, "scratch_accuracy": 0.95, "transfer_accuracy": 0.951, "diff_mean": 0.001,
         "diff_low": -0.009, "diff_high": 0.011, "verdict_kind": "inconclusive"}) + "\n{torn line\n")
    (root / "reports" / "manual__new" / "escape.html").symlink_to(tmp_path / "secret.txt")
    monkeypatch.setenv("TL_ARTIFACT_ROOT", str(root))
    return root / "reports"


@pytest.fixture(scope="module")
def auth(tmp_path_factory: pytest.TempPathFactory, airflow_db: Path):
    """Airflow's SimpleAuthManager, initialised as the api-server does, and a valid token for admin.

    Token checks consult the metadata DB (revoked tokens): hence the session's migrated SQLite DB.
    """
    mp = pytest.MonkeyPatch()
    mp.setenv("AIRFLOW__CORE__AUTH_MANAGER",
              "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager")
    mp.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE",
              str(tmp_path_factory.mktemp("auth") / "passwords.json"))
    mp.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "test-only-jwt-secret-" + "0123456789abcdef" * 4)
    from airflow.api_fastapi.app import init_auth_manager, purge_cached_app
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    purge_cached_app()
    am = init_auth_manager()
    yield am.generate_jwt(SimpleAuthManagerUser(username="admin", role="admin"))
    purge_cached_app()
    mp.undo()


@pytest.fixture
def client(auth: str) -> TestClient:
    outer = FastAPI()  # mounted under its prefix, as the api-server mounts plugin apps
    outer.mount(plugin.URL_PREFIX, plugin.create_app())
    return TestClient(outer, follow_redirects=False)


@pytest.mark.unit
def test_plugin_registers_a_nav_entry_and_its_app() -> None:
    view, run_view = plugin.TransferLearningReportsPlugin.external_views
    app = plugin.TransferLearningReportsPlugin.fastapi_apps[0]
    assert view["name"] == "Transfer learning reports" and view["destination"] == "nav"
    assert view["href"] == f"{app['url_prefix']}/" and view["url_route"]
    # The tab on each run's page; the UI substitutes {DAG_ID} and {RUN_ID}.
    assert run_view["destination"] == "dag_run" and run_view["name"] == "Report"
    assert run_view["href"] == f"{app['url_prefix']}/run/{{DAG_ID}}/{{RUN_ID}}"
    from airflow.api_fastapi.core_api.datamodels.plugins import ExternalViewResponse

    ExternalViewResponse.model_validate(run_view)  # what the api-server serves to the UI
    from airflow.api_fastapi.app import RESERVED_URL_PREFIXES

    assert not any(app["url_prefix"].startswith(p) for p in RESERVED_URL_PREFIXES)


@pytest.mark.unit
def test_lists_runs_newest_first_with_verdict_and_numbers(reports: Path) -> None:
    runs = plugin.list_runs(reports)
    assert [r["run"] for r in runs] == ["manual__new", "manual__old"]
    assert runs[0]["verdict_kind"] == "improves" and runs[0]["transfer_accuracy"] == pytest.approx(0.965)
    assert runs[0]["verdict_text"] == "Verdict for manual__new." and runs[1]["n_seeds"] == 2
    page = plugin.render_index(runs, reports)
    assert page.index("manual__new") < page.index("manual__old")
    assert "96.50%" in page and "+1.50" in page and "/transfer-learning-reports/report/manual__new/report.html" in page


@pytest.mark.unit
def test_a_run_missing_from_the_history_gets_the_line_compare_report_writes(reports: Path) -> None:
    from include import history
    from include.report.document import MetricsDocument

    metrics = MetricsDocument.read(reports / "manual__new" / "metrics.json")
    row = next(r for r in plugin.list_runs(reports) if r["run"] == "manual__new")
    assert {k: v for k, v in row.items() if k not in ("verdict_text", "pooled_verdict", "has_html", "task")} == \
        history.entry(metrics)
    assert row["task"] == "T-shirt/top vs Pullover on idx, mlp"  # label 0 first


@pytest.mark.unit
def test_the_page_escapes_what_it_reads_and_shares_the_report_stylesheet(reports: Path) -> None:
    import html.parser

    from include.report.render import TEMPLATES

    hostile = "<script>alert('x')</script><img src=x onerror=alert(1)>"
    with (reports / "history.jsonl").open("a") as f:
        f.write(json.dumps({"run": "manual__evil", "run_id": hostile, "finished_at": "2026-03-01T02:00:00+00:00",
                            "verdict_kind": '"><script>alert(2)</script>', "scratch_accuracy": "<b>",
                            "transfer_fraction": "x", "diff_mean": None}) + "\n")
    page = plugin.render_index(plugin.list_runs(reports), reports)

    class Tags(html.parser.HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.seen: list = []

        def handle_starttag(self, tag, attrs):
            self.seen.append((tag, attrs))

    parser = Tags()
    parser.feed(page)
    assert "script" not in {t for t, _ in parser.seen} and "img" not in {t for t, _ in parser.seen}
    assert not [a for _, attrs in parser.seen for a, _ in attrs if a.startswith("on")]
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page  # shown, as text
    assert page.index("manual__new") > page.index("alert(&#39;x&#39;)")  # newest first: the March run
    # One stylesheet for the reports page and the report, inlined (the pages load nothing).
    assert (TEMPLATES / "style.css").read_text() in page and "default-src 'none'" in page


@pytest.mark.airflow
def test_only_logged_in_users(client: TestClient, auth: str, reports: Path) -> None:
    url = f"{plugin.URL_PREFIX}/"
    anonymous = client.get(url)
    assert anonymous.status_code == 303 and "login" in anonymous.headers["location"]
    assert "manual__new" not in anonymous.text
    assert client.get(f"{plugin.URL_PREFIX}/report/manual__new/report.html").status_code == 401
    assert client.get(f"{plugin.URL_PREFIX}/api/runs").status_code == 401
    forged = client.get(url, headers={"Authorization": "Bearer not-a-token"})
    assert forged.status_code == 403 and "manual__new" not in forged.text

    by_header = client.get(url, headers={"Authorization": f"Bearer {auth}"})
    assert by_header.status_code == 200 and "manual__new" in by_header.text
    client.cookies.set("_token", auth)  # the Airflow UI's session cookie
    page = client.get(f"{plugin.URL_PREFIX}/report/manual__new/report.html")
    assert page.status_code == 200 and "improves" in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert [r["run"] for r in client.get(f"{plugin.URL_PREFIX}/api/runs").json()] == ["manual__new", "manual__old"]


@pytest.mark.parametrize("path", [
    "%2e%2e/secret.html",                 # encoded ..
    "%2E%2E%2Fsecret.html",               # encoded ../ in one segment
    "manual__new/%2e%2e/%2e%2e/secret.html",
    "..%2Fsecret.html",
    "%252e%252e%252fsecret.html",         # double-encoded
    "..%5Csecret.html",                   # backslash
    "%2Fetc%2Fpasswd",                    # absolute, encoded
    "/etc/passwd",                        # absolute (a second slash after /report/)
    "manual__new/escape.html",            # symlink out of the root
    "manual__new",                        # a folder
    "history.jsonl.lock",                 # not a report file
    "manual__new/report.html%00.json",    # NUL
])
@pytest.mark.airflow
def test_refuses_paths_outside_the_reports_root(client: TestClient, auth: str, reports: Path, path: str) -> None:
    r = client.get(f"{plugin.URL_PREFIX}/report/{path}", headers={"Authorization": f"Bearer {auth}"})
    assert r.status_code == 404, (path, r.status_code)
    assert SECRET_TEXT not in r.text and "root:" not in r.text


@pytest.mark.parametrize("relative", ["../secret.html", "manual__new/../../secret.html", "/etc/passwd",
                                      "./manual__new/report.html", "manual__new//report.html"])
@pytest.mark.unit
def test_path_check_refuses_raw_traversal(reports: Path, relative: str) -> None:
    from fastapi import HTTPException

    with pytest.raises(HTTPException) as refused:
        plugin.safe_report_path(reports, relative)
    assert refused.value.status_code == 404
    report = (reports / "manual__new" / "report.html").resolve()
    assert plugin.safe_report_path(reports, "manual__new/report.html") == report


@pytest.mark.airflow
def test_raw_dot_dot_over_the_wire(auth: str, reports: Path) -> None:
    """Literal ../ sent unnormalised (HTTP clients usually collapse it before sending)."""
    import uvicorn

    outer = FastAPI()
    outer.mount(plugin.URL_PREFIX, plugin.create_app())
    server = uvicorn.Server(uvicorn.Config(outer, host="127.0.0.1", port=0, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started and server.servers, 20, "the test server to start", interval=0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        for raw in ("/report/../secret.html", "/report/manual__new/../../secret.html",
                    "/report/../../../../etc/passwd"):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", plugin.URL_PREFIX + raw, headers={"Authorization": f"Bearer {auth}"})
            resp = conn.getresponse()
            body = resp.read().decode(errors="replace")
            conn.close()
            assert resp.status == 404, (raw, resp.status)
            assert SECRET_TEXT not in body and "root:" not in body
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _add_pooled(reports: Path, run: str, key: str, low: float, high: float, kind: str) -> None:
    metrics_path = reports / run / "metrics.json"
    m = json.loads(metrics_path.read_text())
    m["nightly"] = _tiny_metrics()["nightly"]
    p = m["nightly"]["pooled"]
    p.update(experiment_key=key, verdict={"kind": kind, "text": f"Pooled verdict {key}.", "below_zero": high < 0},
             mean=(low + high) / 2, low=low, high=high, n_seeds=11, n_nights=3)
    metrics_path.write_text(json.dumps(m))
    (reports / run / "pooled.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 16)


@pytest.mark.airflow
def test_the_page_shows_each_experiments_pooled_verdict_interval_and_plot_next_to_the_runs(
        client: TestClient, auth: str, reports: Path) -> None:
    _add_pooled(reports, "manual__new", "abc123def456", -0.021, 0.035, "no_difference")
    _add_pooled(reports, "manual__old", "abc123def456", -0.5, 0.5, "no_difference")  # older: not shown
    runs = plugin.list_runs(reports)
    [panel] = plugin.pooled_panels(runs, reports)
    assert (panel["key"], panel["run"], panel["n_seeds"]) == ("abc123def456", "manual__new", 11)
    page = plugin.render_index(runs, reports)
    assert page.index("abc123def456") < page.index("<table class=\"runs\">")  # above the runs list
    assert "+0.70 [-2.10, +3.50] points (anytime-valid interval) over 11 seeds from 3" in page
    assert "Pooled verdict abc123def456." in page
    assert ">no conclusion yet<" in page and ">no_difference<" not in page  # words, never the raw kind
    # Inline: the page's Content-Security-Policy (img-src data:) blocks an image fetched by URL.
    plot = base64.b64encode((reports / "manual__new" / "pooled.png").read_bytes()).decode()
    assert f'src="data:image/png;base64,{plot}"' in page
    assert "img-src data:;" in page and not re.search(r'<img[^>]+src="(?!data:)', page)
    png = client.get(f"{plugin.URL_PREFIX}/report/manual__new/pooled.png", headers={"Authorization": f"Bearer {auth}"})
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"


@pytest.mark.unit
def test_the_pooled_verdict_leads_each_row_in_words_and_tonights_t_verdict_is_labelled(reports: Path) -> None:
    metrics_path = reports / "manual__new" / "metrics.json"
    m = json.loads(metrics_path.read_text())
    m["verdict"] = {"kind": "non_inferior", "below_zero": True, "basis": "pooled", "text": "Pooled verdict: below."}
    metrics_path.write_text(json.dumps(m))
    page = plugin.render_index(plugin.list_runs(reports), reports)
    row = page[page.index("<tbody>"):page.index("manual__old")]
    assert "not worse than scratch, but below zero (inside the margin)" in row and "Pooled verdict: below." in row
    assert ">transfer improves<" in row  # tonight's t verdict (the history line's kind), as words
    assert "tonight's t interval (not a basis for stopping)" in page
    assert row.index("below zero") < row.index(">transfer improves<")  # the pooled verdict comes first


@pytest.mark.airflow
def test_each_run_page_shows_that_runs_report(client: TestClient, auth: str, reports: Path) -> None:
    from urllib.parse import quote

    from include.artifacts import safe_run_id

    bearer = {"Authorization": f"Bearer {auth}"}
    url = f"{plugin.URL_PREFIX}/run/{plugin.DAG_ID}/manual__new"
    assert client.get(url).status_code == 303 and "login" in client.get(url).headers["location"]  # anonymous
    r = client.get(url, headers=bearer)
    assert r.status_code == 303 and r.headers["location"] == f"{plugin.URL_PREFIX}/report/manual__new/report.html"
    assert "manual__new" in client.get(r.headers["location"], headers=bearer).text

    # A run id as Airflow makes them, URL-encoded as the UI does: its folder is safe_run_id's.
    run_id = "scheduled__2026-12-01T02:00:00+00:00"
    (reports / safe_run_id(run_id)).mkdir()
    (reports / safe_run_id(run_id) / "report.html").write_text("<p>nightly</p>")
    r = client.get(f"{plugin.URL_PREFIX}/run/{plugin.DAG_ID}/{quote(run_id, safe='')}", headers=bearer)
    assert r.status_code == 303 and r.headers["location"].endswith(f"/report/{safe_run_id(run_id)}/report.html")

    missing = client.get(f"{plugin.URL_PREFIX}/run/{plugin.DAG_ID}/manual__still_training", headers=bearer)
    assert missing.status_code == 200 and "No report for run manual__still_training yet" in missing.text
    other = client.get(f"{plugin.URL_PREFIX}/run/example_dag/manual__new", headers=bearer)
    assert other.status_code == 200 and "example_dag is another DAG" in other.text
    escaped = client.get(f"{plugin.URL_PREFIX}/run/{plugin.DAG_ID}/%3Cscript%3E", headers=bearer)
    assert "<script>" not in escaped.text and "&lt;script&gt;" in escaped.text

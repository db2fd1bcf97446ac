"""MLflow tracking and registry against a REAL local MLflow server (`mlflow server`, SQLite backend,
artifacts served from a folder), started by this module on 127.0.0.1; checked through its REST API.

Cost: about 20-30 s to start the server on 2 cores, then seconds per test.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from deploy.processes import free_port, start, wait_until
from include import tracking
from include.report.document import MetricsDocument
from tests.alert_servers import DEAD_PORT

pytestmark = [pytest.mark.services]

KEY = "abc123def456"


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    proc = start("mlflow server", [str(mlflow), "server", "--backend-store-uri", f"sqlite:///{home}/mlflow.db",
                                   "--artifacts-destination", str(home / "artifacts"), "--host", "127.0.0.1",
                                   "--port", str(port), "--workers", "1"], log=home / "server.log", cwd=home)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{url}/health", timeout=2).status_code == 200, 180, "mlflow server",
                   watch=[proc], errors=(OSError, httpx.HTTPError))
        yield url
    finally:
        proc.stop()


@pytest.fixture
def on(mlflow_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    return mlflow_server


def rest(url: str, endpoint: str, **params) -> dict:
    r = httpx.get(f"{url}/api/2.0/mlflow/{endpoint}", params=params, timeout=10)
    r.raise_for_status()
    return r.json()


def search(url: str, experiment_id: str) -> list[dict]:
    r = httpx.post(f"{url}/api/2.0/mlflow/runs/search", json={"experiment_ids": [experiment_id]}, timeout=10)
    r.raise_for_status()
    return r.json().get("runs", [])


def metrics_doc(run: str, seeds=(42, 7)) -> MetricsDocument:
    """A whole metrics document (a tiny run's) with these accuracies, differences and verdicts."""
    m = json.loads((Path(__file__).resolve().parents[1] / "unit" / "data" / "metrics_v2_previous_writer.json")
                   .read_text())
    acc = {"scratch": {1.0: 0.95, 0.5: 0.93}, "transfer": {0.5: 0.955}}
    m.update(run=run, run_id=f"manual__{run}", config={**m["config"], "seeds": list(seeds), "fractions": [0.5],
                                                          "lr": 0.001},
             accuracy_table=[{"model": mo, "fraction": f, "n_train": 10, "mean": a, "sd": 0.0, "n": len(seeds),
                              "per_seed": {str(s): a + s / 10000 for s in seeds}}
                             for mo, by in acc.items() for f, a in by.items()],
             verdict={"kind": "no_difference", "text": "No significant difference."})
    m["headline"]["difference"].update(mean=0.005, low=-0.001, high=0.011)
    m["nightly"]["experiment_key"] = KEY
    m["nightly"]["pooled"].update(mean=0.004, low=0.001, high=0.007, n_seeds=6,
                                  verdict={"kind": "improves", "text": "Pooled: helps."})
    return MetricsDocument.model_validate(m)


def report_dir(tmp_path: Path, run: str) -> Path:
    d = tmp_path / run
    d.mkdir()
    for name in tracking.REPORT_FILES:
        (d / name).write_text(f"{name} of {run}")
    return d


def test_a_report_is_logged_once_per_seed_with_verdicts_and_files(on: str, tmp_path: Path) -> None:
    m = metrics_doc("night_1")
    d = report_dir(tmp_path, "night_1")
    first = tracking.log_report(m, d)
    again = tracking.log_report(m, d)  # a retried compare_report replaces its MLflow run
    assert first and again and first != again
    exp = rest(on, "experiments/get-by-name", experiment_name=f"fashion-mnist-tl/{KEY}")["experiment"]
    [run] = search(on, exp["experiment_id"])
    assert run["info"]["run_id"] == again and run["info"]["status"] == "FINISHED"
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert tags["tl.run"] == "night_1" and tags["verdict.kind"] == "no_difference"
    assert tags["pooled.verdict.kind"] == "improves" and tags["airflow.run_id"] == "manual__night_1"
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params["seeds"] == "[42, 7]" and params["lr"] == "0.001"
    history = rest(on, "metrics/get-history", run_id=again, metric_key="test_accuracy.transfer.f0.5")["metrics"]
    assert sorted((h["step"], round(h["value"], 4)) for h in history) == [(7, 0.9557), (42, 0.9592)]
    latest = {mt["key"]: mt["value"] for mt in run["data"]["metrics"]}
    assert latest["pooled.difference.low"] == 0.001 and latest["tonight.difference.high"] == 0.011
    files = rest(on, "artifacts/list", run_id=again, path="report")["files"]
    assert sorted(Path(f["path"]).name for f in files) == sorted(tracking.REPORT_FILES)


def test_the_champion_is_registered_with_its_alias(on: str, tmp_path: Path) -> None:
    m = metrics_doc("night_2")
    d = report_dir(tmp_path, "night_2")
    (d / "metrics.json").write_text(json.dumps(m.to_json()))
    tracking.log_report(m, d)
    model = tmp_path / "champion.keras"
    model.write_bytes(b"k" * 4096)
    champion = {"run": "night_2", "seed": 7, "test_accuracy": 0.9557, "model_path": str(model)}
    version = tracking.register_champion(champion, str(d / "metrics.json"))
    assert version and tracking.register_champion(champion, str(d / "metrics.json")) == version  # once
    got = rest(on, "registered-models/alias", name=tracking.REGISTERED_MODEL, alias="champion")["model_version"]
    assert got["version"] == version and {t["key"]: t["value"] for t in got["tags"]}["seed"] == "7"
    assert got["source"].endswith("/champion/champion.keras")


def test_a_model_over_the_size_limit_is_logged_as_not_registered(on: str, tmp_path: Path, monkeypatch,
                                                                 caplog) -> None:
    monkeypatch.setenv("TL_MLFLOW_MAX_MODEL_MB", "0.001")  # about 1 kB
    model = tmp_path / "big.keras"
    model.write_bytes(b"k" * 4096)
    caplog.set_level(logging.INFO, logger="tl.tracking")
    assert tracking.register_champion({"run": "night_3", "seed": 1, "test_accuracy": 0.9,
                                       "model_path": str(model)}, None) is None
    assert any("NOT registered" in r.getMessage() and "TL_MLFLOW_MAX_MODEL_MB" in r.getMessage()
               for r in caplog.records)
    assert model.read_bytes() == b"k" * 4096


@pytest.mark.parametrize(("uri", "expect"), [
    ("", "MLflow tracking off: set MLFLOW_TRACKING_URI"),
    ("mlflow:5000", "MLflow tracking off: MLFLOW_TRACKING_URI is not an http(s) URL"),
    (f"http://127.0.0.1:{DEAD_PORT}", "MLflow tracking skipped: the server at http://127.0.0.1"),
])
def test_off_malformed_or_unreachable_is_one_log_line_and_never_fails(uri, expect, monkeypatch, caplog, capsys,
                                                                      tmp_path) -> None:
    import time

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("AIRFLOW_CONN_TL_MLFLOW", raising=False)
    caplog.set_level(logging.INFO, logger="tl.tracking")
    t0 = time.monotonic()
    assert tracking.log_report(metrics_doc("night_x"), report_dir(tmp_path, "night_x")) is None
    took = time.monotonic() - t0
    # Airflow's first connection lookup may move logging to its own (structlog) handler on stdout.
    out = capsys.readouterr().out
    lines = [r.getMessage() for r in caplog.records if r.name == "tl.tracking"] + [
        ln.split("] ", 1)[1] for ln in out.splitlines() if "[tl.tracking]" in ln]
    assert len(lines) == 1 and lines[0].startswith(expect), lines
    assert not any(r.exc_info for r in caplog.records) and "Traceback" not in out
    print(f"{uri or '(unset)'}: {took:.2f} s")


def test_the_server_may_come_from_an_airflow_connection(monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_TL_MLFLOW", "https://ml%40team:" + "pw@mlflow.example.com:8443/tracking")
    assert tracking.tracking_uri() == "https://mlflow.example.com:8443/tracking"
    import os

    assert (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]) == ("ml@team", "pw")


def test_the_compose_mlflow_image_creates_its_database_once() -> None:
    """deploy/compose/mlflow/serve.py against the machine's PostgreSQL (as the compose postgres service)."""
    import importlib.util
    import secrets

    import psycopg2

    spec = importlib.util.spec_from_file_location("serve", Path(__file__).parents[2] / "deploy/compose/mlflow/serve.py")
    serve = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serve)
    name = f"tl_mlflow_test_{secrets.token_hex(4)}"
    admin = "postgresql://postgres@127.0.0.1:5432/postgres"

    def exists() -> bool:
        with psycopg2.connect(admin) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            return cur.fetchone() is not None

    try:
        assert not exists()
        serve.ensure_database(f"postgresql://postgres@127.0.0.1:5432/{name}", timeout_s=10)
        serve.ensure_database(f"postgresql://postgres@127.0.0.1:5432/{name}", timeout_s=10)  # kept
        assert exists()
    finally:
        conn = psycopg2.connect(admin)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.close()

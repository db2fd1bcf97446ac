"""Experiment tracking and model registry in MLflow: optional, and never a reason for a run to fail.

On when a tracking server is configured: `MLFLOW_TRACKING_URI`, else the Airflow connection
`tl_mlflow` (http/https; login and password become MLflow's basic-auth credentials). Then
- compare_report logs each Airflow run as one MLflow run, in one experiment per experiment key
  ("fashion-mnist-tl/<key>"): the settings as params; test accuracy per model and fraction, with the
  seed as the step (one point per seed); tonight's and the pooled verdict as tags and the pooled
  interval as metrics; the report files as artifacts. A retried report replaces its MLflow run, so
  every seed is in it once.
- promote_champion uploads the promoted .keras file to that run and registers it as a version of
  the registered model "fashion-mnist-tl-champion" with the alias `champion`.
Off (nothing set): one log line says so. Unreachable or malformed: one log line, and the run goes on;
requests get one try and a short timeout (no retry storm). A model larger than
`TL_MLFLOW_MAX_MODEL_MB` (default 200) is logged as not registered; the champion file is untouched.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

if TYPE_CHECKING:
    from include.report.document import MetricsDocument

log = logging.getLogger("tl.tracking")

CONN_ID = "tl_mlflow"
EXPERIMENT_PREFIX = "fashion-mnist-tl"
REGISTERED_MODEL = "fashion-mnist-tl-champion"
ALIAS = "champion"
RUN_TAG = "tl.run"  # the run folder: finds the MLflow run of an Airflow run again
DEFAULT_MAX_MODEL_MB = 200.0
REPORT_FILES = ("report.html", "report.md", "metrics.json", "pooled.png")
T = TypeVar("T")


class TrackingError(ValueError):
    """A tracking setting that cannot work; the message says which and how to fix it."""


def tracking_uri() -> str | None:
    """The configured server's URL, None when none is configured; TrackingError when malformed."""
    uri, where = os.environ.get("MLFLOW_TRACKING_URI", "").strip(), "MLFLOW_TRACKING_URI"
    if not uri:
        from include.alert_settings import _connection

        conn = _connection(CONN_ID)
        if conn is None or not conn.host:
            return None
        where = f"the {CONN_ID} connection"
        scheme = conn.conn_type if conn.conn_type in ("http", "https") else "http"
        host = conn.host.split("://", 1)[-1]
        uri = urlunsplit((scheme, host + (f":{conn.port}" if conn.port else ""),
                          "/" + quote((conn.schema or "").lstrip("/"), safe="/"), "", ""))
        if conn.login:  # MLflow's client sends these as basic auth
            os.environ.setdefault("MLFLOW_TRACKING_USERNAME", conn.login)
            os.environ.setdefault("MLFLOW_TRACKING_PASSWORD", conn.password or "")
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TrackingError(f"{where} is not an http(s) URL of an MLflow server ({parts.scheme or 'no'} scheme, "
                            f"host {parts.hostname or 'missing'}): use e.g. http://mlflow:5000")
    return uri.rstrip("/")


def _client() -> Any | None:
    """An MlflowClient for the configured, reachable server; None (after one log line) otherwise."""
    try:
        uri = tracking_uri()
    except TrackingError as exc:
        log.error("MLflow tracking off: %s", exc)
        return None
    if uri is None:
        log.info("MLflow tracking off: set MLFLOW_TRACKING_URI or the Airflow connection %s to log runs and "
                 "register the champion (docs/deployment.md).", CONN_ID)
        return None
    # One try per request and a short timeout: a dead server costs seconds, not minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    import httpx

    try:
        httpx.get(f"{uri}/health", timeout=5).raise_for_status()
    except httpx.HTTPError as exc:
        log.error("MLflow tracking skipped: the server at %s does not answer (%s)", _safe(uri), type(exc).__name__)
        return None
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _safe(uri: str) -> str:
    p = urlsplit(uri)
    return urlunsplit((p.scheme, p.hostname or "", p.path, "", ""))


def _guarded(what: str, fn: Callable[[Any], T]) -> T | None:
    """fn(client) when tracking is on; any failure is one log line, never the run's failure."""
    client = _client()
    if client is None:
        return None
    try:
        return fn(client)
    except Exception as exc:  # tracking is optional: the run's own results are already written
        log.error("MLflow: %s failed, the run goes on without it: %s: %s", what, type(exc).__name__,
                  str(exc).splitlines()[0][:300] if str(exc) else "")
        return None


def _experiment_id(client: Any, key: str) -> str:
    name = f"{EXPERIMENT_PREFIX}/{key}"
    found = client.get_experiment_by_name(name)
    return found.experiment_id if found else client.create_experiment(name)


def _find_run(client: Any, experiment_id: str, run: str) -> Any | None:
    hits = client.search_runs([experiment_id], filter_string=f"tags.`{RUN_TAG}` = '{run}'", max_results=1)
    return hits[0] if hits else None


def _params(cfg: dict[str, Any]) -> dict[str, str]:
    return {k: (str(v) if len(str(v)) <= 500 else str(v)[:497] + "...") for k, v in sorted(cfg.items())}


def run_metrics(m: MetricsDocument) -> list[tuple[str, float, int]]:
    """(key, value, step): test accuracy per model and fraction with the seed as the step, the headline
    and pooled differences (step 0)."""
    out = [(f"test_accuracy.{row.model}.f{row.fraction:g}", float(acc), int(seed))
           for row in m.accuracy_table for seed, acc in sorted(row.per_seed.items())]
    pooled = m.nightly.pooled if m.nightly else None
    for prefix, d in (("tonight.difference", m.headline.difference), ("pooled.difference", pooled)):
        if d is not None:
            out += [(f"{prefix}.{k}", float(getattr(d, k)), 0) for k in ("mean", "low", "high")
                    if getattr(d, k) is not None]
    if pooled is not None:
        out.append(("pooled.n_seeds", float(pooled.n_seeds), 0))
    return out


def experiment_key(m: MetricsDocument) -> str:
    return m.nightly.experiment_key if m.nightly else "default"


def log_report(m: MetricsDocument, report_dir: Path) -> str | None:
    """compare_report's hook: the run in MLflow (replacing an earlier try's); its MLflow run id or None."""
    def log_it(client: Any) -> str:
        from mlflow.entities import Metric, Param

        pooled_verdict = m.nightly.pooled.verdict if m.nightly else None
        exp = _experiment_id(client, experiment_key(m))
        old = _find_run(client, exp, m.run)
        if old is not None:  # a retried report: its earlier MLflow run goes, so each seed is logged once
            client.delete_run(old.info.run_id)
        tags = {RUN_TAG: m.run, "airflow.run_id": m.run_id,
                "verdict.kind": m.verdict.kind, "verdict.text": m.verdict.text[:5000],
                "pooled.verdict.kind": pooled_verdict.kind if pooled_verdict else "",
                "pooled.verdict.text": pooled_verdict.text[:5000] if pooled_verdict else "",
                "dataset": m.dataset_name, "architecture": m.architecture}
        run = client.create_run(exp, run_name=m.run, tags=tags)
        rid = run.info.run_id
        params = [Param(k, v) for k, v in _params(m.config.model_dump(mode="json")).items()]
        metrics = [Metric(k, v, 0, s) for k, v, s in run_metrics(m)]
        for i in range(0, max(len(params), len(metrics)), 100):  # the REST API's batch limits
            client.log_batch(rid, metrics=metrics[i:i + 100], params=params[i:i + 100], tags=[])
        for name in REPORT_FILES:
            if (report_dir / name).is_file():
                client.log_artifact(rid, str(report_dir / name), artifact_path="report")
        client.set_terminated(rid)
        log.info("MLflow: logged run %s in experiment %s (%d metrics, %d params)", rid, exp, len(metrics),
                 len(params))
        return rid

    return _guarded("logging the report", log_it)


def max_model_bytes() -> int:
    try:
        return int(float(os.environ.get("TL_MLFLOW_MAX_MODEL_MB") or DEFAULT_MAX_MODEL_MB) * 1024 * 1024)
    except ValueError:
        return int(DEFAULT_MAX_MODEL_MB * 1024 * 1024)


def register_champion(champion: dict[str, Any], metrics_path: str | None) -> str | None:
    """promote_champion's hook: the promoted model as a registered version with the alias `champion`;
    the version number, or None (off, unreachable, too large: logged)."""
    model = Path(champion["model_path"])
    size = model.stat().st_size if model.is_file() else 0
    if size > max_model_bytes():
        log.error("MLflow: champion model %s NOT registered: %.1f MB is over TL_MLFLOW_MAX_MODEL_MB=%.1f MB; the "
                  "champion file holds it", model.name, size / 2**20, max_model_bytes() / 2**20)
        return None

    def register(client: Any) -> str:
        from mlflow.exceptions import MlflowException

        from include.report.document import MetricsDocument

        exp = _experiment_id(client, experiment_key(MetricsDocument.read(metrics_path)) if metrics_path else "default")
        run = _find_run(client, exp, champion["run"])
        if run is None:
            run = client.create_run(exp, run_name=champion["run"], tags={RUN_TAG: champion["run"]})
        rid = run.info.run_id
        client.log_artifact(rid, str(model), artifact_path="champion")
        try:
            client.create_registered_model(REGISTERED_MODEL)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        source = f"{run.info.artifact_uri}/champion/{model.name}"
        same = [v for v in client.search_model_versions(f"name='{REGISTERED_MODEL}' and run_id='{rid}'")
                if v.source == source]
        version = same[0] if same else client.create_model_version(
            REGISTERED_MODEL, source, run_id=rid,
            tags={"seed": str(champion["seed"]), "test_accuracy": str(champion["test_accuracy"]),
                  RUN_TAG: champion["run"]})
        client.set_registered_model_alias(REGISTERED_MODEL, ALIAS, version.version)
        log.info("MLflow: %s version %s registered with alias %r", REGISTERED_MODEL, version.version, ALIAS)
        return str(version.version)

    return _guarded("registering the champion", register)

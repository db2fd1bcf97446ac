"""Alerts that reach a person: e-mail through the SMTP provider's notifier and one JSON webhook.

Off by default. Each channel turns on by configuration alone (the DAG is never edited):
- e-mail: `TL_ALERT_EMAIL_TO` (comma-separated recipients, or the Airflow Variable
  `tl_alert_email_to`) plus the Airflow SMTP connection `tl_alert_smtp` (or the id in
  `TL_ALERT_SMTP_CONN_ID`): host, port, login; extras `from_email`, `disable_ssl`, `disable_tls`,
  `timeout`, `retry_limit` (keep the last two small: a dead mail server should not hold the task
  for minutes);
- webhook: `TL_ALERT_WEBHOOK_URL` (or the Variable `tl_alert_webhook_url`), or the Airflow
  connection `tl_alert_webhook` whose URI is the URL, e.g.
  `AIRFLOW_CONN_TL_ALERT_WEBHOOK=https://<user>:<password>@hooks.example.com/path?key=k` (login, password
  and query string are sent too); it receives one JSON POST per alert, with a `text` field that
  chat webhooks display as is.
Variables come through Airflow's secrets backends like connections; the environment wins.
A malformed address or URL is reported in one log line when each task starts (check_settings), and
that channel stays off; the other channel still works.
With neither configured, one log line says alerts are off. A channel that cannot deliver is
logged and skipped: an alert never fails (or retries) the run that raised it.

Links use Airflow's `[api] base_url`, so they point at the UI users actually open.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import quote

from airflow.sdk import BaseNotifier

from include.alert_settings import (
    AlertConfigError,
    check_settings,
    email_recipients,
    redact,
    webhook_url,
)

__all__ = ["Alert", "AlertConfigError", "FailureNotifier", "check_settings", "report_url", "send"]

log = logging.getLogger("tl.alerts")

SMTP_CONN_ID = "tl_alert_smtp"
REPORTS_URL_PREFIX = "/transfer-learning-reports"  # plugins/transfer_learning_reports.py
WEBHOOK_TIMEOUT_S = 10.0
_said_off = False


@dataclass(frozen=True)
class Alert:
    kind: str  # task_failed, run_failed, regression, sentinel_drift
    dag_id: str
    run_id: str
    task_id: str | None
    what: str  # what happened, in a sentence or two
    link: str  # the task log or the report

    @property
    def subject(self) -> str:
        where = f" task {self.task_id}" if self.task_id else ""
        return f"[Airflow alert] {self.dag_id}: {self.kind.replace('_', ' ')} in run {self.run_id}{where}"

    @property
    def text(self) -> str:
        return (f"{self.subject}\n\nDAG: {self.dag_id}\nRun: {self.run_id}\nTask: {self.task_id or '(whole run)'}\n"
                f"What happened: {self.what}\nLink: {self.link}\n")

    @property
    def html(self) -> str:
        from include.report.render import render_alert_email

        return render_alert_email(self)

    def payload(self) -> dict[str, Any]:
        return {**asdict(self), "subject": self.subject, "text": self.text}


# -- links ----------------------------------------------------------------------------------------
def base_url() -> str:
    from airflow.sdk.configuration import conf

    return conf.get("api", "base_url", fallback="http://localhost:8080/").rstrip("/")


def run_url(dag_id: str, run_id: str) -> str:
    return f"{base_url()}/dags/{quote(dag_id)}/runs/{quote(run_id)}"


def report_url(run_folder: str) -> str:
    """The run's report.html as the reports plugin serves it."""
    return f"{base_url()}{REPORTS_URL_PREFIX}/report/{quote(run_folder)}/report.html"


# -- channels -------------------------------------------------------------------------------------
class WebhookNotifier(BaseNotifier):
    """POSTs the alert as JSON to one URL (any receiver: chat webhooks, incident tools, a script)."""

    def __init__(self, url: str, payload: dict[str, Any]):
        super().__init__()
        self.url, self.payload = url, payload

    def notify(self, context: Any) -> None:
        import httpx

        try:
            httpx.post(self.url, json=self.payload, timeout=WEBHOOK_TIMEOUT_S).raise_for_status()
        except httpx.HTTPError as exc:  # httpx's message holds the whole URL: credentials and tokens
            raise RuntimeError(f"webhook {redact(self.url)}: {exc.__class__.__name__}"
                               f"{f' {exc.response.status_code}' if isinstance(exc, httpx.HTTPStatusError) else ''}"
                               ) from None


def _email(alert: Alert, recipients: list[str]) -> None:
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    SmtpNotifier(to=recipients, from_email=os.environ.get("TL_ALERT_EMAIL_FROM") or None, subject=alert.subject,
                 html_content=alert.html,
                 smtp_conn_id=os.environ.get("TL_ALERT_SMTP_CONN_ID") or SMTP_CONN_ID).notify({})


def channels() -> dict[str, Callable[[Alert], None] | AlertConfigError]:
    """The configured channels, by name; a malformed one as its error."""
    out: dict[str, Callable[[Alert], None] | AlertConfigError] = {}
    try:
        recipients = email_recipients()
        if recipients:
            out["email"] = lambda a: _email(a, recipients)
    except AlertConfigError as exc:
        out["email"] = exc
    try:
        url = webhook_url()
        if url:
            out["webhook"] = lambda a: WebhookNotifier(url, a.payload()).notify({})
    except AlertConfigError as exc:
        out["webhook"] = exc
    return out


def send(alert: Alert) -> dict[str, str]:
    """Deliver on every configured channel; {channel: "sent" | error}. Never raises."""
    global _said_off
    log.warning("ALERT %s", alert.text)
    try:
        configured = channels()
    except Exception as exc:  # a broken configuration must not fail the run
        log.error("Alert channels could not be read (%r): alert only in this log", exc)
        return {"configuration": repr(exc)}
    if not configured and not _said_off:
        _said_off = True
        log.info("Alerts are off: set TL_ALERT_EMAIL_TO (with the %s SMTP connection) and/or TL_ALERT_WEBHOOK_URL "
                 "to send them (docs/nightly.md).", SMTP_CONN_ID)
    outcome = {}
    for name, deliver in configured.items():
        if isinstance(deliver, AlertConfigError):
            outcome[name] = f"misconfigured: {deliver}"
            log.error("Alert %r NOT sent by %s: %s", alert.kind, name, deliver)
            continue
        try:
            deliver(alert)
            outcome[name] = "sent"
            log.info("Alert %r sent by %s", alert.kind, name)
        except Exception as exc:  # an unreachable channel is logged, never fails the run
            outcome[name] = repr(exc)
            log.error("Alert %r NOT delivered by %s: %r", alert.kind, name, exc)
    return outcome


# -- failure callbacks ----------------------------------------------------------------------------
def failure_alert(context: Any, run_level: bool = False) -> Alert:
    """The alert for a task that failed its last try or, `run_level`, for a failed DAG run (its
    context names the task that failed it, when there is one)."""
    dag_run = context.get("dag_run")
    dag_id = getattr(context.get("dag"), "dag_id", None) or getattr(dag_run, "dag_id", "?")
    run_id = context.get("run_id") or getattr(dag_run, "run_id", "?")
    ti = context.get("ti") or context.get("task_instance")
    task_id = getattr(ti, "task_id", None)
    if run_level:
        reason = context.get("reason") or "a task failed"
        culprit = f", last failed task: {task_id}" if task_id else ""
        return Alert("run_failed", dag_id, run_id, task_id, f"The DAG run failed ({reason}{culprit}).",
                     run_url(dag_id, run_id))
    exc = context.get("exception")
    mapped = f" (map index {ti.map_index})" if getattr(ti, "map_index", -1) not in (None, -1) else ""
    what = (f"Task {task_id}{mapped} failed on try {getattr(ti, 'try_number', '?')}, its last: "
            f"{exc.__class__.__name__ + ': ' + str(exc) if exc else 'see the log'}")
    return Alert("task_failed", dag_id, run_id, task_id, what, ti.log_url)


class FailureNotifier(BaseNotifier):
    """on_failure_callback: for a task (Airflow calls it after the last try only) or, with
    run_level=True, for the DAG run."""

    def __init__(self, run_level: bool = False):
        super().__init__()
        self.run_level = run_level

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        """Nothing to template; skipping Jinja also works where context["dag"] is a SerializedDAG
        without a template environment (DAG-level callbacks under dag.test())."""

    def notify(self, context: Any) -> None:
        try:
            alert = failure_alert(context, self.run_level)
        except Exception as exc:  # a callback must not raise over the real failure
            log.error("Could not build the failure alert: %r", exc)
            return
        send(alert)

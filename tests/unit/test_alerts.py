"""Alerts reach real local servers (aiosmtpd, an HTTP receiver); a dead channel never raises."""

import json
import logging
from types import SimpleNamespace

import pytest

from include import alerts
from include.alerts import Alert, FailureNotifier, failure_alert, send
from tests import alert_servers
from tests.alert_servers import DEAD_PORT, WEBHOOK_PORT

# The real receivers, as this module's fixtures (tests take them by these names).
smtp_server = alert_servers.smtp_server
webhook_receiver = alert_servers.webhook_receiver

ALERT = Alert("sentinel_drift", "fashion_mnist_transfer_learning", "scheduled__2026-11-30T02:00:00+00:00",
              "compare_report", "Sentinel seed 42: transfer accuracy 0.9635 -> 0.9640. Changed: numpy 2.4.5 -> 2.4.6.",
              "http://airflow.example:8080/transfer-learning-reports/report/scheduled__2026-11-30/report.html")


@pytest.fixture(autouse=True)
def _no_channels(monkeypatch):
    for var in ("TL_ALERT_EMAIL_TO", "TL_ALERT_WEBHOOK_URL", "AIRFLOW_CONN_TL_ALERT_WEBHOOK",
                "AIRFLOW_CONN_TL_ALERT_SMTP", "AIRFLOW_VAR_TL_ALERT_EMAIL_TO", "AIRFLOW_VAR_TL_ALERT_WEBHOOK_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(alerts, "_said_off", False)


@pytest.mark.services
def test_an_alert_arrives_by_email_and_webhook_naming_dag_run_task_what_and_link(smtp_server, webhook_receiver):
    assert send(ALERT) == {"email": "sent", "webhook": "sent"}

    [mail] = smtp_server
    assert mail["X-Envelope-To"] == "ml-oncall@example.com, lead@example.com"
    assert mail["From"] == "airflow@example.com"
    assert mail["Subject"] == ("[Airflow alert] fashion_mnist_transfer_learning: sentinel drift in run "
                               "scheduled__2026-11-30T02:00:00+00:00 task compare_report")
    body = mail.get_body(("html",)).get_content()
    for part in ("compare_report", "numpy 2.4.5 -&gt; 2.4.6", f'href="{ALERT.link}"'):
        assert part in body

    [hook] = webhook_receiver
    assert hook["path"] == "/hooks/airflow" and hook["content_type"] == "application/json"
    assert {k: hook["json"][k] for k in ("kind", "dag_id", "run_id", "task_id", "link")} == {
        "kind": "sentinel_drift", "dag_id": ALERT.dag_id, "run_id": ALERT.run_id, "task_id": "compare_report",
        "link": ALERT.link}
    assert "What happened: Sentinel seed 42" in hook["json"]["text"]


def test_off_by_default_says_so_in_one_log_line(caplog):
    caplog.set_level(logging.INFO, logger="tl.alerts")
    assert send(ALERT) == {} and send(ALERT) == {}
    off = [r for r in caplog.records if "Alerts are off" in r.getMessage()]
    assert len(off) == 1 and "TL_ALERT_EMAIL_TO" in off[0].getMessage()


@pytest.mark.services
def test_unreachable_channels_are_logged_and_never_raise(monkeypatch, caplog, webhook_receiver):
    monkeypatch.setenv("TL_ALERT_EMAIL_TO", "ml-oncall@example.com")
    monkeypatch.setenv("AIRFLOW_CONN_TL_ALERT_SMTP", json.dumps({
        "conn_type": "smtp", "host": "127.0.0.1", "port": DEAD_PORT,
        "extra": {"from_email": "airflow@example.com", "disable_ssl": True, "disable_tls": True, "timeout": 2,
                  "retry_limit": 0}}))
    monkeypatch.setenv("TL_ALERT_WEBHOOK_URL", f"http://127.0.0.1:{DEAD_PORT}/nobody")
    caplog.set_level(logging.INFO, logger="tl.alerts")
    outcome = send(ALERT)
    assert set(outcome) == {"email", "webhook"} and "sent" not in outcome.values()
    assert "Refused" in outcome["email"] or "refused" in outcome["email"].lower()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("NOT delivered by email" in e for e in errors) and any("NOT delivered by webhook" in e for e in errors)
    assert webhook_receiver == []  # nothing went to the live receiver: the URL pointed elsewhere


@pytest.mark.services
def test_webhook_can_come_from_an_airflow_connection(monkeypatch, webhook_receiver):
    monkeypatch.delenv("TL_ALERT_WEBHOOK_URL")
    monkeypatch.setenv("AIRFLOW_CONN_TL_ALERT_WEBHOOK", f"http://127.0.0.1:{WEBHOOK_PORT}/from-connection")
    assert send(ALERT) == {"webhook": "sent"}
    assert webhook_receiver[0]["path"] == "/from-connection"


@pytest.mark.services
def test_a_webhook_connection_with_query_string_and_credentials_arrives_whole(monkeypatch, webhook_receiver):
    import base64

    monkeypatch.delenv("TL_ALERT_WEBHOOK_URL")
    monkeypatch.setenv("AIRFLOW_CONN_TL_ALERT_WEBHOOK",
                       "http://bot%40team:" + f"s3cr%3At@127.0.0.1:{WEBHOOK_PORT}/v1/spaces/AAA/messages"
                       "?key=k-123&token=t%26x")
    assert send(ALERT) == {"webhook": "sent"}
    [hook] = webhook_receiver
    assert hook["path"] == "/v1/spaces/AAA/messages?key=k-123&token=t%26x"
    scheme, creds = hook["authorization"].split()
    assert scheme == "Basic" and base64.b64decode(creds).decode() == "bot@team:s3cr:t"


@pytest.mark.services
def test_recipients_and_webhook_may_come_from_airflow_variables(monkeypatch, webhook_receiver, smtp_server):
    """Variables resolve through the secrets backends (here the environment one: AIRFLOW_VAR_*)."""
    monkeypatch.delenv("TL_ALERT_WEBHOOK_URL")
    monkeypatch.delenv("TL_ALERT_EMAIL_TO")
    monkeypatch.setenv("AIRFLOW_VAR_TL_ALERT_WEBHOOK_URL", f"http://127.0.0.1:{WEBHOOK_PORT}/from-variable?k=1")
    monkeypatch.setenv("AIRFLOW_VAR_TL_ALERT_EMAIL_TO", "oncall@example.com")
    assert send(ALERT) == {"email": "sent", "webhook": "sent"}
    assert webhook_receiver[0]["path"] == "/from-variable?k=1"
    assert smtp_server[0]["X-Envelope-To"] == "oncall@example.com"


@pytest.mark.services
def test_malformed_alert_settings_get_one_clear_line_at_task_start_and_never_a_traceback(
        monkeypatch, caplog, webhook_receiver):
    monkeypatch.setenv("TL_ALERT_EMAIL_TO", "ml-oncall@example.com, the on-call team")
    caplog.set_level(logging.INFO, logger="tl.alerts")
    [problem] = alerts.check_settings({})
    assert "TL_ALERT_EMAIL_TO" in problem and "'the on-call team'" in problem and "ml-oncall@example.com" in problem
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [f"Alert setting: {problem}"]
    assert not any(r.exc_info for r in caplog.records)
    # The malformed channel stays off; the other one still delivers.
    outcome = send(ALERT)
    assert outcome["webhook"] == "sent" and outcome["email"].startswith("misconfigured: TL_ALERT_EMAIL_TO")

    monkeypatch.setenv("TL_ALERT_WEBHOOK_URL", "hooks.example.com/no-scheme?token=SECRET")
    [problem] = [p for p in alerts.check_settings({}) if "WEBHOOK" in p]
    assert "not an http(s) URL" in problem and "SECRET" not in problem


@pytest.mark.services
def test_a_failed_webhook_is_reported_without_its_credentials_or_token(monkeypatch, caplog):
    monkeypatch.setenv("TL_ALERT_WEBHOOK_URL", "http://u:" + f"PASSWORD@127.0.0.1:{DEAD_PORT}/x?token=TOKEN")
    caplog.set_level(logging.INFO, logger="tl.alerts")
    outcome = send(ALERT)
    assert outcome["webhook"].startswith("RuntimeError") and "127.0.0.1/x" in outcome["webhook"]
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "PASSWORD" not in logged + outcome["webhook"] and "TOKEN" not in logged + outcome["webhook"]


def _ti(**kw):
    return SimpleNamespace(task_id="pretrain", map_index=1, try_number=3,
                           log_url="http://af.example/dags/d/runs/r/tasks/pretrain/mapped/1?try_number=3", **kw)


@pytest.mark.services
def test_failure_callback_alerts_for_the_task_with_its_log_link(webhook_receiver):
    from airflow.sdk import DAG

    context = {"dag": DAG("fashion_mnist_transfer_learning", schedule=None), "run_id": "manual__1", "ti": _ti(),
               "exception": RuntimeError("worker lost")}
    FailureNotifier()(context)
    [hook] = webhook_receiver
    j = hook["json"]
    assert (j["kind"], j["task_id"], j["run_id"]) == ("task_failed", "pretrain", "manual__1")
    assert "map index 1" in j["what"] and "RuntimeError: worker lost" in j["what"] and "try 3" in j["what"]
    assert j["link"] == _ti().log_url


def test_run_failure_links_to_the_run_under_the_configured_base_url(monkeypatch):
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://airflow.example.org/")
    dag_run = SimpleNamespace(dag_id="fashion_mnist_transfer_learning", run_id="scheduled__2026-11-30T02:00:00+00:00")
    alert = failure_alert({"dag_run": dag_run, "reason": "task_failure", "ti": _ti()}, run_level=True)
    assert alert.kind == "run_failed" and alert.task_id == "pretrain"
    assert "task_failure" in alert.what and "last failed task: pretrain" in alert.what
    assert alert.link == ("https://airflow.example.org/dags/fashion_mnist_transfer_learning/runs/"
                          "scheduled__2026-11-30T02%3A00%3A00%2B00%3A00")


@pytest.mark.services
def test_a_missed_deadline_alerts_with_the_runs_link(webhook_receiver):
    """The context the scheduler hands a DeadlineAlert callback: the DagRun as the REST API dumps it."""
    from tasks.notify import deadline_missed

    deadline_missed(context={"dag_run": {"dag_id": "fashion_mnist_transfer_learning",
                                         "dag_run_id": "scheduled__2026-12-01T02:00:00+00:00",
                                         "queued_at": "2026-12-01T02:00:03Z", "state": "running"},
                             "deadline": {"id": "x", "deadline_time": "2026-12-01T08:00:03Z"}})
    [hook] = webhook_receiver
    assert hook["json"]["kind"] == "deadline_missed" and hook["json"]["task_id"] is None
    assert "has not finished 6:00:00 after it was queued (2026-12-01T02:00:03Z; state running)" in hook["json"]["what"]
    assert hook["json"]["link"].endswith("/dags/fashion_mnist_transfer_learning/runs/"
                                         "scheduled__2026-12-01T02%3A00%3A00%2B00%3A00")

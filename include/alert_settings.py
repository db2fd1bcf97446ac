"""Alert settings: where alerts go, read from the environment, Airflow Variables and connections.

The environment wins; Variables and connections come through Airflow's secrets backends. A malformed
address or URL raises AlertConfigError with a message that says which setting and how to fix it;
check_settings() logs those once per task start (the DAG's on_execute_callback).
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

log = logging.getLogger("tl.alerts")

WEBHOOK_CONN_ID = "tl_alert_webhook"
# Loose on purpose: catches a name, a URL or a ';'-separated list, not every RFC 5322 corner.
EMAIL = re.compile(r"[^@\s,;<>\"'()]+@[^@\s,;<>\"'()]+\.[A-Za-z0-9-]{2,}")


def _connection(conn_id: str) -> Any | None:
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return Connection.get(conn_id)
    except AirflowNotFoundException:
        return None


class AlertConfigError(ValueError):
    """An alert setting that cannot work; its message says which and how to fix it."""


def _setting(env: str, variable: str) -> str:
    """An alert setting from the environment, else from the Airflow Variable (any secrets backend)."""
    value = os.environ.get(env, "").strip()
    if value:
        return value
    from airflow.sdk import Variable

    try:
        return str(Variable.get(variable, default="") or "").strip()
    except Exception as exc:  # no Variable store reachable: the setting is simply unset
        log.debug("Variable %s could not be read: %r", variable, exc)
        return ""


def _connection_url(conn: Any) -> str:
    """The connection's URL whole: scheme, login:password, host, port, path and query (its extras)."""
    scheme, host = (conn.conn_type if conn.conn_type in ("http", "https") else "http"), conn.host
    if "://" in host:
        scheme, host = host.split("://", 1)
    auth = quote(conn.login or "", safe="") + (":" + quote(conn.password, safe="") if conn.password else "")
    netloc = (auth + "@" if auth else "") + host + (f":{conn.port}" if conn.port else "")
    path = "/" + quote((conn.schema or "").lstrip("/"), safe="/")
    return urlunsplit((scheme, netloc, path, urlencode(conn.extra_dejson or {}), ""))


def webhook_url() -> str | None:
    url = _setting("TL_ALERT_WEBHOOK_URL", "tl_alert_webhook_url")
    where = "TL_ALERT_WEBHOOK_URL (or Variable tl_alert_webhook_url)"
    if not url:
        conn = _connection(WEBHOOK_CONN_ID)
        if conn is None or not conn.host:
            return None
        url, where = _connection_url(conn), f"the {WEBHOOK_CONN_ID} connection"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AlertConfigError(f"{where} is not an http(s) URL with a host ({redact(url)!r}): use e.g. "
                               "https://hooks.example.com/path?key=...; webhook alerts are off until then.")
    return url


def redact(url: str) -> str:
    """The URL without credentials or query, for logs."""
    p = urlsplit(url)
    return urlunsplit((p.scheme, p.hostname or "", p.path, "", "")) if p.hostname else "(not a URL)"


def email_recipients() -> list[str]:
    addresses = [a.strip() for a in _setting("TL_ALERT_EMAIL_TO", "tl_alert_email_to").split(",") if a.strip()]
    bad = [a for a in addresses if not EMAIL.fullmatch(a)]
    if bad:
        raise AlertConfigError(f"TL_ALERT_EMAIL_TO (or Variable tl_alert_email_to) holds {bad!r}, not e-mail "
                               "addresses: give comma-separated addresses such as ml-oncall@example.com; e-mail "
                               "alerts are off until then.")
    return addresses


def check_settings(context: Any = None) -> list[str]:
    """on_execute_callback: one clear log line per malformed alert setting when a task starts."""
    problems = []
    for read in (email_recipients, webhook_url):
        try:
            read()
        except AlertConfigError as exc:
            problems.append(str(exc))
            log.error("Alert setting: %s", exc)
        except Exception as exc:  # a start-up check must never fail the task
            log.error("Alert settings could not be read: %r", exc)
    return problems

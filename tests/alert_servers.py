"""Real local alert receivers for tests: an SMTP server (aiosmtpd) and an HTTP webhook receiver.

Both listen on 127.0.0.1 and keep what arrives, so tests assert on delivered messages.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from deploy.processes import free_port

# Picked per test session, so that two suites on one machine do not clash. DEAD_PORT: nothing listens there.
SMTP_PORT, WEBHOOK_PORT, DEAD_PORT = free_port(), free_port(), free_port()


class _Mailbox:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # aiosmtpd handler hook
        msg = message_from_bytes(envelope.content, policy=policy.default)
        msg["X-Envelope-To"] = ", ".join(envelope.rcpt_tos)
        self.messages.append(msg)
        return "250 OK"


@pytest.fixture
def smtp_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[EmailMessage]]:
    """aiosmtpd on 127.0.0.1:18160; alert e-mail configured to use it. Yields the received messages."""
    from aiosmtpd.controller import Controller

    box = _Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=SMTP_PORT)
    controller.start()
    monkeypatch.setenv("TL_ALERT_EMAIL_TO", "ml-oncall@example.com, lead@example.com")
    monkeypatch.setenv("AIRFLOW_CONN_TL_ALERT_SMTP", json.dumps({
        "conn_type": "smtp", "host": "127.0.0.1", "port": SMTP_PORT,
        "extra": {"from_email": "airflow@example.com", "disable_ssl": True, "disable_tls": True, "timeout": 5,
                  "retry_limit": 0}}))
    try:
        yield box.messages
    finally:
        controller.stop()


@pytest.fixture
def webhook_receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """An HTTP server on 127.0.0.1:18161 keeping every JSON POST body; the alert webhook points at it."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # http.server calls do_<METHOD>
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append({"path": self.path, "content_type": self.headers.get("Content-Type"),
                             "authorization": self.headers.get("Authorization"), "json": json.loads(body)})
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", WEBHOOK_PORT), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("TL_ALERT_WEBHOOK_URL", f"http://127.0.0.1:{WEBHOOK_PORT}/hooks/airflow")
    try:
        yield received
    finally:
        server.shutdown()
        server.server_close()

"""Entry point of the MLflow server image: create its PostgreSQL database if missing, then exec `mlflow server`.

Reads MLFLOW_BACKEND_STORE_URI (postgresql://<user>:<password>@<host>/<db>; `mlflow server` reads it from the
environment too, so the password never appears in a command line) and MLFLOW_ALLOWED_HOSTS (the Host
headers the server answers: its compose name and localhost). Waits up to 2 minutes for PostgreSQL.
"""

from __future__ import annotations

import os
import sys
import time
from urllib.parse import urlsplit, urlunsplit

import psycopg2
from psycopg2 import sql


def ensure_database(url: str, timeout_s: float = 120) -> None:
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = urlunsplit(("postgresql", parts.netloc, "/postgres", "", ""))
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            conn = psycopg2.connect(admin, connect_timeout=5)
            break
        except psycopg2.OperationalError as exc:
            if time.monotonic() > deadline:
                sys.exit(f"PostgreSQL at {parts.hostname} does not answer: {str(exc).strip()}")
            time.sleep(2)
    conn.autocommit = True  # CREATE DATABASE runs outside a transaction (so no `with conn:`, which opens one)
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if cur.fetchone() is None:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            print(f"created database {name}", flush=True)
    conn.close()


if __name__ == "__main__":
    uri = os.environ["MLFLOW_BACKEND_STORE_URI"]
    ensure_database(uri)
    os.environ["MLFLOW_BACKEND_STORE_URI"] = uri.replace("postgresql://", "postgresql+psycopg2://", 1)
    os.execvp("mlflow", ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000", "--workers", "1",
                         "--serve-artifacts", "--artifacts-destination", "/mlflow/artifacts",
                         "--allowed-hosts", os.environ.get("MLFLOW_ALLOWED_HOSTS", "mlflow,mlflow:5000,localhost:*")])

"""deploy/local_stack.py without starting Airflow: service checks and the shared settings file.

Cost: about 2 seconds (starts and shuts down one throwaway redis-server).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import redis

from deploy.local_stack import StackError, ensure_services, free_port, read_env_file, services_missing

LOCAL_PG = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.mark.services
def test_starts_a_local_redis_that_is_not_running() -> None:
    port = free_port()
    said: list[str] = []
    try:
        ensure_services(LOCAL_PG, f"redis://127.0.0.1:{port}/0", say=said.append)
        assert redis.Redis(port=port, socket_timeout=5).ping()
    finally:
        # The server closes the connection as it shuts down.
        with contextlib.suppress(redis.ConnectionError):
            redis.Redis(port=port, socket_timeout=5).shutdown(nosave=True)
    assert said[0] == f"Redis is not running at 127.0.0.1:{port}: starting it."
    assert said[-1].startswith(f"Redis started at 127.0.0.1:{port} with `redis-server --port {port}")


@pytest.mark.unit
def test_a_remote_service_that_does_not_answer_is_a_clear_error() -> None:
    # 192.0.2.0/24 is TEST-NET-1: never routed, so nothing answers there.
    with pytest.raises(StackError, match=r"PostgreSQL at 192\.0\.2\.1:5432 does not answer.*TL_E2E_POSTGRES_URL"):
        ensure_services("postgresql://u@192.0.2.1:5432/x", "redis://127.0.0.1:6379/0", say=lambda _: None)


@pytest.mark.unit
def test_missing_services_give_one_line_saying_how_to_provide_them() -> None:
    said: list[str] = []
    line = services_missing("postgresql://u@192.0.2.1:5432/x", "redis://127.0.0.1:6379/0", say=said.append)
    assert line is not None and "\n" not in line
    assert line.startswith("services tier skipped: PostgreSQL at 192.0.2.1:5432 does not answer")
    assert "TL_E2E_POSTGRES_URL" in line and "TL_E2E_REDIS_URL" in line


@pytest.mark.services
def test_running_services_are_not_missing() -> None:
    assert services_missing(LOCAL_PG, "redis://127.0.0.1:6379/0", say=lambda _: None) is None


@pytest.mark.unit
def test_env_file_lines_must_be_key_value(tmp_path: Path) -> None:
    f = tmp_path / "airflow.env"
    f.write_text("# comment\n\nA=1\nB = two words \n")
    assert read_env_file(f) == {"A": "1", "B": "two words"}
    f.write_text("A=1\nnot a setting\n")
    with pytest.raises(ValueError, match=r"airflow\.env:2: expected KEY=VALUE"):
        read_env_file(f)


@pytest.mark.unit
@pytest.mark.parametrize("ci", ["", "true"])
def test_the_distributed_tier_skips_without_services_and_fails_under_ci(ci: str) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "CI": ci, "TL_E2E_POSTGRES_URL": "postgresql://u@192.0.2.1:5432/x"}
    res = subprocess.run([sys.executable, "-m", "pytest", "-rs", "-q",
                          "tests/deploy/test_distributed.py"], cwd=Path(__file__).parents[2], env=env,
                         capture_output=True, text=True, timeout=300)
    out = res.stdout + res.stderr
    assert "services tier skipped: PostgreSQL at 192.0.2.1:5432 does not answer" in out, out[-3000:]
    if ci:
        assert res.returncode == 1 and "1 error" in out and "CI=true" in out, out[-3000:]
    else:
        assert res.returncode == 0 and "1 skipped" in out and "Traceback" not in out, out[-3000:]

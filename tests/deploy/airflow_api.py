"""A small client for Airflow's REST API (/api/v2) and the run helpers both deployment tests share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from deploy.processes import NotReady, wait_until

DAG_ID = "fashion_mnist_transfer_learning"


class ApiError(RuntimeError):
    pass


@dataclass
class AirflowApi:
    base_url: str
    username: str
    password: str
    # Raises with the components' logs when one died; called while polling.
    check_alive: Callable[[], None] = lambda: None
    # Text shown when a run hangs with nothing failed (e.g. the components' last log lines).
    diagnostics: Callable[[], str] = lambda: ""
    _token: str | None = field(default=None, repr=False)

    def token(self) -> str:
        if self._token is None:
            r = httpx.post(f"{self.base_url}/auth/token", json={"username": self.username, "password": self.password},
                           timeout=30)
            if r.status_code >= 300:
                raise ApiError(f"POST /auth/token failed: {r.status_code} {r.text[:500]}")
            self._token = r.json()["access_token"]
        return self._token

    def __call__(self, method: str, path: str, *, expect: tuple[int, ...] = (200,), raw: bool = False,
                 **kwargs: Any) -> Any:
        """Call /api/v2 with the bearer token; a status outside `expect` raises with the body."""
        headers = {"Authorization": f"Bearer {self.token()}", **kwargs.pop("headers", {})}
        r = httpx.request(method, f"{self.base_url}/api/v2{path}", headers=headers, timeout=30, **kwargs)
        if r.status_code not in expect:
            raise ApiError(f"{method} /api/v2{path} -> {r.status_code}: {r.text[:1000]}")
        return r if raw else r.json()

    # -- the DAG and its runs -----------------------------------------------------------------
    def wait_for_dag(self, timeout: float = 120) -> dict[str, Any]:
        def parsed() -> dict[str, Any] | None:
            self.check_alive()
            r = self("GET", f"/dags/{DAG_ID}", expect=(200, 404), raw=True)
            return r.json() if r.status_code == 200 else None

        try:
            return wait_until(parsed, timeout, f"{DAG_ID} to be parsed", interval=2, errors=(httpx.TransportError,))
        except NotReady as exc:
            errors = self("GET", "/importErrors")
            raise ApiError(f"{exc}; import errors: {str(errors)[:2000]}") from exc

    def trigger(self, run_id: str, conf: dict[str, Any]) -> dict[str, Any]:
        run = self("POST", f"/dags/{DAG_ID}/dagRuns", json={"dag_run_id": run_id, "logical_date": None, "conf": conf})
        assert run["conf"] == conf
        print(f"triggered {run_id} through POST /api/v2/dags/{DAG_ID}/dagRuns")
        return run

    def task_instances(self, run_id: str) -> list[dict[str, Any]]:
        return self("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances", params={"limit": 100})["task_instances"]

    def task_log(self, run_id: str, ti: dict[str, Any]) -> str:
        try_number = max(ti["try_number"], 1)
        r = self("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{ti['task_id']}/logs/{try_number}",
                 params={"map_index": ti["map_index"], "full_content": "true"}, headers={"Accept": "application/json"})
        return "\n".join(_log_line(item) for item in r["content"])

    def fail_with_logs(self, run_id: str, tis: list[dict[str, Any]], why: str) -> None:
        bad = [ti for ti in tis if ti["state"] in ("failed", "up_for_retry")]
        parts = [why]
        for ti in bad:
            try:
                parts.append(f"--- log of {label(ti)} (state {ti['state']}, try {ti['try_number']}) ---\n"
                             f"{self.task_log(run_id, ti)}")
            except ApiError as exc:
                parts.append(f"--- log of {label(ti)} unavailable: {exc}")
        if not bad:  # nothing failed: show what the components were doing
            parts.append(self.diagnostics())
        message = "\n".join(parts)
        print(message)
        pytest.fail(message, pytrace=False)

    def wait_for_run(self, run_id: str, timeout: float) -> tuple[str, list[dict[str, Any]]]:
        """Poll until the run ends; a failed or retrying task fails the test at once, with its log."""
        seen: dict[str, Any] = {}

        def ended() -> tuple[str, list[dict[str, Any]]] | None:
            self.check_alive()
            seen["state"] = state = self("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}")["state"]
            seen["tis"] = tis = self.task_instances(run_id)
            if any(ti["state"] in ("failed", "up_for_retry") for ti in tis):
                self.fail_with_logs(run_id, tis, f"run {run_id}: a task failed (run state {state})")
            return (state, tis) if state in ("success", "failed") else None

        try:
            # A request timing out on a busy machine is "not yet"; the run's own timeout still bounds it.
            return wait_until(ended, timeout, f"run {run_id} to end", interval=3, errors=(httpx.TransportError,))
        except NotReady:
            tis = seen.get("tis", [])
            self.fail_with_logs(run_id, tis, f"run {run_id} still {seen.get('state')} after {timeout:.0f}s: "
                                + ", ".join(f"{label(t)}={t['state']}" for t in tis))
            raise


def label(ti: dict[str, Any]) -> str:
    return ti["task_id"] + (f"[{ti['map_index']}]" if ti["map_index"] >= 0 else "")


def print_run(run_id: str, state: str, tis: list[dict[str, Any]]) -> None:
    print(f"\nrun {run_id}: {state}")
    print(f"{'task':22} {'state':9} {'start (UTC)':27} {'end (UTC)':27} worker hostname")
    for ti in sorted(tis, key=lambda t: (t["start_date"] or "", label(t))):
        print(f"{label(ti):22} {ti['state'] or '-':9} {ti['start_date'] or '-':27} {ti['end_date'] or '-':27} "
              f"{ti['hostname'] or '-'}")


def _log_line(item: Any) -> str:
    """One structured log event as text, with the exception chain where the task failed."""
    if not isinstance(item, dict):
        return str(item)
    line = " ".join(str(item[k]) for k in ("timestamp", "level", "event") if item.get(k))
    for exc in item.get("error_detail") or []:
        frames = exc.get("frames") or []
        where = f" (at {frames[-1]['filename']}:{frames[-1]['lineno']})" if frames else ""
        line += f"\n    {exc.get('exc_type')}: {exc.get('exc_value')}{where}"
    return line

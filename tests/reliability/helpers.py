"""Shared helpers for the reliability and security tests: snapshots, fail-fast checks, subprocesses."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def snapshot(root: Path, *subdirs: str) -> dict[str, str]:
    """relative path -> SHA-256 of every file under root/<subdir> (all of root when none given)."""
    out: dict[str, str] = {}
    for sub in subdirs or ("",):
        base = root / sub
        if base.exists():
            for p in sorted(base.rglob("*")):
                if p.is_file() and not p.name.endswith(".lock"):  # lock files are empty and never read
                    out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def permanent_failure(call: Callable[[], Any]) -> BaseException:
    """Run `call` through tasks.common.fail_fast; assert Airflow would fail it at once, without retry.

    Returns the original (cause) exception so the caller can check its message.
    """
    from airflow.sdk.exceptions import AirflowFailException

    from tasks.common import PERMANENT_ERRORS, fail_fast

    try:
        fail_fast(call)()
    except AirflowFailException as exc:
        cause = exc.__cause__
        assert isinstance(cause, PERMANENT_ERRORS), f"cause {cause!r} is not a permanent error type"
        assert str(cause) in str(exc)  # the task log shows the whole message
        return cause
    raise AssertionError("the task did not fail")


def rewrite_idx(path: Path, change: Callable[[bytes], bytes]) -> None:
    """Decompress an IDX .gz, transform the raw bytes, write it back gzipped (still a valid gzip)."""
    path.write_bytes(gzip.compress(change(gzip.decompress(path.read_bytes()))))


def idx_array(path: Path) -> np.ndarray:
    from include.data import read_idx

    return read_idx(path)[0].copy()


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "dags")]), "TF_CPP_MIN_LOG_LEVEL": "2",
                "TL_TF_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def python(code: str, *args: str, env: dict[str, str] | None = None, timeout: float = 600) -> dict[str, Any]:
    """Run a Python snippet in a fresh interpreter; it prints one JSON line prefixed RESULT."""
    res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT,
                         env=env or subprocess_env(), timeout=timeout)
    return parse_result(res.returncode, res.stdout, res.stderr)


def parse_result(rc: int, stdout: str, stderr: str) -> dict[str, Any]:
    lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
    assert rc == 0 and lines, f"rc={rc}\nstdout:\n{stdout[-4000:]}\nstderr:\n{stderr[-4000:]}"
    return json.loads(lines[-1][len("RESULT "):])

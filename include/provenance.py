"""What produced a report: package versions, git commit, machine."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from typing import Any

from include.artifacts import REPO_ROOT

PACKAGES = ("apache-airflow", "tensorflow-cpu", "tensorflow", "keras", "numpy", "scikit-learn", "scipy", "pandas",
            "matplotlib")


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def git_commit() -> str | None:
    try:
        res = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5)
        return res.stdout.strip() or None if res.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def git_dirty() -> bool | None:
    """True when tracked files differ from the commit: the commit alone does not reproduce the code."""
    try:
        res = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                             capture_output=True, text=True, timeout=10)
        return bool(res.stdout.strip()) if res.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def provenance() -> dict[str, Any]:
    return {"packages": package_versions(), "git_commit": git_commit(), "git_dirty": git_dirty(),
            "python": platform.python_version(), "hostname": platform.node(), "platform": platform.platform()}

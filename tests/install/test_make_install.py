"""`make install` on bad ground: no supported Python, an unsupported one, and a pip install that fails.

Each runs the real Makefile and scripts/install.sh, copied into a scratch project so that the
project's own .venv is never touched. A failed install must leave no marker, so the next `make`
installs again instead of believing the environment complete.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _project(tmp_path: Path, requirements: str) -> Path:
    proj = tmp_path / "proj"
    (proj / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "Makefile", proj)
    shutil.copy(ROOT / "scripts" / "install.sh", proj / "scripts")
    (proj / "requirements.txt").write_text(requirements)
    (proj / "constraints.txt").write_text("")
    return proj


def _make(proj: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS", "VIRTUAL_ENV"))}
    return subprocess.run(["make", "--no-print-directory", "install", *args], cwd=proj, env=env, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=600)


@pytest.mark.unit
def test_no_supported_python_is_one_line_saying_what_to_install(tmp_path: Path) -> None:
    proj = _project(tmp_path, "pip\n")
    res = _make(proj, "PYTHON=")  # as when none of python3.11/3.12/3.13 is on PATH
    assert res.returncode != 0 and not (proj / ".venv").exists()
    lines = [line for line in res.stderr.splitlines() if line.startswith("make: ")]
    assert lines[0].startswith("make: no supported Python found: install Python 3.11, 3.12 or 3.13"), res.stderr
    assert "PYTHON=/path/to/python3.x" in lines[0]


@pytest.mark.unit
def test_an_unsupported_python_is_refused_by_version(tmp_path: Path) -> None:
    fake = tmp_path / "python3.10"
    fake.write_text("#!/bin/sh\necho 3.10\n")
    fake.chmod(0o755)
    proj = _project(tmp_path, "pip\n")
    res = _make(proj, f"PYTHON={fake}")
    assert res.returncode != 0 and not (proj / ".venv").exists()
    assert f"make: PYTHON={fake} is Python 3.10; supported are 3.11 3.12 3.13" in res.stderr


@pytest.mark.slow
@pytest.mark.services  # the package registry, for pip
@pytest.mark.registry
def test_a_failed_pip_install_leaves_no_marker_and_the_next_make_installs_again(tmp_path: Path) -> None:
    proj = _project(tmp_path, "tl-no-such-package-for-this-test==1.0\n")
    marker = proj / ".venv" / ".installed"
    for _ in range(2):  # the second make must try again, not trust the half-made .venv
        res = _make(proj)
        assert res.returncode != 0 and not marker.exists(), res.stdout + res.stderr
        assert "tl-no-such-package-for-this-test" in res.stderr
        assert "nothing is marked installed, so the next make retries" in res.stderr
    (proj / "requirements.txt").write_text("pip\n")  # what is wrong is fixed: now it completes
    res = _make(proj)
    assert res.returncode == 0 and marker.exists(), res.stdout + res.stderr
    assert "Nothing to be done" in _make(proj).stdout  # complete now: the next make installs nothing

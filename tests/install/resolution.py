"""Resolve the pinned set for another platform and Python with pip, without installing anything.

pip's --platform/--python-version pick wheels but do not change how environment markers are
evaluated: pip reads every marker against the machine it runs on (pypa/pip#11664). So this module
evaluates the markers of our own files for the target first, and afterwards walks the dependency
metadata pip reports, with the target's markers, to find what pip left out for the host's sake.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Target:
    """A platform users install on: pip's platform tags plus the values its markers see."""

    name: str
    sys_platform: str
    platform_system: str
    machine: str
    tags: tuple[str, ...]

    def env(self, python: str) -> dict[str, str]:
        return {"sys_platform": self.sys_platform, "platform_system": self.platform_system,
                "platform_machine": self.machine, "os_name": "posix", "python_version": python,
                "python_full_version": f"{python}.0", "implementation_name": "cpython",
                "platform_python_implementation": "CPython", "platform_release": "", "platform_version": "",
                "implementation_version": f"{python}.0", "extra": ""}


def _manylinux(arch: str, glibc_floor: int = 28) -> tuple[str, ...]:
    # Explicit --platform values are taken literally: list every tag a glibc-2.28 system accepts.
    return (*(f"manylinux_2_{m}_{arch}" for m in range(glibc_floor, 4, -1)),
            f"manylinux2014_{arch}", f"manylinux2010_{arch}", f"manylinux1_{arch}")


def _macos_arm64(floor: int = 12) -> tuple[str, ...]:
    return (*(f"macosx_{v}_0_{a}" for v in range(floor, 10, -1) for a in ("arm64", "universal2")),
            *(f"macosx_10_{m}_universal2" for m in range(16, 8, -1)))


# Floors: glibc 2.28 (Debian 10, Ubuntu 20.04 and later) and macOS 12, TensorFlow 2.21's own.
TARGETS = (
    Target("Linux x86_64", "linux", "Linux", "x86_64", _manylinux("x86_64")),
    Target("Linux aarch64", "linux", "Linux", "aarch64", _manylinux("aarch64")),
    Target("macOS arm64", "darwin", "Darwin", "arm64", _macos_arm64()),
)
PYTHONS = ("3.11", "3.12", "3.13")


def pins_for(path: Path, env: dict[str, str]) -> list[str]:
    """The requirement lines of a requirements/constraints file (following -r) whose markers hold for env."""
    out: list[str] = []
    for raw in path.read_text().splitlines():
        line = raw.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-r "):
            out += pins_for(path.parent / line[3:].strip(), env)
            continue
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate(env):
            req.marker = None
            out.append(str(req))
    return out


class ResolutionError(AssertionError):
    pass


def _missing_wheel(stderr: str) -> str | None:
    m = re.search(r"No matching distribution found for (\S+)", stderr)
    return m.group(1) if m else None


def resolve(target: Target, python: str, requirements: Path, constraints: Path,
            extra: tuple[str, ...] = ()) -> dict[str, dict]:
    """pip install --dry-run for the target; returns {name: report item}; raises naming what is missing."""
    env = target.env(python)
    with tempfile.TemporaryDirectory(prefix="tl-resolve-") as tmp:
        req, con, report = Path(tmp, "req.txt"), Path(tmp, "con.txt"), Path(tmp, "report.json")
        req.write_text("\n".join([*pins_for(requirements, env), *extra]) + "\n")
        con.write_text("\n".join(pins_for(constraints, env)) + "\n")
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--only-binary=:all:", *(f"--platform={t}" for t in target.tags), f"--python-version={python}",
               "--implementation=cp", "--target", str(Path(tmp, "target")), "--report", str(report),
               "-r", str(req), "-c", str(con)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            what = _missing_wheel(res.stderr)
            head = (f"no wheel of {what} for {target.name}, Python {python}" if what
                    else f"the pinned set does not resolve for {target.name}, Python {python}")
            raise ResolutionError(f"{head}\n$ {' '.join(cmd[:4])} ...\n{res.stderr[-3000:]}")
        return {canonicalize_name(i["metadata"]["name"]): i for i in json.loads(report.read_text())["install"]}


def skipped_for_host(target: Target, python: str, resolved: dict[str, dict]) -> dict[str, str]:
    """Dependencies the target needs (its markers) that pip did not resolve: {name: needed by}."""
    missing: dict[str, str] = {}
    for name, item in resolved.items():
        for extra in ("", *(item.get("requested_extras") or ())):
            env = {**target.env(python), "extra": extra}
            for spec in item["metadata"].get("requires_dist", []) or ():
                dep = Requirement(spec)
                if (dep.marker is None or dep.marker.evaluate(env)) and canonicalize_name(dep.name) not in resolved:
                    missing.setdefault(canonicalize_name(dep.name), name)
    return missing


def check(target: Target, python: str, requirements: Path = ROOT / "requirements-test.txt",
          constraints: Path = ROOT / "constraints.txt") -> dict[str, dict]:
    """Resolve, add back what pip skipped for the host's markers, and require a pin for everything."""
    resolved = resolve(target, python, requirements, constraints)
    for _ in range(3):
        missing = skipped_for_host(target, python, resolved)
        if not missing:
            break
        resolved = resolve(target, python, requirements, constraints, extra=tuple(missing))
    pinned = {canonicalize_name(Requirement(p).name) for p in pins_for(constraints, target.env(python))}
    unpinned = sorted(set(resolved) - pinned)
    if unpinned:
        raise ResolutionError(f"{target.name}, Python {python}: not pinned in constraints.txt: "
                              + ", ".join(f"{n}=={resolved[n]['metadata']['version']}" for n in unpinned))
    return resolved


if __name__ == "__main__":  # python -m tests.install.resolution: the whole matrix, one line each
    for t in TARGETS:
        for py in PYTHONS:
            try:
                print(f"{t.name:14} Python {py}: {len(check(t, py))} packages resolve")
            except ResolutionError as exc:
                print(f"{t.name:14} Python {py}: FAILED {str(exc).splitlines()[0]}")

"""`make test-arm64` (scripts/test_arm64.sh) on bad ground: a missing tool, a refused binfmt_misc, a
damaged cached root, and Ctrl-C while the root is being built.

The script runs for real; what a test cannot have on demand is replaced at the edge: PATH without the
tool, a binfmt_misc folder of the test's own (TL_ARM64_BINFMT_DIR), a `mount` that is refused, and a
`debootstrap` that fails or hangs. Every run uses a cache in tmp_path, never the real one.
"""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "test_arm64.sh"

pytestmark = [
    pytest.mark.unit,
    pytest.mark.skipif(platform.system() != "Linux", reason="scripts/test_arm64.sh is for Linux hosts"),
]
emulating = pytest.mark.skipif(platform.machine() == "aarch64",
                               reason="an aarch64 host runs the root natively: no emulator is needed")


def _bin(tmp_path: Path, without: tuple[str, ...] = (), fakes: dict[str, str] | None = None) -> Path:
    """A PATH folder with the host's tools minus `without`, plus fake scripts named in `fakes`."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for d in ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"):
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            link = bindir / name
            if name not in without and not link.exists() and not link.is_symlink():
                link.symlink_to(os.path.join(d, name))
    for name, body in (fakes or {}).items():
        link = bindir / name
        if link.is_symlink():
            link.unlink()
        link.write_text("#!/bin/bash\n" + body)
        link.chmod(0o755)
    return bindir


def _binfmt(tmp_path: Path, entry: bool = True) -> Path:
    """A binfmt_misc folder as the kernel shows it with qemu-user-static's aarch64 entry registered."""
    d = tmp_path / "binfmt"
    d.mkdir()
    (d / "status").write_text("enabled\n")
    if entry:
        (d / "qemu-aarch64").write_text(
            "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: PF\noffset 0\n")
    return d


def _env(tmp_path: Path, bindir: Path, binfmt: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS"))}
    env.update(PATH=str(bindir), TL_ARM64_BINFMT_DIR=str(binfmt), TL_ARM64_CACHE=str(tmp_path / "cache"),
               TL_ARM64_MIRROR="http://127.0.0.1:9/debian")
    return env


def _run(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120)


def _one_line(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)
    assert res.stdout == "" and "Traceback" not in res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("test-arm64: "), res.stderr
    return lines[0]


def _mounts_under(path: Path) -> list[str]:
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(path) in line]


def _processes_under(path: Path) -> list[str]:
    """Processes whose root or working folder is in `path`, or whose command line names it. The command
    line is what still shows them when this runs emulated (make test-arm64): through qemu-user, the
    root and cwd links of the script's namespaced processes did not point into `path`, while their
    command lines (qemu's interpreter, then the program's argv) still hold the build's target path."""
    found = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            for link in ("root", "cwd"):
                try:
                    target = os.readlink(p / link)
                except OSError:
                    continue
                if target == str(path) or target.startswith(f"{path}/"):
                    found.append(f"{p.name} {link} {target}")
            try:
                argv = (p / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(str(path).encode() in arg for arg in argv):
                found.append(f"{p.name} cmdline {b' '.join(argv).decode(errors='replace')}")
    return found


needs_root = pytest.mark.skipif(os.geteuid() != 0 and os.environ.get("CI") != "true",
                                reason="the script builds its root as root (unshare, debootstrap, chroot)")


def test_missing_debootstrap_is_one_line_naming_the_package(tmp_path: Path) -> None:
    res = _run(_env(tmp_path, _bin(tmp_path, without=("debootstrap",)), _binfmt(tmp_path)))
    line = _one_line(res)
    assert "missing debootstrap" in line and "apt-get install debootstrap" in line
    assert not (tmp_path / "cache").exists()


@emulating
def test_missing_qemu_is_one_line_naming_the_packages(tmp_path: Path) -> None:
    bindir = _bin(tmp_path, without=("qemu-aarch64-static", "qemu-aarch64"))
    res = _run(_env(tmp_path, bindir, _binfmt(tmp_path, entry=False)))
    line = _one_line(res)
    assert "missing qemu-aarch64-static" in line and "apt-get install qemu-user-static binfmt-support" in line


@emulating
def test_missing_binfmt_support_is_one_line_naming_the_package(tmp_path: Path) -> None:
    bindir = _bin(tmp_path, without=("update-binfmts",), fakes={"qemu-aarch64-static": "exit 0\n"})
    res = _run(_env(tmp_path, bindir, _binfmt(tmp_path, entry=False)))
    line = _one_line(res)
    assert "missing update-binfmts" in line and "apt-get install binfmt-support" in line


@emulating
def test_a_refused_binfmt_misc_mount_is_one_line(tmp_path: Path) -> None:
    unmounted = tmp_path / "binfmt"
    unmounted.mkdir()  # no status file: binfmt_misc is not mounted there
    bindir = _bin(tmp_path, fakes={
        "mount": "echo 'mount: permission denied' >&2; exit 32\n",
        "qemu-aarch64-static": "exit 0\n", "update-binfmts": "exit 0\n"})
    line = _one_line(_run(_env(tmp_path, bindir, unmounted)))
    assert "binfmt_misc is not mounted" in line and "mounting it was refused" in line
    assert "mount -t binfmt_misc binfmt_misc" in line and not _mounts_under(unmounted)


@emulating
def test_a_refused_qemu_registration_is_one_line(tmp_path: Path) -> None:
    bindir = _bin(tmp_path, fakes={"qemu-aarch64-static": "exit 0\n",
                                   "update-binfmts": "echo 'update-binfmts: permission denied' >&2; exit 2\n"})
    line = _one_line(_run(_env(tmp_path, bindir, _binfmt(tmp_path, entry=False))))
    assert "registering qemu-aarch64" in line and "was refused" in line and "update-binfmts --enable" in line


@needs_root
def test_a_damaged_cached_root_is_rebuilt_and_a_failed_build_caches_nothing(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    damaged = cache / "bookworm-arm64"
    (damaged / "usr" / "bin").mkdir(parents=True)
    (damaged / ".tl-arm64-complete").touch()  # complete once, then python3 went missing
    fake = ('t=${@: -2:1}; mkdir -p "$t/usr/bin"; touch "$t/usr/bin/half-written"\n'  # TARGET, before MIRROR
            'echo "E: Failed getting release file"; exit 1\n')
    res = _run(_env(tmp_path, _bin(tmp_path, fakes={"debootstrap": fake}), _binfmt(tmp_path)))
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    assert f"the cached root {damaged} is damaged (it has no python3): rebuilding it" in out
    assert "E: Failed getting release file" in out  # the log's tail says why
    assert out.rstrip().endswith(f"failed (log: {cache}/debootstrap.log); nothing was cached"), out
    assert "Traceback" not in out
    # Neither the damaged root nor the half-written new one is left to be taken for a good one.
    assert sorted(p.name for p in cache.iterdir()) == [".lock", "debootstrap.log", "last-run.log"]


@needs_root
def test_ctrl_c_while_building_leaves_no_mount_process_or_half_built_root(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    started = tmp_path / "started"
    # A debootstrap that mounts something in its target, as the real one does, and then hangs.
    fake = (f't=${{@: -2:1}}; mkdir -p "$t/proc" && mount -t tmpfs tmpfs "$t/proc" && cd "$t" && touch {started}\n'
            'sleep 300 & wait\n')
    env = _env(tmp_path, _bin(tmp_path, fakes={"debootstrap": fake}), _binfmt(tmp_path))
    proc = subprocess.Popen(["bash", str(SCRIPT)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not started.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.poll() else "slow"
            time.sleep(0.1)
        assert _processes_under(cache)  # the build is running in the cache
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends: the whole foreground process group
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, out
    assert out.rstrip().endswith(f"test-arm64: interrupted; no mount, process or half-built root is left in {cache}")
    assert _mounts_under(cache) == [] and _processes_under(cache) == []
    assert not any(p.name.startswith("building.") for p in cache.iterdir()) and not (cache / "bookworm-arm64").exists()

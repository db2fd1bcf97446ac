"""deploy/processes.py on real processes: start, wait until ready, stop a tree, free port."""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
from pathlib import Path

import psutil
import pytest

from deploy.processes import NotReady, ProcessError, free_port, port_open, start, stop_tree, tree, wait_until

pytestmark = pytest.mark.unit

# A shell that starts a child, and an orphan that outlives its parent (it keeps the session).
FAMILY = "sleep 300 & (sleep 300 &) ; echo started; wait"


def _pids(procs: list[psutil.Process]) -> set[int]:
    return {p.pid for p in procs}


def test_stop_tree_stops_children_and_orphans_of_the_session(tmp_path: Path) -> None:
    family = start("family", ["bash", "-c", FAMILY], tmp_path / "family.log")
    wait_until(lambda: "started" in family.tail(), 30, "the family to start", interval=0.05)
    # The subshell that detaches the orphan may still be exiting under load: wait for the three.
    def three() -> list[psutil.Process] | None:
        members = tree(family.pid)
        return members if len(members) == 3 else None

    members = wait_until(three, 30, "bash, its child and the orphan", interval=0.05)
    orphans = [p for p in members if p.ppid() != family.pid and p.pid != family.pid]
    assert len(members) == 3 and len(orphans) == 1, [p.cmdline() for p in members]  # bash, its child, the orphan
    assert family.stop(timeout=30) == []  # SIGTERM was enough
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                   for p in _pids(members))
    assert family.popen.returncode == -signal.SIGTERM  # not reaped behind the caller's back


def test_a_process_ignoring_sigterm_is_killed_and_reported(tmp_path: Path) -> None:
    stubborn = start("stubborn", [sys.executable, "-c", "import signal, time  # stubborn\n"
                                  "signal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\n"
                                  "time.sleep(300)"], tmp_path / "stubborn.log")
    wait_until(lambda: "ready" in stubborn.tail(), 30, "the stubborn process to start", interval=0.05)
    forced = stubborn.stop(timeout=0.5)
    assert len(forced) == 1 and forced[0].startswith(f"pid {stubborn.pid}: ") and "stubborn" in forced[0]
    assert stubborn.popen.returncode == -signal.SIGKILL


def test_after_the_leader_was_reaped_only_its_session_is_stopped(tmp_path: Path) -> None:
    # The leader exits at once, leaving an orphan; once reaped, its pid could be a stranger's.
    leader = start("leader", ["bash", "-c", "(sleep 300 &); echo started"], tmp_path / "leader.log")
    assert leader.popen.wait(timeout=30) == 0

    def only_the_orphan() -> psutil.Process | None:
        # Under load the subshell may still be exiting, or sleep not yet exec'd: wait for one `sleep 300`.
        members = tree(leader.pid, session_only=True)
        with contextlib.suppress(psutil.Error):
            if len(members) == 1 and members[0].cmdline() == ["sleep", "300"]:
                return members[0]
        return None

    orphan = wait_until(only_the_orphan, 30, "the orphan to be alone in the session", interval=0.05)
    assert leader.stop(timeout=30) == []
    assert not orphan.is_running() or orphan.status() == psutil.STATUS_ZOMBIE
    assert stop_tree(leader.pid, timeout=1, session_only=True) == []  # nothing left: a no-op


def test_session_only_leaves_a_live_process_with_that_pid_alone(tmp_path: Path) -> None:
    # Stands for a stranger that got the reaped leader's pid: it, and the session it leads, are not ours.
    stranger = start("stranger", ["sleep", "300"], tmp_path / "stranger.log")
    try:
        assert stop_tree(stranger.pid, timeout=1, session_only=True) == []
        assert stranger.alive()
    finally:
        stranger.stop(timeout=10)


def test_wait_until_returns_the_ready_value_and_tolerates_listed_errors() -> None:
    calls = iter([OSError("refused"), None, {"status": "healthy"}])

    def probe():
        value = next(calls)
        if isinstance(value, BaseException):
            raise value
        return value

    assert wait_until(probe, 30, "the probe", interval=0) == {"status": "healthy"}


def test_wait_until_says_what_it_waited_for_with_the_log_tail(tmp_path: Path) -> None:
    quiet = start("quiet", ["bash", "-c", "echo 'line one'; echo 'the last line'; sleep 300"], tmp_path / "q.log")
    try:
        wait_until(lambda: "last" in quiet.tail(), 30, "output", interval=0.05)
        expected = r"(?s)timed out after 0s waiting for port 1 to open \(last error: OSError.*the last line"
        with pytest.raises(NotReady, match=expected):
            wait_until(lambda: _raise(OSError("refused")), 0, "port 1 to open", watch=[quiet], interval=0)
    finally:
        quiet.stop(timeout=10)


def test_wait_until_fails_at_once_when_the_process_exits(tmp_path: Path) -> None:
    dying = start("dying", ["bash", "-c", "echo 'cannot bind: address in use' >&2; exit 3"], tmp_path / "d.log")
    dying.popen.wait()
    with pytest.raises(ProcessError, match=r"(?s)dying \(pid \d+\) exited with 3; .*cannot bind: address in use"):
        wait_until(lambda: False, 300, "the server", watch=[dying])


def test_free_port_can_be_bound_and_port_open_sees_a_listener() -> None:
    port = free_port()
    assert not port_open("127.0.0.1", port)
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        assert port_open("127.0.0.1", port)


def _raise(exc: BaseException):
    raise exc

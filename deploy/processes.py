"""Child processes, on psutil: start one in a session of its own, wait until it is ready, stop it and
everything it started, and pick a free port.

Used by the local stack, the `make airflow` wrapper, the benchmark and the deploy tests, so that every
server they start is found, waited for and stopped the same way.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psutil

T = TypeVar("T")


class ProcessError(RuntimeError):
    """A started process exited early or never became ready; the message carries its log's tail."""


class NotReady(ProcessError, TimeoutError):
    """`wait_until` ran out of time."""


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity mask (containers, taskset), else the count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def local_workers() -> int:
    """LocalExecutor workers for `make run` and `make airflow`: the usable cores, at least 2 (pretrain
    and scratch side by side). Each training task already uses every core."""
    return max(2, usable_cores())


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass
class Started:
    """A process started by `start`, with the log its output goes to (None: inherited)."""

    name: str
    popen: subprocess.Popen
    log: Path | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 40) -> str:
        if self.log is None:
            return "(output not captured)"
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def check_alive(self) -> None:
        if not self.alive():
            raise ProcessError(f"{self.name} (pid {self.pid}) exited with {self.popen.returncode}; "
                               f"last lines of {self.log}:\n{self.tail()}")

    def stop(self, timeout: float = 20.0, sig: int | None = signal.SIGTERM, *, group_only: bool = False) -> list[str]:
        """Stop the process and everything it started (see `stop_tree`); reap it."""
        # Once reaped, its pid may belong to a stranger; its session id cannot be reused while the
        # session has members, so only those are looked for.
        forced = stop_tree(self.pid, timeout, sig, group_only=group_only, session_only=self.popen.poll() is not None)
        self.popen.wait()
        return forced


def start(name: str, cmd: Sequence[str], log: Path | None = None, **popen: Any) -> Started:
    """Start `cmd` in a session of its own (so a terminal's Ctrl-C reaches only what we forward, and
    `stop_tree` finds whatever it leaves behind), output appended to `log`, stdin closed."""
    kwargs: dict[str, Any] = {"stdin": subprocess.DEVNULL, "start_new_session": True, **popen}
    if log is None:
        return Started(name, subprocess.Popen(list(cmd), **kwargs))
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return Started(name, subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT, **kwargs), log)


def wait_until(ready: Callable[[], T], timeout: float, what: str, *, watch: Iterable[Started] = (),
               interval: float = 1.0, errors: tuple[type[BaseException], ...] = (OSError,)) -> T:
    """Call `ready()` every `interval` seconds until it returns something truthy, and return that.

    An exception in `errors` counts as "not yet". A watched process that exits, or the time running
    out, raises with the tail of each watched process's log, so the failure says what went wrong.
    """
    watched = list(watch)
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        for proc in watched:
            proc.check_alive()
        try:
            if value := ready():
                return value
        except errors as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            tails = "".join(f"\n--- {p.name}: last lines of {p.log} ---\n{p.tail(15)}" for p in watched)
            raise NotReady(f"timed out after {timeout:.0f}s waiting for {what}{detail}{tails}")
        time.sleep(interval)


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _session_members(sessions: set[int]) -> list[psutil.Process]:
    members: list[psutil.Process] = []
    if not sessions:
        return members
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) in sessions:
                members.append(proc)
        except OSError:
            continue
    return members


def tree(pid: int, sessions: set[int] | None = None, *, session_only: bool = False) -> list[psutil.Process]:
    """`pid`, its descendants, and every process in a session one of them leads (a child that was
    orphaned keeps its session). `sessions` collects those session ids across calls. With
    `session_only`, only the members of the session `pid` led (for a `pid` already reaped)."""
    sessions = set() if sessions is None else sessions
    found: dict[int, psutil.Process] = {}
    if session_only:
        # The pid is free for reuse only once the session has no member left: a live process with
        # that pid means the session is gone and the pid (and any session it leads) is a stranger's.
        if psutil.pid_exists(pid):
            sessions.discard(pid)
            return []
        sessions.add(pid)
    else:
        try:
            root = psutil.Process(pid)
            for proc in [root, *root.children(recursive=True)]:
                found[proc.pid] = proc
        except psutil.NoSuchProcess:
            pass
    for proc in list(found.values()):
        try:
            if os.getsid(proc.pid) == proc.pid:
                sessions.add(proc.pid)
        except OSError:
            continue
    for proc in _session_members(sessions):
        found.setdefault(proc.pid, proc)
    return [p for p in found.values() if _running(p)]


def stop_tree(pid: int, timeout: float = 20.0, sig: int | None = signal.SIGTERM, *,
              group_only: bool = False, session_only: bool = False) -> list[str]:
    """Stop `pid` and everything it started: send `sig` (to every process of the tree, or with
    `group_only` to the root's process group, as a terminal's Ctrl-C does; None: the caller has
    already asked it to stop), wait up to `timeout` seconds for the tree to end, then SIGKILL what is
    left, including processes started meanwhile. Returns a line per process that had to be killed.
    `session_only`: see `tree`.

    Our own children are not reaped here, so the caller's `Popen` still gets their exit code.
    """
    sessions: set[int] = set()
    procs = tree(pid, sessions, session_only=session_only)
    if sig is not None and group_only:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)
    elif sig is not None:
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(sig)
    known = {p.pid: p for p in procs}

    def still_running() -> list[psutil.Process]:
        for proc in tree(pid, sessions, session_only=session_only):
            known.setdefault(proc.pid, proc)
        return [p for p in known.values() if _running(p)]

    try:
        wait_until(lambda: not still_running(), timeout, f"process tree of pid {pid} to end", interval=0.2)
        return []
    except NotReady:
        pass
    forced = []
    for proc in still_running():
        try:
            forced.append(f"pid {proc.pid}: {' '.join(proc.cmdline())[:100]}")
            proc.kill()
        except psutil.Error:
            continue
    wait_until(lambda: not still_running(), 10, f"process tree of pid {pid} to end after SIGKILL", interval=0.2)
    return forced

"""deploy/executors.py: when the LocalExecutor's workers preload, and what a failed preload does."""

from __future__ import annotations

import pytest

from deploy.executors import preload, preload_enabled

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("setting", "platform", "expected"), [
    ("auto", "linux", True),
    ("auto", "darwin", False),  # macOS: fork after some frameworks load aborts the child
    (" AUTO ", "linux", True),
    ("1", "darwin", True),
    ("on", "darwin", True),
    ("0", "linux", False),
    ("false", "linux", False),
])
def test_preload_setting(setting: str, platform: str, expected: bool) -> None:
    assert preload_enabled(setting, platform) is expected


def test_a_bad_preload_setting_says_what_to_use() -> None:
    with pytest.raises(ValueError, match=r"TL_WORKER_PRELOAD='sometimes': use auto, 1 or 0"):
        preload_enabled("sometimes", "linux")


def test_preload_times_what_imports_and_reports_what_does_not() -> None:
    took = preload(("json", "tl_no_such_module_anywhere"))
    assert isinstance(took["json"], float) and took["json"] >= 0
    assert took["tl_no_such_module_anywhere"] == \
        "ModuleNotFoundError: No module named 'tl_no_such_module_anywhere'"


@pytest.mark.parametrize(("setting", "target"), [("1", "_run_preloaded_worker"), ("0", "_run_worker")])
def test_the_worker_process_runs_the_preloading_loop_only_when_on(
        setting: str, target: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import multiprocessing

    from deploy.executors import PreloadingLocalExecutor

    started = []

    class Recorded:  # stands in for multiprocessing.Process: records what the worker would run
        def __init__(self, target, kwargs):
            self.target, self.kwargs, self.pid = target, kwargs, 1000 + len(started)

        def start(self):
            started.append(self)

    monkeypatch.setenv("TL_WORKER_PRELOAD", setting)
    monkeypatch.setattr(multiprocessing, "Process", Recorded)
    executor = PreloadingLocalExecutor(parallelism=2)
    executor.start()
    assert [p.target.__name__ for p in started] == [target, target]
    assert set(started[0].kwargs) == {"logger_name", "input", "output", "unread_messages", "team_conf"}
    assert set(executor.workers) == {1000, 1001}

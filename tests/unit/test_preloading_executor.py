"""deploy/preloading_executor.py: when the LocalExecutor's workers preload, and what a failed preload does."""

from __future__ import annotations

import pytest

from deploy.preloading_executor import preload, preload_enabled

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


@pytest.mark.parametrize(("setting", "parallelism", "target"), [
    ("1", 2, "_run_preloaded_worker"),
    ("0", 2, "_run_worker"),
    ("1", 64, "_run_worker"),  # Airflow's default 32 and up: 64 imports of TensorFlow, refused
])
def test_the_worker_process_runs_the_preloading_loop_only_when_on(
        setting: str, parallelism: int, target: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import multiprocessing

    from deploy.preloading_executor import LocalExecutor
    from deploy.processes import local_workers

    started = []

    class Recorded:  # stands in for multiprocessing.Process: records what the worker would run
        def __init__(self, target, kwargs):
            self.target, self.kwargs, self.pid = target, kwargs, 1000 + len(started)

        def start(self):
            started.append(self)

    monkeypatch.setenv("TL_WORKER_PRELOAD", setting)
    monkeypatch.setattr(multiprocessing, "Process", Recorded)
    executor = LocalExecutor(parallelism=parallelism)
    executor.start()
    assert {p.target.__name__ for p in started} == {target} and len(started) == parallelism
    assert set(started[0].kwargs) == {"logger_name", "input", "output", "unread_messages", "team_conf"}
    assert set(executor.workers) == {1000 + i for i in range(parallelism)}
    logged = capsys.readouterr().out  # Airflow's structlog writes to stdout
    refused = "Not preloading TensorFlow in the LocalExecutor's workers: [core] parallelism is 64"
    assert (refused in logged) is (parallelism == 64)
    if parallelism == 64:
        assert f"Set AIRFLOW__CORE__PARALLELISM={local_workers()}" in logged

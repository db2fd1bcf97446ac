"""Finding Chrome/Chromium: $TL_BROWSER, PATH, then the usual places (macOS app bundles included);
without one a browser test skips with how to install one, and fails under CI=true."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests import browser


def _executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def no_browser(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.delenv("TL_BROWSER", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.setattr(browser, "PLACES", ())
    return tmp_path


def test_a_macos_app_bundle_is_found_when_nothing_is_on_path(no_browser: Path, monkeypatch) -> None:
    app = _executable(no_browser / "Applications/Google Chrome.app/Contents/MacOS/Google Chrome")
    monkeypatch.setattr(browser, "PLACES", (str(no_browser / "Applications/Chromium.app/Contents/MacOS/Chromium"),
                                            str(app)))
    assert browser.find_chromium() == str(app)


def test_path_comes_before_the_usual_places_and_tl_browser_before_both(no_browser: Path, monkeypatch) -> None:
    on_path = _executable(no_browser / "empty-bin" / "google-chrome-stable")
    monkeypatch.setattr(browser, "PLACES", (str(_executable(no_browser / "opt/chrome")),))
    assert browser.find_chromium() == str(on_path)
    explicit = _executable(no_browser / "my/chrome")
    monkeypatch.setenv("TL_BROWSER", str(explicit))
    assert browser.find_chromium() == str(explicit)
    monkeypatch.setenv("TL_BROWSER", str(no_browser / "not-there"))  # a wrong explicit path is not papered over
    assert browser.find_chromium() is None


def test_no_browser_skips_with_how_to_install(no_browser: Path, monkeypatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"apt-get install chromium.*brew install --cask google-chrome"):
        browser.require_chromium()


def test_no_browser_under_ci_is_a_failure(no_browser: Path, monkeypatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true and no Chrome or Chromium found"):
        browser.require_chromium()


def test_which_exits_1_with_the_install_line(no_browser: Path) -> None:
    import subprocess
    import sys

    env = {**os.environ, "PATH": str(no_browser / "empty-bin"), "TL_BROWSER": str(no_browser / "none")}
    res = subprocess.run([sys.executable, "-m", "tests.browser", "--which"], capture_output=True, text=True, env=env,
                         cwd=Path(__file__).resolve().parents[2])
    assert res.returncode == 1 and res.stdout.strip() == browser.HOW_TO_INSTALL

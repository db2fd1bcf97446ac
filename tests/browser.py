"""Headless Chromium driven over the DevTools protocol (pipe transport: no port, no extra package).

`Browser` is enough for UI tests: navigate, run JavaScript, wait for a condition, click, take
screenshots; it keeps every protocol event it sees. `render()` loads one local page with DNS mapped
to nothing (--host-resolver-rules), so a page that tried to reach the network could not, and reports
every request it attempted, what it showed and whether its images decoded.

    python -m tests.browser report.html screenshot.png   # prints the render() result as JSON
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from deploy.processes import NotReady, stop_tree, wait_until

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--disable-default-apps", "--no-default-browser-check", "--hide-scrollbars"]


# Where Chrome or Chromium usually lives when it is not on PATH: Linux packages and snaps, macOS app
# bundles (system-wide and per user). TL_BROWSER names one explicitly.
NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
PLACES = ("/usr/bin/chromium", "/usr/lib/chromium/chromium", "/snap/bin/chromium", "/opt/google/chrome/chrome",
          "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome",
          "/Applications/Chromium.app/Contents/MacOS/Chromium",
          "~/Applications/Google Chrome.app/Contents/MacOS/Google Chrome",
          "~/Applications/Chromium.app/Contents/MacOS/Chromium")
HOW_TO_INSTALL = ("no Chrome or Chromium found: install one (Debian/Ubuntu: apt-get install chromium; "
                  "macOS: brew install --cask google-chrome) or set TL_BROWSER=/path/to/chrome")


def find_chromium() -> str | None:
    """Path of a Chrome/Chromium executable: $TL_BROWSER, then PATH, then the usual places; None if none."""
    if explicit := os.environ.get("TL_BROWSER"):
        return explicit if os.access(explicit, os.X_OK) else None
    for name in NAMES:
        if path := shutil.which(name):
            return path
    for place in PLACES:
        path = os.path.expanduser(place)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def require_chromium() -> str:
    """The browser for a test; without one the test skips with how to install one (fails under CI=true)."""
    import pytest

    if path := find_chromium():
        return path
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {HOW_TO_INSTALL}", pytrace=False)
    pytest.skip(HOW_TO_INSTALL)


class Browser:
    def __init__(self, width: int = 1440, height: int = 900, extra_flags: tuple[str, ...] = ()) -> None:
        self.profile = tempfile.mkdtemp(prefix="tl-deploy-chromium-")
        cmd_r, cmd_w = os.pipe()
        res_r, res_w = os.pipe()

        def child_fds() -> None:  # Chromium reads commands on fd 3 and answers on fd 4
            a, b = os.dup(cmd_r), os.dup(res_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [require_chromium(), *FLAGS, *extra_flags, f"--user-data-dir={self.profile}", "--remote-debugging-pipe",
             f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=child_fds, pass_fds=(3, 4))
        os.close(cmd_r)
        os.close(res_w)
        self.w, self.r, self.buf, self.next_id = cmd_w, res_r, b"", 0
        self.events: list[dict[str, Any]] = []
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=None)
        self.session = self.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True},
                                 session=None)["sessionId"]
        for domain in ("Page", "Runtime", "Network", "Log"):
            self.send(f"{domain}.enable")
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("Chromium did not answer over the DevTools pipe in time")
            if select.select([self.r], [], [], left)[0]:
                chunk = os.read(self.r, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"Chromium exited (code {self.proc.poll()})")
                self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, params: dict | None = None, session: str | bool | None = True,
             timeout: float = 60) -> dict[str, Any]:
        self.next_id += 1
        msg: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session is True:
            msg["sessionId"] = self.session
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"DevTools {method} failed: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, timeout: float = 60) -> dict[str, Any]:
        for ev in self.events:
            if ev.get("method") == method:
                return ev
        deadline = time.monotonic() + timeout
        while True:
            ev = self._read(deadline)
            self.events.append(ev)
            if ev.get("method") == method:
                return ev

    def goto(self, url: str) -> None:
        self.send("Page.navigate", {"url": url})

    def js(self, expression: str, timeout: float = 30) -> Any:
        res = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True},
                        timeout=timeout)
        if "exceptionDetails" in res:
            raise RuntimeError(f"JavaScript failed: {res['exceptionDetails'].get('exception', {}).get('description')}")
        return res.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 60, what: str = "") -> Any:
        """Poll a JavaScript expression until it is truthy; on timeout say what the page showed."""
        # A DOM node (also one from an iframe, another realm) counts as found.
        probe = f"(() => {{ const v = ({expression}); return v && typeof v.nodeType === 'number' ? true : v; }})()"
        try:
            return wait_until(lambda: self.js(probe), timeout, what or expression, interval=0.5, errors=(RuntimeError,))
        except NotReady:
            pass
        text = self.js("(document.body ? document.body.innerText.slice(0, 1500) : '') + [...document.querySelectorAll("
                       "'iframe')].map(f => `\\n[iframe ${f.src}]\\n` + (f.contentDocument && f.contentDocument.body ? "
                       "f.contentDocument.body.innerText.slice(0, 1500) : '(not loaded)')).join('')")
        raise TimeoutError(f"waited {timeout:.0f}s for {what or expression}; url {self.js('location.href')}; "
                           f"page text:\n{text}")

    def click(self, element_js: str) -> None:
        """A real mouse click (press and release) at the centre of the element `element_js` evaluates to."""
        box = self.js(f"(() => {{ const e = ({element_js}); e.scrollIntoView({{block: 'center'}}); "
                      "const r = e.getBoundingClientRect(); "
                      "let x = r.x + r.width / 2, y = r.y + r.height / 2, w = window; "
                      "while (w !== w.top) { const f = w.frameElement.getBoundingClientRect(); x += f.x; y += f.y; "
                      "w = w.parent; } return [x, y]; })()")
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": box[0], "y": box[1], "button": "left",
                                                   "clickCount": 0 if kind == "mouseMoved" else 1})

    def type_into(self, element_js: str, text: str, timeout: float = 30) -> None:
        """Type `text` into a form field as a user would, once the field has focus, and wait until the field
        holds exactly it. A click computed while a panel was still opening can land on a neighbouring field
        (the typed text then went there, seen once in CI), so focus is checked, not assumed."""
        def focused() -> bool:
            self.js(f"({element_js}).scrollIntoView({{block: 'center'}}); ({element_js}).focus()")
            return bool(self.js(f"document.activeElement === ({element_js})"))

        wait_until(focused, timeout, f"focus on {element_js}", interval=0.5, errors=(RuntimeError,))
        self.send("Input.insertText", {"text": text})
        self.wait_for(f"({element_js}).value === {json.dumps(text)}", timeout=timeout,
                      what=f"the field to hold {text!r} (it holds {self.js(f'({element_js}).value')!r})")

    def screenshot(self, path: Path, full_page: bool = False) -> Path:
        shot = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": full_page})
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def close(self) -> None:
        with contextlib.suppress(TimeoutError, RuntimeError, OSError):
            self.send("Browser.close", session=None, timeout=10)
        if self.proc.poll() is None:  # not reaped yet, so its pid is still Chromium's
            stop_tree(self.proc.pid, timeout=15, sig=None)  # asked to close above; its helpers go with it
        self.proc.wait()
        for fd in (self.w, self.r):
            os.close(fd)
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# What a report page shows about itself, read by DevTools (the page's CSP forbids its own scripts).
PROBE = """({
  title: document.title,
  verdict: (document.getElementById('verdict') || {}).innerText || null,
  text: document.body.innerText,
  images: Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete,
      width: i.naturalWidth, height: i.naturalHeight, scheme: i.currentSrc.split(':')[0]})),
  height: document.documentElement.scrollHeight
})"""


def render(page: Path, screenshot: Path, width: int = 1200, timeout: float = 90) -> dict[str, Any]:
    """Load a local page offline, save a full-page screenshot, return what was seen and requested."""
    page = Path(page).resolve()
    with Browser(width, 900, extra_flags=("--host-resolver-rules=MAP * ~NOTFOUND",)) as b:
        b.events.clear()  # only what the page itself does counts
        b.send("Page.navigate", {"url": page.as_uri()}, timeout=timeout)
        b.wait_event("Page.loadEventFired", timeout=timeout)
        seen = b.js(PROBE)
        b.screenshot(Path(screenshot), full_page=True)
        time.sleep(0.2)  # let late events (e.g. a deferred request) arrive before we stop listening
        b.js("1")
        ev = b.events
        requests = [e["params"]["request"]["url"] for e in ev if e.get("method") == "Network.requestWillBeSent"]
        failed = [e["params"] for e in ev if e.get("method") == "Network.loadingFailed"]
        console = [e["params"]["entry"] for e in ev if e.get("method") == "Log.entryAdded"]
        console += [e["params"] for e in ev if e.get("method") == "Runtime.consoleAPICalled"]
    return {**seen, "requests": requests, "failed": failed, "console": console, "screenshot": str(screenshot)}


if __name__ == "__main__":
    if sys.argv[1:] == ["--which"]:  # used by scripts/system_packages.sh: exit 1 when there is none
        found = find_chromium()
        print(found or HOW_TO_INSTALL)
        sys.exit(0 if found else 1)
    out = render(Path(sys.argv[1]), Path(sys.argv[2]))
    out.pop("text")
    out["requests"] = [u[:80] for u in out["requests"]]
    print(json.dumps(out, indent=2))

"""Render a page in headless Chromium and report what it loaded, over the DevTools protocol.

Chromium is driven through --remote-debugging-pipe (NUL-delimited JSON on file descriptors 3 and 4),
so no WebSocket client and no open port are needed. DNS is mapped to nothing
(--host-resolver-rules), so a page that tried to reach the network could not; every request the page
makes is still recorded (Network.requestWillBeSent) and every console/CSP complaint is kept, so a
test can assert that none was attempted.

    python -m tests.e2e.chromium report.html screenshot.png   # prints the result as JSON
"""

from __future__ import annotations

import base64
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

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome")

# What the page reports about itself once loaded (run by DevTools, not by the page: its CSP forbids scripts).
PROBE = """JSON.stringify({
  title: document.title,
  verdict: (document.getElementById('verdict') || {}).innerText || null,
  text: document.body.innerText,
  images: Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete,
      width: i.naturalWidth, height: i.naturalHeight, scheme: i.currentSrc.split(':')[0]})),
  height: document.documentElement.scrollHeight
})"""


def find_chromium() -> str | None:
    for name in ("/usr/bin/chromium", *CHROMIUM_CANDIDATES):
        path = shutil.which(name)
        if path:
            return path
    return None


class _Pipe:
    """A minimal DevTools client: send commands, wait for their replies, keep every event."""

    def __init__(self, proc: subprocess.Popen, to_browser: int, from_browser: int) -> None:
        self.proc, self.w, self.r = proc, to_browser, from_browser
        self.buf = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("Chromium did not answer over the DevTools pipe in time")
            ready, _, _ = select.select([self.r], [], [], left)
            if ready:
                chunk = os.read(self.r, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"Chromium closed the DevTools pipe (exit code {self.proc.poll()})")
                self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 60) -> dict[str, Any]:
        self.next_id += 1
        msg: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
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
            ev = self._read_message(deadline)
            self.events.append(ev)
            if ev.get("method") == method:
                return ev


def render(page: Path, screenshot: Path, width: int = 1200, timeout: float = 90) -> dict[str, Any]:
    """Load `page` (a local file), save a full-page PNG screenshot, return what was seen and requested."""
    chromium = find_chromium()
    if chromium is None:
        raise FileNotFoundError("Chromium not found: install the Debian package `chromium` (apt-get install chromium)")
    page = Path(page).resolve()
    profile = tempfile.mkdtemp(prefix="tl-chromium-")
    # fds 3 and 4 in the child: Chromium reads commands from 3 and writes replies to 4.
    cmd_r, cmd_w = os.pipe()
    res_r, res_w = os.pipe()
    args = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-extensions", "--disable-default-apps", "--no-default-browser-check",
            "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={profile}", "--remote-debugging-pipe",
            f"--window-size={width},900", "about:blank"]

    def child_fds() -> None:  # in the child, before exec; dup first so 3 and 4 cannot clobber each other
        a, b = os.dup(cmd_r), os.dup(res_w)
        os.dup2(a, 3)
        os.dup2(b, 4)

    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=child_fds, pass_fds=(3, 4))
    os.close(cmd_r)
    os.close(res_w)
    cdp = _Pipe(proc, cmd_w, res_r)
    try:
        target = cdp.send("Target.createTarget", {"url": "about:blank"}, timeout=timeout)
        sid = cdp.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})["sessionId"]
        for domain in ("Network", "Page", "Log", "Runtime"):
            cdp.send(f"{domain}.enable", session=sid)
        cdp.send("Emulation.setDeviceMetricsOverride",
                 {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session=sid)
        cdp.events.clear()  # only what the report itself does counts
        cdp.send("Page.navigate", {"url": page.as_uri()}, session=sid, timeout=timeout)
        cdp.wait_event("Page.loadEventFired", timeout=timeout)
        seen = json.loads(cdp.send("Runtime.evaluate", {"expression": PROBE, "returnByValue": True},
                                   session=sid)["result"]["value"])
        shot = cdp.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True},
                        session=sid, timeout=timeout)
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        time.sleep(0.2)  # let late events (e.g. a deferred request) arrive before we stop listening
        try:
            cdp.send("Runtime.evaluate", {"expression": "1"}, session=sid, timeout=10)
        except (TimeoutError, RuntimeError):
            pass
        requests = [e["params"]["request"]["url"] for e in cdp.events if e.get("method") == "Network.requestWillBeSent"]
        failed = [e["params"] for e in cdp.events if e.get("method") == "Network.loadingFailed"]
        console = [e["params"]["entry"] for e in cdp.events if e.get("method") == "Log.entryAdded"]
        console += [e["params"] for e in cdp.events if e.get("method") == "Runtime.consoleAPICalled"]
        return {**seen, "requests": requests, "failed": failed, "console": console, "screenshot": str(screenshot)}
    finally:
        try:
            cdp.send("Browser.close", timeout=10)
        except (TimeoutError, RuntimeError, OSError):
            pass
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        os.close(cmd_w)
        os.close(res_r)
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    out = render(Path(sys.argv[1]), Path(sys.argv[2]))
    out.pop("text")
    out["requests"] = [u[:80] for u in out["requests"]]
    print(json.dumps(out, indent=2))

"""Headless Chromium driven over the DevTools protocol: enough to load a page, read it, click, and
take a screenshot.

The system ``chromium`` (Debian package; ``.ci/run`` installs it) is used directly, with the
``websockets`` client that viser already depends on, so no browser download and no extra test
dependency. Every failure to start the browser raises ``BrowserUnavailable`` with the reason,
which tests turn into a failure, never a skip.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Optional

from websockets.sync.client import connect


class BrowserUnavailable(RuntimeError):
    pass


def find_chromium() -> str:
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)  # type: ignore[return-value]
    raise BrowserUnavailable(
        "no Chromium found (looked for $CHROMIUM, chromium, chromium-browser, google-chrome); "
        "install it with `apt-get install -y chromium` (.ci/run does this)"
    )


class Chromium:
    """One headless browser with one page; use as a context manager."""

    def __init__(self, width: int = 1400, height: int = 900, start_timeout: float = 60.0) -> None:
        self.width, self.height, self.start_timeout = width, height, start_timeout
        self._ids = itertools.count(1)
        self.process: Optional[subprocess.Popen] = None

    def __enter__(self) -> "Chromium":
        exe = find_chromium()
        self.profile = Path(tempfile.mkdtemp(prefix="evos-chromium-"))
        self.log = self.profile / "chromium.log"
        args = [
            exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--use-angle=swiftshader", "--enable-unsafe-swiftshader",  # software WebGL for viser's 3D view
            "--no-first-run", "--no-default-browser-check", "--disable-extensions",
            f"--user-data-dir={self.profile}", "--remote-debugging-port=0",
            f"--window-size={self.width},{self.height}", "about:blank",
        ]
        with open(self.log, "wb") as log:
            try:
                # Its own process group, so that closing it also stops the helper processes, which
                # otherwise write into the profile after it is removed and leave it in /tmp; and its
                # temporary files (shared memory, with --disable-dev-shm-usage) inside the profile.
                self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                                env={**os.environ, "TMPDIR": str(self.profile)})
            except OSError as err:
                raise BrowserUnavailable(f"could not run {exe}: {err}") from err
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + self.start_timeout
        while not port_file.exists() or not port_file.read_text().strip():
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = self.log.read_text(errors="replace")[-2000:]
                self.__exit__(None, None, None)
                raise BrowserUnavailable(f"{exe} did not start (exit code {self.process.returncode}): {tail}")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
        page = next(t for t in targets if t.get("type") == "page")
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=20)
        self.call("Page.enable")
        self.call("Runtime.enable")
        return self

    def __exit__(self, *exc) -> None:
        ws = getattr(self, "ws", None)
        if ws is not None:
            ws.close()
        if self.process is not None:
            for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(self.process.pid, sig)
                except ProcessLookupError:  # the whole group is gone
                    break
                try:
                    self.process.wait(timeout=wait)
                except subprocess.TimeoutExpired:
                    pass
        shutil.rmtree(self.profile, ignore_errors=True)

    def call(self, method: str, timeout: float = 30.0, **params: Any) -> dict:
        """Send one DevTools command and wait for its answer (events in between are dropped)."""
        msg_id = next(self._ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == msg_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def click_until(self, expression: str, condition: str, timeout: float, retry: float = 10.0) -> Any:
        """Click, then poll ``condition`` (JavaScript) until it holds; returns its last value.

        For page-side state only: viser sets a checkbox's value on the page at once, before the
        server hears of it, so a click that changes nothing within ``retry`` seconds was lost (a
        re-render between press and release, once on a loaded CI machine) and is clicked again."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            self.click(expression)
            value = self.wait_for(condition, min(retry, max(deadline - time.monotonic(), 0.0)))
            if value:
                return value
        return value

    def type_number(self, expression: str, value: float) -> None:
        """Replace the content of a number box and press Enter, as a user typing would."""
        self.click(expression)
        self.evaluate(f"{expression}.select()")
        self.call("Input.insertText", text=str(value))
        for kind in ("keyDown", "keyUp"):
            self.call("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter", windowsVirtualKeyCode=13)

    def goto(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60.0) -> Any:
        """Poll a JavaScript expression until it is truthy; returns its last value either way."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.25)
        return value

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png", timeout=60)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def click(self, expression: str, timeout: float = 10.0) -> None:
        """Click the centre of the element a JavaScript expression returns, as a user's mouse would,
        once it is scrolled into view and nothing (a tooltip, an animation) covers it."""
        locate = (
            f"(() => {{ const e = {expression}; if (!e) return null; e.scrollIntoView({{block: 'center'}});"
            " const r = e.getBoundingClientRect(); const x = r.left + r.width / 2, y = r.top + r.height / 2;"
            " const hit = document.elementFromPoint(x, y);"
            " return [x, y, !!hit && (hit === e || e.contains(hit) || hit.contains(e))]; })()"
        )
        deadline = time.monotonic() + timeout
        box = self.evaluate(locate)
        while box is None or not box[2]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"cannot click (missing or covered): {expression}")
            time.sleep(0.25)
            box = self.evaluate(locate)
        x, y, _ = box
        self.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)


def labelled(label: str) -> str:
    """JavaScript expression for the input of the viser GUI row with this label: the input the
    ``<label for=...>`` names, else the row's first visible input (a slider's number box)."""
    text = json.dumps(label)
    return (
        f"(() => {{ const l = Array.from(document.querySelectorAll('label')).find(l => l.textContent.trim() === {text});"
        " if (!l) return null; const byId = document.getElementById(l.htmlFor);"
        " if (byId && byId.tagName === 'INPUT') return byId;"
        " const visible = 'input:not([type=hidden])';"
        " let row = l; while (row && !row.querySelector(visible)) row = row.parentElement;"
        " return row ? row.querySelector(visible) : null; })()"
    )

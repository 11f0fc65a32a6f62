"""Headless Chromium (Debian's ``chromium``) driven over the DevTools protocol: open a page with cookies set
(an Airflow login is the ``_token`` cookie, which ``chromium --screenshot`` cannot be given), read the
rendered text, and take a PNG screenshot.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.servers import stop


def chromium() -> str:
    """The Chromium binary (scripts/setup.sh installs Debian's ``chromium``)."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        raise RuntimeError("chromium is missing: run scripts/setup.sh (apt-get install chromium)")
    return path


class Browser:
    """One headless Chromium with one page, on a private profile, over the DevTools websocket.

    :param width: window width.
    :param height: window height.
    """

    def __init__(self, width: int = 1300, height: int = 1400) -> None:
        self.profile = Path(tempfile.mkdtemp(prefix="mlops-chromium-"))
        self.proc = subprocess.Popen(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--remote-debugging-port=0", f"--user-data-dir={self.profile}", f"--window-size={width},{height}",
             "--hide-scrollbars", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"chromium did not start its DevTools endpoint (exit {self.proc.poll()})")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            pages = [t for t in json.load(r) if t["type"] == "page"]
        from websockets.sync.client import connect

        self.ws = connect(pages[0]["webSocketDebuggerUrl"], max_size=64 * 2**20, open_timeout=10)
        self._id = 0
        self.call("Page.enable")
        self.call("Network.enable")
        # The viewport itself (--window-size also counts the headless window's frame).
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )

    def call(self, method: str, timeout: float = 30.0, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and return its result (events met meanwhile are dropped)."""
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def set_cookie(self, url: str, name: str, value: str) -> None:
        """Set a cookie for ``url`` (httpOnly, as Airflow sets its ``_token``)."""
        ok = self.call("Network.setCookie", name=name, value=value, url=url, httpOnly=True)
        assert ok.get("success", True), ok

    def open(self, url: str, timeout: float = 30.0, settle: float = 0.5) -> int:
        """Navigate to ``url`` and wait for its load event; returns the main document's HTTP status."""
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": "Page.navigate", "params": {"url": url}}))
        status, loaded = 0, False
        deadline = time.monotonic() + timeout
        while not loaded:
            message = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if (
                message.get("method") == "Network.responseReceived"
                and message["params"]["type"] == "Document"
            ):
                status = int(message["params"]["response"]["status"])
            loaded = message.get("method") == "Page.loadEventFired"
        time.sleep(settle)
        return status

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0) -> Any:
        """Poll a JavaScript expression until it is truthy (a page that renders itself, e.g. a React app)."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value or time.monotonic() > deadline:
                return value
            time.sleep(0.25)

    def text(self) -> str:
        """The rendered page's visible text."""
        result = self.call("Runtime.evaluate", expression="document.body ? document.body.innerText : ''")
        return str(result["result"].get("value", ""))

    def screenshot(self, path: Path) -> Path:
        """Save a PNG of the viewport to ``path``."""
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        ws = getattr(self, "ws", None)
        if ws is not None:
            try:
                ws.close()
            except Exception:  # noqa: BLE001 - closing a dead socket
                pass
        stop(self.proc)
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

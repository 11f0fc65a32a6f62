"""DeployStepTrigger: serialization, and its verdicts against real HTTP servers on loopback.

The "gateway" here is a small real HTTP server (http.server in a thread) that answers /health, /ready
and /metrics the way the gateway does, so that error counts can be set exactly; the trigger against a
real gateway runs in tests/integration/deploy/test_deploy_deferrable.py.
"""

from __future__ import annotations

import asyncio
import http.server
import socket
import threading
import time

import pytest

from airflow_mlops.triggers.deploy import DeployStepTrigger

ARGS = {
    "endpoint": "http://127.0.0.1:1",
    "model_name": "bc",
    "version": "2",
    "stage": 1,
    "end_time": 1.5e9,
    "max_error_rate": 0.05,
    "min_requests": 20,
    "baseline": {"200": 10.0, "500": 1.0},
    "poll_interval": 0.1,
    "request_timeout": 2.0,
    "not_before": 1.5e9,
}


def test_serialize_round_trips_every_argument_and_holds_no_secret():
    path, kwargs = DeployStepTrigger(**ARGS).serialize()
    assert path == "airflow_mlops.triggers.deploy.DeployStepTrigger" and kwargs == ARGS
    assert DeployStepTrigger(**kwargs).serialize() == (path, kwargs)
    assert not [k for k in kwargs if "token" in k or "password" in k]


def _collect(trigger: DeployStepTrigger) -> list[dict]:
    async def run() -> list[dict]:
        return [e.payload async for e in trigger.run()]

    return asyncio.run(run())


class _Gateway(http.server.ThreadingHTTPServer):
    counts = {"200": 0.0, "500": 0.0}
    healthy = True


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # http.server API
        server: _Gateway = self.server  # type: ignore[assignment]
        if self.path in ("/health", "/ready"):
            code, body = (200, b"{}") if server.healthy else (503, b"{}")
        elif self.path == "/metrics":
            lines = [
                f'mlops_gateway_requests_total{{model="bc",version="2",status="{s}"}} {v}'
                for s, v in server.counts.items()
            ]
            code, body = (
                200,
                ("# TYPE mlops_gateway_requests_total counter\n" + "\n".join(lines) + "\n").encode(),
            )
        else:
            code, body = 404, b""
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def gateway():
    server = _Gateway(("127.0.0.1", 0), _Handler)
    server.counts = {"200": 10.0, "500": 1.0}
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield server
    server.shutdown()


def _trigger(server, hold: float = 0.3) -> DeployStepTrigger:
    return DeployStepTrigger(**{**ARGS, "endpoint": f"http://127.0.0.1:{server.server_address[1]}",
                                "end_time": time.time() + hold})  # fmt: skip


def test_a_healthy_step_is_ok(gateway):
    gateway.counts = {"200": 40.0, "500": 2.0}  # 30 new requests, 1 new error: 3 % < 5 %
    assert _collect(_trigger(gateway)) == [{"status": "ok", "stage": 1, "version": "2"}]


def test_too_many_errors_fail_the_step(gateway):
    gateway.counts = {"200": 30.0, "500": 6.0}  # 25 new requests, 5 new errors: 20 %
    (event,) = _collect(_trigger(gateway))
    assert event["status"] == "failed" and "failed 5 of 25 requests" in event["reason"]


def test_unready_gateway_fails_the_step_at_once(gateway):
    gateway.healthy = False
    t0 = time.monotonic()
    (event,) = _collect(_trigger(gateway, hold=60))
    assert event["status"] == "failed" and "/health" in event["reason"] and time.monotonic() - t0 < 5


def test_dead_gateway_fails_the_step_within_seconds():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    t0 = time.monotonic()
    (event,) = _collect(DeployStepTrigger(**{**ARGS, "endpoint": f"http://127.0.0.1:{port}",
                                              "end_time": time.time() + 60}))  # fmt: skip
    assert event["status"] == "failed" and "did not answer /health" in event["reason"]
    assert time.monotonic() - t0 < 15


def test_no_event_comes_before_not_before_not_even_a_failure(gateway):
    """An event right after the deferral lets Airflow's scheduler fail the resumed task (a stale
    executor "success" of the deferring process, apache/airflow#72716): the trigger holds every event,
    a failure seen at once included, until ``not_before``."""
    gateway.healthy = False
    t0 = time.monotonic()
    trigger = _trigger(gateway, hold=60)
    trigger.not_before = time.time() + 1.5
    (event,) = _collect(trigger)
    assert event["status"] == "failed" and "/health" in event["reason"]
    assert time.monotonic() - t0 >= 1.4

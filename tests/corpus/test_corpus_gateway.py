"""Corpus of bad input and faults for the model gateway.

Every case is a row of a table. HTTP cases run against the Starlette app in-process (Starlette's
TestClient: the real app, lifespan and threads; real fitted scikit-learn pipelines handed over by an
in-memory loader instead of a registry). Each asserts the HTTP status, that the message names the
problem and the fix (a regex per case), the time taken, and that nothing changed: the deployment
served before is still served (same routing, predictions by the same version) and no feedback was
counted. Fault cases run real gateway processes (``python -m airflow_mlops.serving``) against the real
MLflow server of the test session: MLflow going down or hanging during a deployment change (through a
loopback TCP relay that the test cuts or stalls, MLflow itself untouched), a corrupt state file at
start, and half-sent requests on a raw socket. Nothing is mocked.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from airflow_mlops.serving.client import GatewayClient, GatewayError, parse_metrics
from tests.servers import FEEDBACK_TOKEN, start_gateway, stop

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.filterwarnings("ignore:X does not have valid feature names"),
    pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`"),
]

DEAD_SERVICE_SECONDS = 15.0
ADMIN = "corpus-admin-token-5e1b"
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}
FEED_AUTH = {"Authorization": f"Bearer {FEEDBACK_TOKEN}"}
JSON = {"Content-Type": "application/json"}
MAX_BODY = 64 * 1024
MAX_ROWS = 50


# --- in-process gateways ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def apps() -> Iterator[dict[str, Any]]:
    """Three in-process gateways: ``clf`` (breast_cancer classifier, v1 serving, v2 loadable), ``reg``
    (a diabetes regressor) and ``nofeedback`` (started without a feedback token)."""
    from sklearn.datasets import load_breast_cancer, load_diabetes
    from starlette.testclient import TestClient

    from airflow_mlops.core.training import Candidate, train_model
    from airflow_mlops.serving.app import GatewaySettings, create_app
    from airflow_mlops.serving.config import DeploymentConfig
    from tests.unit.serving.conftest import wrap

    bc = load_breast_cancer(as_frame=True).frame
    lr = "sklearn.linear_model.LogisticRegression"
    clf = {
        str(i + 1): wrap(
            train_model(bc, "target", [Candidate(lr, {"C": c, "max_iter": 500})]), "bc", str(i + 1)
        )
        for i, c in enumerate((1.0, 0.01))
    }
    diabetes = load_diabetes(as_frame=True).frame
    reg = {
        "1": wrap(train_model(diabetes, "target", [Candidate("sklearn.linear_model.Ridge", {})]), "diab", "1")
    }

    def resolve_in(models: dict) -> Callable[[str, str], str]:
        def resolve(name: str, ref: str) -> str:
            from airflow_mlops.core.errors import MlopsInputError

            ref = ref.removeprefix("@")
            if ref not in models:
                raise MlopsInputError(
                    f"Model {name!r} has no version {ref} in the registry: register it first or fix the route."
                )
            return ref

        return resolve

    clients: dict[str, Any] = {}
    for key, models, name, feedback in (
        ("clf", clf, "bc", FEEDBACK_TOKEN),
        ("reg", reg, "diab", FEEDBACK_TOKEN),
        ("nofeedback", clf, "bc", None),
    ):
        settings = GatewaySettings(
            admin_token=ADMIN, feedback_token=feedback, max_body_bytes=MAX_BODY, max_rows=MAX_ROWS
        )
        config = DeploymentConfig.parse(
            {"model_name": name, "strategy": "single", "routes": [{"version": "1"}]}
        )
        app = create_app(
            settings, config=config, load_model=lambda n, v, m=models: m[v], resolve=resolve_in(models)
        )
        client = TestClient(app)
        client.__enter__()
        deadline = time.monotonic() + 60
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        clients[key] = client
    yield {
        "clients": clients,
        "records": {
            "clf": bc.drop(columns="target").to_dict(orient="records"),
            "reg": diabetes.drop(columns="target").to_dict(orient="records"),
        },  # fmt: skip
    }
    for client in clients.values():
        client.__exit__(None, None, None)


@dataclass(frozen=True)
class HttpCase:
    """One request to an in-process gateway.

    :param id: the case's name.
    :param path: the endpoint.
    :param status: the expected HTTP status.
    :param message: regex the ``detail`` must match (the problem and the fix).
    :param body: a JSON body, or a callable ``(record, request_id) -> body`` (a fresh served request).
    :param raw: raw body bytes instead of JSON.
    :param headers: request headers (default: JSON content type, plus the token the endpoint needs).
    :param method: the HTTP method.
    :param app: which gateway: ``clf``, ``reg`` or ``nofeedback``.
    """

    id: str
    path: str
    status: int
    message: str
    body: Any = None
    raw: bytes | None = None
    headers: dict[str, str] | None = None
    method: str = "POST"
    app: str = "clf"
    extra: dict = field(default_factory=dict)


def _rec(fields: dict) -> Callable[[dict, str], dict]:
    """A predict body: the first record with ``fields`` changed."""
    return lambda record, rid: {"inputs": {**record, **fields}}


def _fb(**fields: Any) -> Callable[[dict, str], dict]:
    """A feedback body for a freshly served one-row request (``request_id`` filled in)."""
    return lambda record, rid: {"request_id": rid, **fields}


GOOD_FEEDBACK = _fb(label=1)
TEXT = {"Content-Type": "text/plain"}
CONTENT_TYPE = r"Content-Type .* is not accepted.*'Content-Type: application/json'"

HTTP_CASES = [
    # --- content types: a web page can post text/plain or a form without a preflight, never JSON
    HttpCase("predict-text-plain", "/predict", 415, CONTENT_TYPE, _rec({}), headers=TEXT),
    HttpCase(
        "predict-form",
        "/predict",
        415,
        CONTENT_TYPE,
        raw=b"inputs=1",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    ),  # fmt: skip
    HttpCase(
        "predict-no-content-type",
        "/predict",
        415,
        r"Content-Type missing .*application/json",
        raw=b'{"inputs": {}}',
        headers={},
    ),  # fmt: skip
    HttpCase(
        "feedback-text-plain", "/feedback", 415, CONTENT_TYPE, GOOD_FEEDBACK, headers={**TEXT, **FEED_AUTH}
    ),
    HttpCase(
        "admin-put-text-plain",
        "/admin/deployment",
        415,
        CONTENT_TYPE,
        {"model_name": "bc", "strategy": "single", "routes": [{"version": "2"}]},
        headers={**TEXT, **ADMIN_AUTH},
        method="PUT",
    ),  # fmt: skip
    # --- bodies
    HttpCase(
        "predict-bad-json", "/predict", 400, r"not valid JSON .*send a JSON object", raw=b'{"inputs": [1,'
    ),
    HttpCase("predict-empty-body", "/predict", 400, r"body is empty: send a JSON object", raw=b""),
    HttpCase("predict-not-utf8", "/predict", 400, r"not valid JSON", raw=b'{"inputs": "\xff\xfe"}'),
    HttpCase(
        "predict-nan-literal", "/predict", 400, r"not valid JSON", raw=b'{"inputs": {"mean radius": NaN}}'
    ),
    HttpCase(
        "predict-oversized",
        "/predict",
        413,
        rf"over the limit of {MAX_BODY}.*send less",
        raw=b'{"inputs": "' + b"x" * MAX_BODY + b'"}',
    ),
    HttpCase(
        "predict-too-many-rows",
        "/predict",
        413,
        rf"over the limit of {MAX_ROWS}: split it",
        lambda record, rid: {"inputs": [record] * (MAX_ROWS + 1)},
    ),
    # --- shapes and schema
    HttpCase("predict-body-is-a-list", "/predict", 422, r'The body must be \{"inputs"', [{"inputs": {}}]),
    HttpCase("predict-no-inputs", "/predict", 422, r'The body must be \{"inputs"', {"rows": []}),
    HttpCase("predict-empty-inputs", "/predict", 422, r"non-empty list of records", {"inputs": []}),
    HttpCase(
        "predict-inputs-a-string", "/predict", 422, r"one record \(an object\)", {"inputs": "mean radius"}
    ),
    HttpCase(
        "predict-record-not-an-object",
        "/predict",
        422,
        r"Input record 0 is int, not an object: send",
        {"inputs": [1]},
    ),  # fmt: skip
    HttpCase(
        "predict-missing-column",
        "/predict",
        422,
        r"has no column 'mean radius'.*needs columns",
        lambda record, rid: {"inputs": {k: v for k, v in record.items() if k != "mean radius"}},
    ),  # fmt: skip
    HttpCase(
        "predict-text-in-number-column",
        "/predict",
        422,
        r"Column 'mean radius' takes numbers .* send numbers",
        _rec({"mean radius": "big"}),
    ),  # fmt: skip
    HttpCase(
        "predict-bool-in-number-column",
        "/predict",
        422,
        r"takes numbers .*True .*send numbers",
        _rec({"mean radius": True}),
    ),  # fmt: skip
    HttpCase(
        "predict-object-in-number-column", "/predict", 422, r"takes numbers", _rec({"mean radius": {"v": 1}})
    ),
    # --- feedback credentials: labels drive the online gate, the bandit and the retraining data
    HttpCase(
        "feedback-no-token",
        "/feedback",
        401,
        r"Missing or wrong feedback token: send 'Authorization: Bearer",
        GOOD_FEEDBACK,
        headers=JSON,
    ),  # fmt: skip
    HttpCase(
        "feedback-wrong-token",
        "/feedback",
        401,
        r"wrong feedback token.*MLOPS_GATEWAY_FEEDBACK_TOKEN",
        GOOD_FEEDBACK,
        headers={**JSON, "Authorization": f"Bearer {FEEDBACK_TOKEN}x"},
    ),  # fmt: skip
    HttpCase(
        "feedback-admin-token-is-not-a-feedback-token",
        "/feedback",
        401,
        r"wrong feedback token",
        GOOD_FEEDBACK,
        headers={**JSON, **ADMIN_AUTH},
    ),  # fmt: skip
    HttpCase(
        "feedback-basic-auth",
        "/feedback",
        401,
        r"wrong feedback token",
        GOOD_FEEDBACK,
        headers={**JSON, "Authorization": "Basic dXNlcjpwdw=="},
    ),  # fmt: skip
    HttpCase(
        "feedback-disabled-without-a-token",
        "/feedback",
        403,
        r"Feedback is disabled.*start it with MLOPS_GATEWAY_FEEDBACK_TOKEN set",
        GOOD_FEEDBACK,
        app="nofeedback",
    ),  # fmt: skip
    # --- feedback bodies
    HttpCase(
        "feedback-unknown-request-id",
        "/feedback",
        404,
        r"Unknown request_id 'f{32}'.*send the request_id of a /predict answer exactly as it came",
        {"request_id": "f" * 32, "label": 1},
    ),  # fmt: skip
    HttpCase(
        "feedback-request-id-a-number",
        "/feedback",
        422,
        r'"request_id": "\.\.\."',
        {"request_id": 7, "label": 1},
    ),
    HttpCase("feedback-no-label", "/feedback", 422, r'Give the true value as "label".*or "labels"', _fb()),
    HttpCase("feedback-labels-not-a-list", "/feedback", 422, r'"labels" must be a list', _fb(labels=1)),
    HttpCase(
        "feedback-too-many-labels",
        "/feedback",
        422,
        r"predicted 1 rows but 2 labels.*send one per row",
        _fb(labels=[0, 1]),
    ),  # fmt: skip
    HttpCase(
        "feedback-label-not-a-class",
        "/feedback",
        422,
        r"Label 7 is not a class .*send one of \[0, 1\]",
        _fb(label=7),
    ),  # fmt: skip
    HttpCase(
        "feedback-label-an-object", "/feedback", 422, r"is not a class .*send one of", _fb(label={"y": 1})
    ),
    HttpCase("feedback-label-a-bool", "/feedback", 422, r"Label True is not a class", _fb(label=True)),
    HttpCase(
        "feedback-regressor-label-text",
        "/feedback",
        422,
        r"Label 'high' \(str\) is not a number.*regressor: send the true values as numbers",
        _fb(label="high"),
        app="reg",
    ),  # fmt: skip
    HttpCase(
        "feedback-regressor-label-null",
        "/feedback",
        422,
        r"Label None .*is not a number",
        _fb(label=None),
        app="reg",
    ),  # fmt: skip
    # --- admin API
    HttpCase(
        "admin-put-no-token",
        "/admin/deployment",
        401,
        r"Missing or wrong admin token: send 'Authorization",
        {"model_name": "bc", "strategy": "single", "routes": [{"version": "2"}]},
        headers=JSON,
        method="PUT",
    ),  # fmt: skip
    HttpCase(
        "admin-put-feedback-token",
        "/admin/deployment",
        401,
        r"wrong admin token",
        {"model_name": "bc", "strategy": "single", "routes": [{"version": "2"}]},
        headers={**JSON, **FEED_AUTH},
        method="PUT",
    ),  # fmt: skip
    HttpCase(
        "admin-put-bad-json",
        "/admin/deployment",
        400,
        r"not valid JSON",
        raw=b"{",
        headers={**JSON, **ADMIN_AUTH},
        method="PUT",
    ),  # fmt: skip
    HttpCase(
        "admin-put-unknown-strategy",
        "/admin/deployment",
        422,
        r"strateg.*not changed",
        {"model_name": "bc", "strategy": "blue-green", "routes": [{"version": "2"}]},
        headers={**JSON, **ADMIN_AUTH},
        method="PUT",
    ),  # fmt: skip
    HttpCase(
        "admin-put-weights-do-not-sum-to-1",
        "/admin/deployment",
        422,
        r"sum to 1.*fix the weights.*not changed",
        {
            "model_name": "bc",
            "strategy": "canary",
            "routes": [{"version": "1", "weight": 0.5}, {"version": "2", "weight": 0.2}],
        },
        headers={**JSON, **ADMIN_AUTH},
        method="PUT",
    ),  # fmt: skip
    HttpCase(
        "admin-put-missing-version",
        "/admin/deployment",
        422,
        r"has no version 9 .*register it first or fix the route.*not changed",
        {"model_name": "bc", "strategy": "single", "routes": [{"version": "9"}]},
        headers={**JSON, **ADMIN_AUTH},
        method="PUT",
    ),  # fmt: skip
    HttpCase(
        "admin-put-unknown-key",
        "/admin/deployment",
        422,
        r"unknown keys \['replicas'\]: use only",
        {"model_name": "bc", "strategy": "single", "routes": [{"version": "2"}], "replicas": 3},
        headers={**JSON, **ADMIN_AUTH},
        method="PUT",
    ),  # fmt: skip
]


def _state(client: Any) -> tuple[Any, float]:
    """What must not change: the routing served, and the feedback counted."""
    deployment = client.get("/admin/deployment", headers=ADMIN_AUTH).json()
    fed = sum(
        v
        for (n, _), v in parse_metrics(client.get("/metrics").text).items()
        if n == "mlops_gateway_feedback_total"
    )
    return deployment, fed


@pytest.mark.parametrize("case", HTTP_CASES, ids=[c.id for c in HTTP_CASES])
def test_http_case(apps: dict, case: HttpCase) -> None:
    client = apps["clients"][case.app]
    record = apps["records"]["reg" if case.app == "reg" else "clf"][0]
    served = client.post("/predict", json={"inputs": record})
    assert served.status_code == 200
    before = _state(client)
    body = case.body(record, served.json()["request_id"]) if callable(case.body) else case.body
    headers = case.headers
    if headers is None:
        token = {"/feedback": FEED_AUTH, "/admin/deployment": ADMIN_AUTH}.get(case.path, {})
        headers = {**JSON, **token}
    content = case.raw if case.raw is not None else json.dumps(body).encode()
    started = time.monotonic()
    r = client.request(case.method, case.path, content=content, headers=headers)
    seconds = time.monotonic() - started
    assert r.status_code == case.status, r.text
    detail = r.json()["detail"]
    assert re.search(case.message, detail, re.S), detail
    assert FEEDBACK_TOKEN not in detail and ADMIN not in detail
    assert seconds < 2.0
    assert _state(client) == before  # nothing changed: same routing, no feedback counted
    again = client.post("/predict", json={"inputs": record})
    assert again.status_code == 200 and again.json()["model_version"] == served.json()["model_version"]


def test_feedback_is_counted_once_with_the_token(apps: dict) -> None:
    """The control of the feedback rows above: the same body with the right token is counted, once."""
    client = apps["clients"]["clf"]
    rid = client.post("/predict", json={"inputs": apps["records"]["clf"][0]}).json()["request_id"]
    _, fed = _state(client)
    assert (
        client.post("/feedback", json={"request_id": rid, "label": 1}, headers=FEED_AUTH).status_code == 200
    )
    again = client.post("/feedback", json={"request_id": rid, "label": 1}, headers=FEED_AUTH)
    assert again.status_code == 409 and "already recorded: send it once" in again.json()["detail"]
    assert _state(client)[1] == fed + 1


# --- real gateway processes -------------------------------------------------------------------------


class Relay:
    """A loopback TCP relay in front of a real server: ``cut()`` refuses new connections and closes open
    ones (the server went down), ``stall()`` accepts connections and never answers (the server hangs)."""

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.removeprefix("http://").partition(":")
        self.upstream = (host, int(port.rstrip("/")))
        self.mode = "relay"
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            if self.mode == "cut":
                conn.close()
                continue
            self._open.append(conn)
            if self.mode == "relay":
                up = socket.create_connection(self.upstream)
                self._open.append(up)
                for a, b in ((conn, up), (up, conn)):
                    threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _drop_open(self) -> None:
        for s in self._open:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass
        self._open.clear()

    def cut(self) -> None:
        self.mode = "cut"
        self._drop_open()

    def stall(self) -> None:
        self.mode = "stall"
        self._drop_open()

    def close(self) -> None:
        self._sock.close()
        self._drop_open()


@pytest.fixture(scope="module")
def two_versions(mlflow_server: str) -> tuple[str, list[str]]:
    from tests.models import register_versions

    name = f"corpus-gw-{uuid.uuid4().hex[:6]}"
    return name, register_versions(mlflow_server, name, [{"C": 1.0}, {"C": 0.01}])


def _single(name: str, version: str) -> dict:
    return {"model_name": name, "strategy": "single", "routes": [{"version": version}], "champion": version}


@pytest.mark.parametrize(
    "fault, message",
    [
        pytest.param(
            "cut", r"MLflow at http://127\.0\.0\.1:\d+ is unreachable.*start the server", id="mlflow-down"
        ),
        pytest.param(
            "stall", r"MLflow at http://127\.0\.0\.1:\d+ is unreachable.*timed out", id="mlflow-hangs"
        ),
    ],
)
def test_mlflow_failing_during_a_deployment_change(mlflow_server, two_versions, tmp_path, fault, message):
    """The gateway serves v1 from a real MLflow reached through a relay; the relay is cut (MLflow down)
    or stalled (MLflow hangs), then a change to v2 is PUT. It fails within seconds with 503 naming MLflow
    and the fix (before: it blocked 248 s holding the swap lock), a second PUT is not blocked either,
    predicts keep being served by v1 throughout, and the routing is unchanged."""
    name, (v1, v2) = two_versions
    relay = Relay(mlflow_server)
    proc, url = start_gateway(tmp_path / "gw", relay.url, config=_single(name, v1), admin_token=ADMIN)
    try:
        with GatewayClient(url, admin_token=ADMIN, timeout=30) as c:
            record = _bc_record()
            assert c.predict(record)["model_version"] == v1
            getattr(relay, fault)()
            results: list = []

            def put() -> None:
                t0 = time.monotonic()
                try:
                    c.put_deployment(_single(name, v2), timeout=60)
                    results.append(("ok", time.monotonic() - t0))
                except GatewayError as e:
                    results.append((e, time.monotonic() - t0))

            putter = threading.Thread(target=put)
            putter.start()
            while putter.is_alive():  # served by v1 while the change fails
                assert c.predict(record)["model_version"] == v1
                time.sleep(0.05)
            putter.join()
            put()  # and the next change is not blocked for minutes either
            for error, seconds in results:
                assert isinstance(error, GatewayError) and error.status_code == 503, error
                assert seconds < DEAD_SERVICE_SECONDS, seconds
                assert re.search(message, error.detail, re.S) and "not changed" in error.detail, error.detail
            assert c.get_deployment()["routes"][0]["version"] == v1
            assert c.predict(record)["model_version"] == v1
    finally:
        stop(proc)
        relay.close()


def _bc_record() -> dict:
    from sklearn.datasets import load_breast_cancer

    return load_breast_cancer(as_frame=True).frame.drop(columns="target").iloc[0].to_dict()


def test_a_truncated_state_file_at_start(mlflow_server, two_versions, tmp_path):
    """A state file cut short (a crash or a full disk) at start: the gateway names that file in its log,
    keeps it as ``<name>.corrupt`` and serves ``--config`` (before: it refused to start, naming neither)."""
    name, (v1, _) = two_versions
    state = tmp_path / "gw" / "state.json"
    state.parent.mkdir(parents=True)
    state.write_text(json.dumps(_single(name, v1))[:20])
    t0 = time.monotonic()
    proc, url = start_gateway(tmp_path / "gw", mlflow_server, config=_single(name, v1),
                              extra_args=("--state-file", str(state)))  # fmt: skip
    try:
        assert time.monotonic() - t0 < 60
        with GatewayClient(url) as c:
            assert c.predict(_bc_record())["model_version"] == v1
        log = (tmp_path / "gw" / "gateway.log").read_text()
        assert (
            f"The state file {state} is not a valid deployment" in log and f"kept as {state}.corrupt" in log
        )
        assert (tmp_path / "gw" / "state.json.corrupt").exists()
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def strict_gateway(mlflow_server, two_versions, tmp_path_factory) -> Iterator[str]:
    """A real gateway with short connection deadlines: headers within 1 s, a body within 1 s."""
    name, (v1, _) = two_versions
    root = tmp_path_factory.mktemp("strict")
    proc, url = start_gateway(root, mlflow_server, config=_single(name, v1),
                              extra_args=("--header-timeout", "1", "--body-timeout", "1"))  # fmt: skip
    yield url
    stop(proc)


def _closed_within(sock: socket.socket, seconds: float) -> tuple[bytes, float]:
    """Read until the server closes the connection; return what it sent and when it closed."""
    sock.settimeout(seconds)
    t0 = time.monotonic()
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except TimeoutError:
        pytest.fail(f"the gateway kept the connection open for more than {seconds}s")
    return data, time.monotonic() - t0


@pytest.mark.parametrize(
    "sent, answer",
    [
        pytest.param(b"", b"", id="idle-connection"),
        pytest.param(b"POST /predict HTTP/1.1\r\nHost: x\r\n", b"", id="half-sent-headers"),
        pytest.param(b"POST /pre", b"", id="half-sent-request-line"),
        pytest.param(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"inputs"',
            b"408",
            id="half-sent-body",
        ),  # fmt: skip
    ],
)
def test_slow_clients_are_dropped(strict_gateway, sent, answer):
    """A slow-loris client (a connection that sends nothing, half a request line, half the headers or
    half a body) is dropped within the deadline; a slow body gets a 408 first (before: held for ever)."""
    host, port = strict_gateway.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(sent)
        data, seconds = _closed_within(sock, 8)
    assert seconds < 5
    assert data.split(b"\r\n", 1)[0].split(b" ")[1:2] == [answer] if answer else data == b""
    if answer:
        assert b"did not arrive within 1 s: send the whole body at once" in data
    # The gateway still answers everyone else.
    with GatewayClient(strict_gateway) as c:
        assert c.health()["status"] == "ok"

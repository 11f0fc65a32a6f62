"""The HTTP client of the gateway, for the deploy core, operators, sensors, tests and scripts."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from airflow_mlops.core.errors import MlopsInputError, MlopsServiceError
from airflow_mlops.core.redact import redact

if TYPE_CHECKING:
    import httpx

    from airflow_mlops.serving.config import DeploymentConfig

# The gateway's two bearer tokens, read by the gateway (to check) and by callers (to send).
ADMIN_TOKEN_ENV = "MLOPS_GATEWAY_ADMIN_TOKEN"
FEEDBACK_TOKEN_ENV = "MLOPS_GATEWAY_FEEDBACK_TOKEN"
# The request counter of /metrics, labelled model, version and status (the HTTP status code).
REQUESTS_SAMPLE = "mlops_gateway_requests_total"


class GatewayError(MlopsServiceError):
    """The gateway answered with an error (or could not be reached).

    :param status_code: the HTTP status (0 when there was no answer).
    :param detail: the gateway's message (credentials in URLs are masked).
    """

    def __init__(self, status_code: int, detail: str) -> None:
        detail = redact(detail)
        super().__init__(f"gateway answered {status_code}: {detail}" if status_code else detail)
        self.status_code = status_code
        self.detail = detail


class GatewayInputError(GatewayError, MlopsInputError):
    """The gateway rejected the request itself (4xx other than 401): fix the request."""


class GatewayClient:
    """Talks to one gateway over HTTP with a keep-alive connection pool: every call of one client reuses
    its connection (timed calls measure the gateway, not a new TCP/TLS handshake). A transport failure
    or an error answer raises :class:`GatewayError` (a service error), so that a rollout that loses its
    gateway rolls back like one whose health check failed.

    :param base_url: e.g. ``http://127.0.0.1:8080``.
    :param admin_token: bearer token for the admin API.
    :param feedback_token: bearer token for ``/feedback`` (default: ``$MLOPS_GATEWAY_FEEDBACK_TOKEN``).
    :param timeout: seconds per request (connecting: at most 5).
    :param trust_env: honour proxy settings of the environment (off: a gateway is usually internal,
        and an HTTP(S)_PROXY meant for the internet would swallow loopback calls).
    """

    def __init__(
        self,
        base_url: str,
        admin_token: str | None = None,
        timeout: float = 10.0,
        trust_env: bool = False,
        feedback_token: str | None = None,
    ) -> None:
        import httpx

        self.base_url = base_url.rstrip("/")
        self._admin_token = admin_token
        self._feedback_token = feedback_token or os.environ.get(FEEDBACK_TOKEN_ENV) or None
        self._http = httpx.Client(base_url=self.base_url, timeout=_timeout(timeout), trust_env=trust_env)

    def __repr__(self) -> str:  # the token stays out of reprs and logs
        return f"GatewayClient({redact(self.base_url)!r})"

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _send(
        self, method: str, path: str, *, admin: bool = False, timeout: float | None = None, **kwargs: Any
    ) -> httpx.Response:
        """The answer, whatever its status; :raises GatewayError: (0) the gateway did not answer."""
        import httpx

        token = self._admin_token if admin else self._feedback_token if path == "/feedback" else None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if timeout is not None:
            kwargs["timeout"] = _timeout(timeout)
        try:
            return self._http.request(method, path, headers=headers, **kwargs)
        except httpx.HTTPError as e:
            raise GatewayError(
                0,
                f"The gateway at {self.base_url} did not answer {method} {path} ({type(e).__name__}: {e}).",
            ) from None

    def _call(self, method: str, path: str, *, admin: bool = False, **kwargs: Any) -> Any:
        return self._answer(self._send(method, path, admin=admin, **kwargs), method, path, admin)

    def _answer(self, r: httpx.Response, method: str, path: str, admin: bool) -> Any:
        """The decoded answer; :raises GatewayError: an error status (:class:`GatewayInputError`: 4xx)."""
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text
            if admin and r.status_code in (401, 403):
                raise GatewayInputError(
                    r.status_code,
                    f"{method} {path} on {self.base_url} was refused ({detail}): this worker's admin token is "
                    f"not the gateway's. Set {ADMIN_TOKEN_ENV} (or the gateway connection's password) to the "
                    "token the gateway was started with.",
                )
            cls = GatewayInputError if 400 <= r.status_code < 500 and r.status_code != 401 else GatewayError
            raise cls(r.status_code, str(detail))
        return r.json() if r.headers.get("content-type", "").startswith("application/json") else r.text

    def _object(self, method: str, path: str, *, admin: bool = False, **kwargs: Any) -> dict[str, Any]:
        """A call whose answer is a JSON object."""
        answer: dict[str, Any] = self._call(method, path, admin=admin, **kwargs)
        return answer

    def predict(
        self, inputs: dict[str, Any] | list[dict[str, Any]], key: str | None = None
    ) -> dict[str, Any]:
        """Predict one record (a dict) or a batch (a list of dicts).

        :param inputs: the feature values.
        :param key: sticky key for A/B splits.
        :return: ``request_id``, ``model_name``, ``model_version``, ``predictions`` (and ``probabilities``).
        """
        body: dict[str, Any] = {"inputs": inputs}
        if key is not None:
            body["key"] = key
        return self._object("POST", "/predict", json=body)

    def feedback(self, request_id: str, label: Any = None, labels: list[Any] | None = None) -> dict[str, Any]:
        """Send the true label(s) of a served request.

        :param request_id: the ``request_id`` of the predict answer.
        :param label: the true label of a one-row request.
        :param labels: the true labels of a batch, one per row.
        """
        body: dict[str, Any] = {"request_id": request_id}
        if labels is not None:
            body["labels"] = labels
        else:
            body["label"] = label
        return self._object("POST", "/feedback", json=body)

    def get_deployment(self) -> dict[str, Any] | None:
        """The current deployment config (versions resolved); None when the gateway serves none yet."""
        r = self._send("GET", "/admin/deployment", admin=True)
        if r.status_code == 404:
            return None
        answer: dict[str, Any] = self._answer(r, "GET", "/admin/deployment", True)
        return answer

    def put_deployment(
        self, config: DeploymentConfig | dict[str, Any], timeout: float = 300.0
    ) -> dict[str, Any]:
        """Change models and routing; returns the applied config (aliases resolved to versions).

        :param config: the deployment config.
        :param timeout: seconds to wait, since new models are loaded before the answer.
        """
        body = config if isinstance(config, dict) else config.to_dict()
        return self._object("PUT", "/admin/deployment", admin=True, json=body, timeout=timeout)

    def health(self) -> dict[str, Any]:
        """``GET /health``."""
        return self._object("GET", "/health")

    def ready(self) -> dict[str, Any]:
        """``GET /ready`` (raises :class:`GatewayError` with 503 when not ready)."""
        return self._object("GET", "/ready")

    def ok(self, path: str) -> bool:
        """Whether ``GET path`` answers 200 (False when the gateway does not answer)."""
        try:
            return self._send("GET", path).status_code == 200
        except GatewayError:
            return False

    def healthy(self) -> bool:
        """``/health`` and ``/ready`` both answer 200."""
        return self.ok("/health") and self.ok("/ready")

    def metrics_text(self) -> str:
        """The Prometheus exposition text of ``GET /metrics``."""
        return str(self._call("GET", "/metrics"))

    def request_counts(self, model_name: str) -> dict[str, dict[str, float]]:
        """``{version: {status: count}}`` of ``model_name`` from ``/metrics`` (see :func:`request_counts`)."""
        return request_counts(self.metrics_text(), model_name)

    def wait_ready(
        self, timeout: float = 60.0, interval: float = 0.25, alive: Callable[[], bool] | None = None
    ) -> dict[str, Any]:
        """Poll ``/ready`` until the gateway serves a deployment; return its answer.

        :param timeout: seconds to wait at most.
        :param interval: seconds between polls.
        :param alive: optional callable; when it returns False the wait stops early (the process died).
        :raises GatewayError: not ready in time, its models failed to load (waiting will not help), or
            the process died.
        """
        deadline = time.monotonic() + timeout
        last = "no answer"
        while True:
            try:
                r = self._send("GET", "/ready", timeout=5.0)
                body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
                if r.status_code == 200:
                    return dict(body)
                last = str(body.get("detail", r.status_code))
                if body.get("status") == "error":
                    raise GatewayError(
                        r.status_code, f"The gateway at {self.base_url} could not load its models: {last}"
                    )
            except GatewayError as e:
                if e.status_code:
                    raise
                last = e.detail
            except ValueError:
                pass
            if alive is not None and not alive():
                raise GatewayError(0, f"The gateway at {self.base_url} exited before it was ready.")
            if time.monotonic() > deadline:
                raise GatewayError(
                    0, f"The gateway at {self.base_url} was not ready within {timeout:.0f}s: {last}"
                )
            time.sleep(interval)


def _timeout(seconds: float) -> httpx.Timeout:
    import httpx

    return httpx.Timeout(seconds, connect=min(5.0, seconds))


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Parse Prometheus exposition text into ``{(name, labels): value}`` (for checks and tests)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def request_counts(metrics_text: str, model_name: str) -> dict[str, dict[str, float]]:
    """``{version: {status: count}}`` of ``model_name`` from ``mlops_gateway_requests_total`` of a
    ``/metrics`` page (``status`` is the HTTP status code the gateway answered)."""
    out: dict[str, dict[str, float]] = {}
    for (name, labels), value in parse_metrics(metrics_text).items():
        lab = dict(labels)
        if name != REQUESTS_SAMPLE or lab.get("model") != model_name:
            continue
        per = out.setdefault(lab.get("version", ""), {})
        status = lab.get("status", "")
        per[status] = per.get(status, 0.0) + value
    return out

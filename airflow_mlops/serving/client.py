"""A small HTTP client of the gateway, for operators, sensors, tests and scripts."""

from __future__ import annotations

import os
import time
from typing import Any

from airflow_mlops.core.errors import MlopsInputError, MlopsServiceError

# The gateway's two bearer tokens, read by the gateway (to check) and by callers (to send).
ADMIN_TOKEN_ENV = "MLOPS_GATEWAY_ADMIN_TOKEN"
FEEDBACK_TOKEN_ENV = "MLOPS_GATEWAY_FEEDBACK_TOKEN"


class GatewayError(MlopsServiceError):
    """The gateway answered with an error (or could not be reached).

    :param status_code: the HTTP status (0 when there was no answer).
    :param detail: the gateway's message.
    """

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(f"gateway answered {status_code}: {detail}" if status_code else detail)
        self.status_code = status_code
        self.detail = detail


class GatewayInputError(GatewayError, MlopsInputError):
    """The gateway rejected the request itself (4xx other than 401): fix the request."""


class GatewayClient:
    """Talks to one gateway over HTTP with a keep-alive connection pool.

    :param base_url: e.g. ``http://127.0.0.1:8080``.
    :param admin_token: bearer token for the admin API.
    :param feedback_token: bearer token for ``/feedback`` (default: ``$MLOPS_GATEWAY_FEEDBACK_TOKEN``).
    :param timeout: seconds per request.
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
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, trust_env=trust_env)

    def __repr__(self) -> str:  # the token stays out of reprs and logs
        return f"GatewayClient({self.base_url!r})"

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _call(self, method: str, path: str, *, admin: bool = False, **kwargs: Any) -> Any:
        import httpx

        token = self._admin_token if admin else self._feedback_token if path == "/feedback" else None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            r = self._http.request(method, path, headers=headers, **kwargs)
        except httpx.HTTPError as e:
            raise GatewayError(0, f"cannot reach the gateway at {self.base_url}{path}: {e}") from e
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text
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

    def get_deployment(self) -> dict[str, Any]:
        """The current deployment config (versions resolved)."""
        return self._object("GET", "/admin/deployment", admin=True)

    def put_deployment(self, config: dict[str, Any], timeout: float = 300.0) -> dict[str, Any]:
        """Change models and routing; returns the applied config (aliases resolved to versions).

        :param config: the deployment config.
        :param timeout: seconds to wait, since new models are loaded before the answer.
        """
        return self._object("PUT", "/admin/deployment", admin=True, json=config, timeout=timeout)

    def health(self) -> dict[str, Any]:
        """``GET /health``."""
        return self._object("GET", "/health")

    def ready(self) -> dict[str, Any]:
        """``GET /ready`` (raises :class:`GatewayError` with 503 when not ready)."""
        return self._object("GET", "/ready")

    def metrics_text(self) -> str:
        """The Prometheus exposition text of ``GET /metrics``."""
        return str(self._call("GET", "/metrics"))

    def wait_ready(self, timeout: float = 60.0, interval: float = 0.2) -> dict[str, Any]:
        """Poll ``/ready`` until the gateway serves a deployment.

        :param timeout: seconds to wait at most.
        :param interval: seconds between polls.
        :raises GatewayError: not ready in time (the last answer is in the message).
        """
        deadline = time.monotonic() + timeout
        last = "no answer"
        while True:
            try:
                return self.ready()
            except GatewayError as e:
                last = e.detail
            if time.monotonic() > deadline:
                raise GatewayError(0, f"gateway at {self.base_url} not ready after {timeout}s: {last}")
            time.sleep(interval)


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Parse Prometheus exposition text into ``{(name, labels): value}`` (for checks and tests)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out

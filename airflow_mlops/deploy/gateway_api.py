"""The few gateway HTTP calls a deploy needs: health, readiness, routing (admin), predict, metrics."""

from __future__ import annotations

import re
import time
from typing import Any

from airflow_mlops.core.errors import MlopsServiceError

# Sample lines of mlops_gateway_requests_total: labels in any order.
_REQ_LINE = re.compile(r"^mlops_gateway_requests_total\{([^}]*)\}\s+([0-9.eE+-]+)", re.M)
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


class GatewayApi:
    """HTTP calls to one gateway.

    :param endpoint: base URL such as ``http://127.0.0.1:8080``.
    :param admin_token: bearer token for ``/admin`` calls (never logged).
    :param timeout: seconds per call.
    """

    def __init__(self, endpoint: str, admin_token: str | None = None, timeout: float = 10.0) -> None:
        self.endpoint = endpoint.rstrip("/")
        self._token = admin_token
        self.timeout = timeout

    def _client(self):  # noqa: ANN202 - httpx.Client, imported lazily
        import httpx

        # trust_env=False: a proxy configured for the internet must never see loopback traffic.
        return httpx.Client(base_url=self.endpoint, timeout=self.timeout, trust_env=False)

    def _admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    def ok(self, path: str) -> bool:
        """Whether ``GET path`` answers 200 (False on any connection error)."""
        import httpx

        try:
            with self._client() as c:
                return c.get(path).status_code == 200
        except httpx.HTTPError:
            return False

    def healthy(self) -> bool:
        """``/health`` and ``/ready`` both answer 200."""
        return self.ok("/health") and self.ok("/ready")

    def wait_ready(self, timeout: float, alive: Any = None) -> None:
        """Wait until the gateway is healthy and ready.

        :param timeout: seconds.
        :param alive: optional callable; when it returns False the wait stops early (the process died).
        :raises MlopsServiceError: not ready in time, or the process died.
        """
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with self._client() as c:
                    r = c.get("/ready")
                if r.status_code == 200:
                    return
                body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
                if body.get("status") == "error":  # the model failed to load: waiting will not help
                    raise MlopsServiceError(
                        f"The gateway at {self.endpoint} could not load its models: {body.get('detail')}"
                    )
            except (httpx.HTTPError, ValueError):
                pass
            if alive is not None and not alive():
                raise MlopsServiceError(f"The gateway at {self.endpoint} exited before it was ready.")
            time.sleep(0.25)
        raise MlopsServiceError(f"The gateway at {self.endpoint} was not ready within {timeout:.0f}s.")

    def get_deployment(self) -> dict[str, Any]:
        """The routing the gateway applies now (``GET /admin/deployment``)."""
        with self._client() as c:
            r = c.get("/admin/deployment", headers=self._admin_headers())
        self._raise_for(r, "GET /admin/deployment")
        return r.json()

    def put_deployment(self, config: dict[str, Any], timeout: float = 180.0) -> dict[str, Any]:
        """Apply new routing (``PUT /admin/deployment``); the gateway loads new models first.

        :param config: the deployment config.
        :param timeout: seconds (loading a model from the registry can take a while).
        """
        import httpx

        with httpx.Client(base_url=self.endpoint, timeout=timeout, trust_env=False) as c:
            r = c.put("/admin/deployment", json=config, headers=self._admin_headers())
        self._raise_for(r, "PUT /admin/deployment")
        return r.json() if r.content else {}

    def predict(self, inputs: Any, key: str | None = None) -> dict[str, Any]:
        """``POST /predict`` and return the JSON answer."""
        body: dict[str, Any] = {"inputs": inputs}
        if key is not None:
            body["key"] = key
        with self._client() as c:
            r = c.post("/predict", json=body)
        self._raise_for(r, "POST /predict")
        return r.json()

    def metrics_text(self) -> str:
        """The Prometheus exposition of ``/metrics``."""
        with self._client() as c:
            r = c.get("/metrics")
        self._raise_for(r, "GET /metrics")
        return r.text

    def request_counts(self, model_name: str) -> dict[str, dict[str, float]]:
        """``{version: {status: count}}`` from ``mlops_gateway_requests_total`` of ``model_name``."""
        out: dict[str, dict[str, float]] = {}
        for labels_text, value in _REQ_LINE.findall(self.metrics_text()):
            labels = dict(_LABEL.findall(labels_text))
            if labels.get("model") != model_name:
                continue
            per = out.setdefault(labels.get("version", ""), {})
            status = labels.get("status", "")
            per[status] = per.get(status, 0.0) + float(value)
        return out

    def _raise_for(self, r: Any, what: str) -> None:
        if r.status_code >= 400:
            detail = r.text[:500]
            raise MlopsServiceError(f"{what} on {self.endpoint} failed with {r.status_code}: {detail}")


def is_error_status(status: str) -> bool:
    """Whether a ``status`` label of ``mlops_gateway_requests_total`` counts as a failed request."""
    s = status.lower()
    return s.startswith("5") or s in ("error", "failed", "failure", "exception")

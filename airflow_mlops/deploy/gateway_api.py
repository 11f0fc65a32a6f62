"""The few gateway HTTP calls a deploy needs: health, readiness, routing (admin), predict, metrics.

One pooled ``httpx.Client`` per :class:`GatewayApi`, bounded timeouts, and every transport error turned
into :class:`GatewayUnreachableError` (an :class:`~airflow_mlops.core.errors.MlopsServiceError`), so that
a rollout that loses its gateway rolls back like one whose health check failed.
"""

from __future__ import annotations

import time
from typing import Any

from airflow_mlops.core.errors import MlopsInputError, MlopsServiceError
from airflow_mlops.core.redact import redact

REQUESTS_SAMPLE = "mlops_gateway_requests_total"


class GatewayUnreachableError(MlopsServiceError):
    """The gateway did not answer (refused, reset, timed out)."""


class GatewayApi:
    """HTTP calls to one gateway over one pooled connection.

    :param endpoint: base URL such as ``http://127.0.0.1:8080``.
    :param admin_token: bearer token for ``/admin`` calls (never logged).
    :param timeout: seconds per call (connect and read).
    """

    def __init__(self, endpoint: str, admin_token: str | None = None, timeout: float = 10.0) -> None:
        self.endpoint = endpoint.rstrip("/")
        self._token = admin_token
        self.timeout = timeout
        self._http: Any = None

    @property
    def http(self) -> Any:
        """The pooled ``httpx.Client`` (created on first use)."""
        if self._http is None:
            import httpx

            # trust_env=False: a proxy configured for the internet must never see loopback traffic.
            self._http = httpx.Client(
                base_url=self.endpoint, timeout=httpx.Timeout(self.timeout, connect=min(5.0, self.timeout)),
                trust_env=False,
            )  # fmt: skip
        return self._http

    def close(self) -> None:
        """Close the pooled connection."""
        if self._http is not None:
            self._http.close()
            self._http = None

    def __enter__(self) -> GatewayApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, timeout: float | None = None, **kw: Any) -> Any:
        import httpx

        try:
            if timeout is not None:
                kw["timeout"] = httpx.Timeout(timeout, connect=min(5.0, timeout))
            return self.http.request(method, path, **kw)
        except httpx.HTTPError as e:
            raise GatewayUnreachableError(
                f"The gateway at {self.endpoint} did not answer {method} {path} "
                f"({type(e).__name__}: {redact(e)})."
            ) from None

    def _admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    def ok(self, path: str) -> bool:
        """Whether ``GET path`` answers 200 (False when the gateway does not answer)."""
        try:
            return self._call("GET", path).status_code == 200
        except GatewayUnreachableError:
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
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                r = self._call("GET", "/ready", timeout=5.0)
                if r.status_code == 200:
                    return
                body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
                if body.get("status") == "error":  # the model failed to load: waiting will not help
                    raise MlopsServiceError(
                        f"The gateway at {self.endpoint} could not load its models: {body.get('detail')}"
                    )
            except (GatewayUnreachableError, ValueError):
                pass
            if alive is not None and not alive():
                raise MlopsServiceError(f"The gateway at {self.endpoint} exited before it was ready.")
            time.sleep(0.25)
        raise MlopsServiceError(f"The gateway at {self.endpoint} was not ready within {timeout:.0f}s.")

    def get_deployment(self) -> dict[str, Any] | None:
        """The routing the gateway applies now (``GET /admin/deployment``); None when it has none."""
        r = self._call("GET", "/admin/deployment", headers=self._admin_headers())
        if r.status_code == 404:
            return None
        self._raise_for(r, "GET /admin/deployment")
        return r.json()

    def put_deployment(self, config: dict[str, Any], timeout: float = 180.0) -> dict[str, Any]:
        """Apply new routing (``PUT /admin/deployment``); the gateway loads new models first.

        :param config: the deployment config.
        :param timeout: seconds (loading a model from the registry can take a while).
        """
        r = self._call(
            "PUT", "/admin/deployment", timeout=timeout, json=config, headers=self._admin_headers()
        )
        self._raise_for(r, "PUT /admin/deployment")
        return r.json() if r.content else {}

    def predict(self, inputs: Any, key: str | None = None) -> dict[str, Any]:
        """``POST /predict`` and return the JSON answer."""
        body: dict[str, Any] = {"inputs": inputs}
        if key is not None:
            body["key"] = key
        r = self._call("POST", "/predict", json=body)
        self._raise_for(r, "POST /predict")
        return r.json()

    def metrics_text(self) -> str:
        """The Prometheus exposition of ``/metrics``."""
        r = self._call("GET", "/metrics")
        self._raise_for(r, "GET /metrics")
        return r.text

    def request_counts(self, model_name: str) -> dict[str, dict[str, float]]:
        """``{version: {status: count}}`` from ``mlops_gateway_requests_total`` of ``model_name``."""
        return request_counts(self.metrics_text(), model_name)

    def _raise_for(self, r: Any, what: str) -> None:
        if r.status_code in (401, 403) and "/admin" in what:
            raise MlopsInputError(
                f"{what} on {self.endpoint} was refused ({r.status_code}): this worker's admin token is not "
                f"the gateway's. Set MLOPS_GATEWAY_ADMIN_TOKEN (or the gateway connection's password) to "
                "the token the gateway was started with."
            )
        if r.status_code >= 400:
            detail = r.text[:500]
            raise MlopsServiceError(f"{what} on {self.endpoint} failed with {r.status_code}: {detail}")


def request_counts(metrics_text: str, model_name: str) -> dict[str, dict[str, float]]:
    """``{version: {status: count}}`` of ``model_name`` from a ``/metrics`` page."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name != REQUESTS_SAMPLE or sample.labels.get("model") != model_name:
                continue
            per = out.setdefault(sample.labels.get("version", ""), {})
            status = sample.labels.get("status", "")
            per[status] = per.get(status, 0.0) + float(sample.value)
    return out


def is_error_status(status: str) -> bool:
    """Whether a ``status`` label of ``mlops_gateway_requests_total`` counts as a failed request."""
    s = status.lower()
    return s.startswith("5") or s in ("error", "failed", "failure", "exception")


def error_rate_problem(
    before: dict[str, float], after: dict[str, float], version: str, max_error_rate: float, min_requests: int
) -> str | None:
    """Why a held step failed on its error rate, or None when it passed.

    :param before: ``{status: count}`` of the new version when the step began.
    :param after: the same at the end of the step.
    :param version: the new version (for the message).
    :param max_error_rate: largest share of failed requests.
    :param min_requests: requests needed before the rate counts.
    """
    total = sum(after.values()) - sum(before.values())
    errors = sum(v for k, v in after.items() if is_error_status(k)) - sum(
        v for k, v in before.items() if is_error_status(k)
    )
    if total >= min_requests and total > 0 and errors / total > max_error_rate:
        return (
            f"version {version} failed {errors:.0f} of {total:.0f} requests in the step "
            f"(over the {max_error_rate:.0%} limit)"
        )
    return None

"""A small Prometheus HTTP API client (instant queries), shared by the gate's core and PrometheusHook.

Only the standard library is used, so the core stays light and callable from any CI job.
"""

from __future__ import annotations

import base64
import http.client
import json
import math
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from airflow_mlops.core.errors import MlopsInputError, MlopsServiceError
from airflow_mlops.core.redact import redact


class PromQLEmptyResult(MlopsInputError):
    """The query is valid but matched no series (nothing scraped yet, or wrong labels)."""


class PromQLQueryError(MlopsInputError):
    """Prometheus rejected the query, or its result is not one number (a matrix, several series).

    An input error, counted by an analysed gate as an error measurement (Argo Rollouts' query errors)."""


@dataclass(frozen=True)
class Sample:
    """One series of an instant vector: its labels and value."""

    labels: dict[str, str]
    value: float


@dataclass(frozen=True)
class PromClient:
    """Instant PromQL queries against a Prometheus-compatible server.

    :param base_url: ``http(s)://host:port`` (a path prefix such as ``/prometheus`` is kept).
    :param username: basic-auth user.
    :param password: basic-auth password.
    :param token: bearer token (used when no username is given).
    :param timeout: seconds to wait for an answer.
    :param verify: check TLS certificates.
    """

    base_url: str
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    timeout: float = 10.0
    verify: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.base_url, str) or not self.base_url.startswith(("http://", "https://")):
            raise MlopsInputError(
                f"Prometheus URL {redact(self.base_url)!r} is not an http(s) URL: give e.g. "
                "http://prometheus:9090."
            )
        parts = urllib.parse.urlsplit(self.base_url)
        if parts.username is not None:
            # urllib would take "user:pw@host" for the host name: move the userinfo into the headers.
            netloc = parts.netloc.rpartition("@")[2]
            object.__setattr__(self, "base_url", urllib.parse.urlunsplit(parts._replace(netloc=netloc)))
            if self.username is None and self.token is None:
                user = urllib.parse.unquote(parts.username)
                password = urllib.parse.unquote(parts.password) if parts.password is not None else None
                if password is None:
                    object.__setattr__(self, "token", user)
                else:
                    object.__setattr__(self, "username", user)
                    object.__setattr__(self, "password", password)
        if (
            isinstance(self.timeout, bool)
            or not isinstance(self.timeout, int | float)
            or not (0 < self.timeout <= 600)
        ):
            raise MlopsInputError(
                f"Prometheus timeout {self.timeout!r} must be a number of seconds in (0, 600]: e.g. 10."
            )

    @property
    def where(self) -> str:
        """The base URL without credentials, for messages."""
        return redact(self.base_url)

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.username:
            raw = f"{self.username}:{self.password or ''}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
        elif self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _get(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        url = f"{self.base_url.rstrip('/')}{path}?{urllib.parse.urlencode(params)}"
        req = urllib.request.Request(url, headers=self._headers())
        ctx = None if self.verify else ssl._create_unverified_context()  # opt-in by the user
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=ctx) as resp:
                body = resp.read()
        except urllib.error.HTTPError as e:
            body = e.read()
            payload = _json_or_none(body)
            # Prometheus answers 400 (bad_data) for a PromQL syntax error and 422 for an execution error.
            if e.code in (400, 422) and payload and payload.get("status") == "error":
                raise PromQLQueryError(
                    f"Prometheus rejected the query {params.get('query')!r}: {payload.get('error')} "
                    f"({payload.get('errorType')}). Fix the PromQL."
                ) from None
            if e.code in (401, 403):
                raise MlopsServiceError(
                    f"Prometheus at {self.where} refused the credentials (HTTP {e.code}): check the "
                    "connection's login/password or token (PROMETHEUS_USERNAME/PASSWORD or PROMETHEUS_TOKEN)."
                ) from None
            if e.code == 404:
                raise MlopsServiceError(
                    f"{self.where} has no Prometheus query API (HTTP 404 for {path}): give the Prometheus "
                    "base URL (e.g. http://prometheus:9090, with its path prefix if it has one)."
                ) from None
            raise MlopsServiceError(
                f"Prometheus at {self.where} answered HTTP {e.code} ({redact(body[:200])!r}): check the "
                "server's health, then retry."
            ) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            reason = getattr(e, "reason", e)
            raise MlopsServiceError(
                f"Prometheus at {self.where} cannot be reached ({redact(reason)}, within {self.timeout:g}s): "
                "start the server, or fix its URL (the source's 'url', --prometheus-url or the connection's host)."
            ) from None
        payload = _json_or_none(body)
        if payload is None or payload.get("status") != "success" or not isinstance(payload.get("data"), dict):
            raise MlopsServiceError(
                f"{self.where} did not answer like a Prometheus server ({redact(body[:200])!r}): check that the "
                "URL is the Prometheus base URL."
            )
        data: dict[str, Any] = payload["data"]
        return data

    def query(self, promql: str) -> list[Sample]:
        """Run an instant query; return its series (an empty list when nothing matches).

        :param promql: the PromQL expression.
        :raises MlopsInputError: the PromQL is invalid.
        :raises MlopsServiceError: the server cannot be reached or answers with an error.
        """
        if not promql or not promql.strip():
            raise MlopsInputError("The PromQL query is empty: give an expression.")
        data = self._get("/api/v1/query", {"query": promql})
        kind = data.get("resultType")
        result: Any = data.get("result")
        try:
            if kind == "scalar":
                return [Sample({}, _number(result[1]))]
            if kind == "vector":
                return [Sample(dict(s.get("metric", {})), _number(s["value"][1])) for s in result]
        except (TypeError, KeyError, IndexError, AttributeError):
            raise MlopsServiceError(
                f"{self.where} answered the query {promql!r} with a malformed {kind}: check that the URL is a "
                "Prometheus server."
            ) from None
        raise PromQLQueryError(
            f"The query {promql!r} returns a {kind}, not an instant vector or scalar: drop the range "
            "selector ([5m]) or wrap it in a function such as rate()."
        )

    def query_value(self, promql: str) -> float:
        """Run an instant query that must return exactly one number.

        :param promql: the PromQL expression.
        :raises PromQLEmptyResult: nothing matched.
        :raises MlopsInputError: invalid PromQL, or several series (aggregate them with sum/avg).
        """
        samples = self.query(promql)
        if not samples:
            raise PromQLEmptyResult(
                f"The query {promql!r} returned no series: check the metric name and labels, or wait "
                "until the target has been scraped."
            )
        if len(samples) > 1:
            raise PromQLQueryError(
                f"The query {promql!r} returned {len(samples)} series ({[s.labels for s in samples[:3]]}...): "
                "aggregate them to one number, e.g. sum(...) or avg(...)."
            )
        return samples[0].value

    def ready(self) -> bool:
        """Whether the server answers a trivial query."""
        try:
            self.query("1")
            return True
        except MlopsServiceError:
            return False


def _number(text: Any) -> float:
    # Prometheus encodes sample values as strings, including "NaN" and "+Inf".
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def _json_or_none(body: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None

"""PrometheusHook: instant PromQL queries through an Airflow connection of type ``prometheus``."""

from __future__ import annotations

from functools import cached_property

from airflow.sdk import BaseHook

from airflow_mlops.core.errors import MlopsInputError
from airflow_mlops.core.promql import PromClient, Sample
from airflow_mlops.hooks._conn import conn_url


class PrometheusHook(BaseHook):
    """Query a Prometheus server (or anything speaking its HTTP API, e.g. Thanos, Mimir).

    The connection's host is the base URL (``http://prometheus:9090``; a path prefix is kept). Login and
    password give basic auth; a password without a login is sent as a bearer token. Extras:
    ``timeout`` (seconds, default 10) and ``verify`` (false to skip TLS verification).

    :param prometheus_conn_id: the connection id.
    """

    conn_name_attr = "prometheus_conn_id"
    default_conn_name = "prometheus_default"
    conn_type = "prometheus"
    hook_name = "Prometheus"

    def __init__(self, prometheus_conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.prometheus_conn_id = prometheus_conn_id

    @cached_property
    def client(self) -> PromClient:
        """The connection resolved into a :class:`~airflow_mlops.core.promql.PromClient`."""
        conn = self.get_connection(self.prometheus_conn_id)
        extra = conn.extra_dejson
        host = conn_url(conn, "the Prometheus base URL")
        login, password = conn.login or None, conn.password or None
        try:
            timeout = float(extra.get("timeout", 10))
        except (TypeError, ValueError):
            raise MlopsInputError(
                f"Connection {self.prometheus_conn_id!r}: extra timeout = {extra.get('timeout')!r} is not a "
                'number of seconds: set e.g. {"timeout": 10}.'
            ) from None
        return PromClient(
            base_url=host,
            username=login,
            password=password if login else None,
            token=password if not login else None,
            timeout=timeout,
            verify=str(extra.get("verify", True)).lower() not in ("false", "0", "no"),
        )

    def get_conn(self) -> PromClient:
        """The Prometheus client."""
        return self.client

    def query(self, promql: str) -> list[Sample]:
        """Instant query: every series with its labels and value (empty when nothing matches).

        :param promql: the PromQL expression.
        """
        return self.client.query(promql)

    def query_value(self, promql: str) -> float:
        """Instant query that must give exactly one number.

        :param promql: the PromQL expression.
        :raises airflow_mlops.core.promql.PromQLEmptyResult: nothing matched.
        :raises MlopsInputError: invalid PromQL or several series.
        :raises MlopsServiceError: the server cannot be reached.
        """
        return self.client.query_value(promql)

    def test_connection(self) -> tuple[bool, str]:
        """Check that the server answers a trivial query."""
        try:
            self.client.query("1")
            return True, "Prometheus answered"
        except Exception as e:  # noqa: BLE001 - reported to the UI, not raised
            return False, str(e)

"""PushgatewayHook: a Prometheus Pushgateway from an Airflow connection of type ``pushgateway``."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseHook

from airflow_mlops.hooks._conn import conn_url


class PushgatewayHook(BaseHook):
    """Push metrics to a Prometheus Pushgateway.

    The connection's host is ``http(s)://host`` (or a bare host), its port the gateway's port;
    login/password give basic auth.

    :param pushgateway_conn_id: the connection id.
    """

    conn_name_attr = "pushgateway_conn_id"
    default_conn_name = "pushgateway_default"
    conn_type = "pushgateway"
    hook_name = "Prometheus Pushgateway"

    def __init__(self, pushgateway_conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.pushgateway_conn_id = pushgateway_conn_id

    def settings(self) -> tuple[str, str | None, str | None]:
        """``(url, username, password)`` of the gateway."""
        conn = self.get_connection(self.pushgateway_conn_id)
        return conn_url(conn, "the Pushgateway URL"), conn.login or None, conn.password or None

    def push_drift(self, summary: dict[str, Any], model: str) -> None:
        """Push the drift gauges of a report summary (see :mod:`airflow_mlops.core.drift.export`)."""
        from airflow_mlops.core.drift.export import push_drift_metrics

        url, user, password = self.settings()
        push_drift_metrics(url, summary, model, username=user, password=password)

    def test_connection(self) -> tuple[bool, str]:
        """Check that the gateway answers."""
        import urllib.request

        try:
            url, _, _ = self.settings()
            with urllib.request.urlopen(f"{url}/-/ready", timeout=5) as r:
                return r.status == 200, f"Pushgateway answered {r.status}"
        except Exception as e:  # noqa: BLE001 - reported to the UI, not raised
            return False, str(e)

"""Extra link from a DeployOperator (or an online gate) to the gateway's live metrics page."""

from __future__ import annotations

from airflow_mlops.links.base import XComLink

XCOM_GATEWAY_METRICS_URL = "gateway_metrics_url"


class GatewayMetricsLink(XComLink):
    """Opens the gateway's ``/metrics`` page: requests, latency, route weights and live quality per
    version."""

    name = "Gateway metrics"
    url_key = XCOM_GATEWAY_METRICS_URL


def metrics_url(endpoint: str | None) -> str | None:
    """The ``/metrics`` page of the gateway at ``endpoint`` (None for None)."""
    return f"{endpoint.rstrip('/')}/metrics" if endpoint else None

"""Drift gauges for Prometheus, pushed to a Pushgateway (job ``mlops_drift``)."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

from airflow_mlops.core.errors import MlopsServiceError

if TYPE_CHECKING:
    from collections.abc import Callable

    from prometheus_client import CollectorRegistry

JOB = "mlops_drift"


def drift_registry(summary: dict[str, Any], model: str) -> CollectorRegistry:
    """A registry holding ``mlops_drift_score{model,feature,test}``, ``mlops_drift_share{model}`` and
    ``mlops_drift_detected{model}`` for one report summary."""
    from prometheus_client import CollectorRegistry, Gauge

    reg = CollectorRegistry()
    score = Gauge(
        "mlops_drift_score", "Drift score per feature (p-value or distance)", ["model", "feature", "test"],
        registry=reg,
    )  # fmt: skip
    share = Gauge("mlops_drift_share", "Share of drifted features", ["model"], registry=reg)
    detected = Gauge("mlops_drift_detected", "1 when the dataset drifted", ["model"], registry=reg)
    for feature, c in summary["columns"].items():
        if c["score"] is not None:
            score.labels(model, feature, c["test"]).set(c["score"])
    share.labels(model).set(summary["share_drifted"])
    detected.labels(model).set(1 if summary["drift_detected"] else 0)
    return reg


def push_drift_metrics(
    url: str,
    summary: dict[str, Any],
    model: str,
    username: str | None = None,
    password: str | None = None,
    timeout: float = 10.0,
) -> None:
    """Replace the ``mlops_drift`` group of ``model`` on the Pushgateway at ``url`` with this summary.

    :param url: ``http(s)://host:port`` of the Pushgateway.
    :param summary: :meth:`DriftReport.summary`.
    :param model: model label (also the grouping key).
    :param username: basic-auth user.
    :param password: basic-auth password.
    :param timeout: seconds to wait for the gateway.
    """
    from prometheus_client import push_to_gateway
    from prometheus_client.exposition import default_handler

    def handler(
        url: str, method: str, timeout: float | None, headers: list[tuple[str, str]], data: bytes
    ) -> Callable[[], None]:
        if username is not None:
            token = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
            headers = [*headers, ("Authorization", f"Basic {token}")]
        return default_handler(url, method, timeout, headers, data)

    try:
        push_to_gateway(
            url, job=JOB, registry=drift_registry(summary, model), grouping_key={"model": model},
            timeout=timeout, handler=handler,
        )  # fmt: skip
    except OSError as e:
        raise MlopsServiceError(
            f"Could not push drift metrics to the Pushgateway at {url} ({e}): check that it runs and the "
            "connection's host and port."
        ) from e

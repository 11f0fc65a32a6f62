"""Gate fixtures: real model versions on the test MLflow server, and a live-metrics exporter."""

from __future__ import annotations

import functools
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.servers import free_port


@functools.cache
def _frame(dataset: str):
    from sklearn.datasets import load_breast_cancer, load_diabetes

    loader = {"breast_cancer": load_breast_cancer, "diabetes": load_diabetes}[dataset]
    return loader(as_frame=True).frame


def make_version(
    tracking_uri: str,
    name: str,
    estimator: str,
    params: dict | None = None,
    dataset: str = "breast_cancer",
    test_size: float = 0.2,
) -> dict[str, Any]:
    """Train ``estimator`` on a scikit-learn dataset and register it as a new version of ``name``."""
    from airflow_mlops.core.model_logging import DatasetInfo, ensure_experiment, log_model_run
    from airflow_mlops.core.tracking import MlflowTarget
    from airflow_mlops.core.training import Candidate, train_model

    frame = _frame(dataset)
    source = Path(tempfile.gettempdir()) / f"mlops-gate-{dataset}.csv"
    if not source.exists():
        frame.to_csv(source, index=False)
    outcome = train_model(frame, "target", [Candidate(estimator, params or {})], test_size=test_size)
    with MlflowTarget(tracking_uri).activate():
        eid = ensure_experiment(f"gate-{name}")
        return log_model_run(outcome, model_name=name, experiment_id=eid,
                             dataset=DatasetInfo(frame, str(source)))  # fmt: skip


def gate_tags(client, name: str, version: str) -> dict[str, str]:
    """The ``mlops.gate.*`` tags of a version."""
    tags = client.get_model_version(name, version).tags
    return {k: v for k, v in tags.items() if k.startswith("mlops.gate.")}


class Exporter:
    """A small prometheus-client exporter with the gateway's live gauges, on a free loopback port."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Gauge, start_http_server

        self.registry = CollectorRegistry()
        self.gauges = {
            m: Gauge(f"mlops_gateway_live_{m}", f"live {m}", ["model", "version"], registry=self.registry)
            for m in ("accuracy", "precision", "recall", "f1", "samples")
        }
        self.port = free_port()
        self.server, self.thread = start_http_server(self.port, addr="127.0.0.1", registry=self.registry)
        self.address = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.address}/metrics"

    def set(self, model: str, version: str, samples: int | None = None, **values: float) -> None:
        """Set live gauges of one model version."""
        for metric, value in values.items():
            self.gauges[metric].labels(model, version).set(value)
        if samples is not None:
            self.gauges["samples"].labels(model, version).set(samples)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def exporter():
    """An exporter of gateway-style live metrics (not scraped by anything unless added to Prometheus)."""
    exp = Exporter()
    yield exp
    exp.close()


@pytest.fixture
def scraped_exporter(exporter: Exporter, prometheus):
    """The exporter, scraped every second by the real test Prometheus."""
    prometheus.add_target(exporter.address)
    return exporter


@pytest.fixture
def prometheus_conn(prometheus, monkeypatch: pytest.MonkeyPatch) -> str:
    """The ``prometheus_default`` connection pointed at the test Prometheus; returns its URL."""
    from tests.conftest import conn_env

    monkeypatch.setenv(*conn_env("prometheus_default", {"conn_type": "prometheus", "host": prometheus.url}))
    return prometheus.url


@pytest.fixture
def live_model(mlflow_client) -> str:
    """A registered model with versions 1 (champion) and 2 (the canary); live gates need no artifacts."""
    name = f"live-{uuid.uuid4().hex[:8]}"
    mlflow_client.create_registered_model(name)
    exp = mlflow_client.create_experiment(f"exp-{name}")
    for _ in range(2):
        run = mlflow_client.create_run(exp)
        mlflow_client.create_model_version(
            name, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id
        )
    mlflow_client.set_registered_model_alias(name, "champion", "1")
    return name

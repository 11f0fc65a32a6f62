"""The PromQL of :mod:`airflow_mlops.core.live_queries` on a real Prometheus equals the training metric
functions: the gateway's counters (two "replicas": two LiveMetrics registries, each exported on its own
port) for a binary, a 3-class and a regression model."""

from __future__ import annotations

import random
import time

import pytest

from airflow_mlops.core.live_queries import counter_query, samples_query, value_query
from airflow_mlops.core.metrics import classification_metrics, regression_metrics
from airflow_mlops.serving.live_metrics import LiveMetrics


@pytest.fixture(scope="module")
def two_replicas(prometheus):
    from prometheus_client import start_http_server

    from airflow_mlops.core.net import free_port

    replicas, servers = [], []
    for _ in range(2):
        m = LiveMetrics()
        port = free_port()
        servers.append(start_http_server(port, addr="127.0.0.1", registry=m.registry)[0])
        prometheus.add_target(f"127.0.0.1:{port}")
        replicas.append(m)
    yield replicas
    for s in servers:
        s.shutdown()


def _feed(replicas, model: str, classes, y_true, y_pred) -> None:
    rng = random.Random(model)
    for m in replicas:
        m.start_version(model, "1", classes)
    for i in range(0, len(y_true), 7):  # batches of feedback to random replicas
        rng.choice(replicas).observe_feedback(model, "1", y_true[i : i + 7], y_pred[i : i + 7], classes)


def _query(prometheus, template: str, model: str) -> float:
    q = template.replace("{model}", model).replace("{version}", "1")
    deadline = time.monotonic() + 20
    while True:
        result = prometheus.query(q)
        if len(result) == 1 or time.monotonic() > deadline:
            assert len(result) == 1, (q, result)
            return float(result[0]["value"][1])
        time.sleep(0.3)


def _settle(prometheus, model: str, n: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        got = prometheus.query(f'sum(mlops_gateway_feedback_total{{model="{model}"}})')
        if got and float(got[0]["value"][1]) == n:
            return
        time.sleep(0.3)
    raise TimeoutError(model)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_classification_queries_equal_sklearn(two_replicas, prometheus, n_classes):
    rng = random.Random(n_classes)
    model = f"lq-{n_classes}-{rng.randrange(10**6)}"
    classes = list(range(n_classes))
    y_true = [rng.choice(classes) for _ in range(400)]
    # A model that is right 70% of the time and otherwise leans to class 0 (so per-class numbers differ).
    y_pred = [t if rng.random() < 0.7 else rng.choice([0, 0, *classes]) for t in y_true]
    _feed(two_replicas, model, classes, y_true, y_pred)
    _settle(prometheus, model, len(y_true))
    expected = classification_metrics(y_true, y_pred, classes=classes)
    for metric in ("accuracy", "precision", "recall", "f1"):
        assert _query(prometheus, counter_query(metric, None), model) == pytest.approx(
            expected[metric], abs=1e-12
        )
        # The gate's default (a window, and the single-replica gauge as a fallback) is close.
        assert _query(prometheus, value_query(metric, "5m"), model) == pytest.approx(
            expected[metric], abs=0.02
        )
    assert _query(prometheus, samples_query(None, fallback=False), model) == len(y_true)


def test_regression_queries_equal_the_training_functions(two_replicas, prometheus):
    rng = random.Random(5)
    model = f"lq-reg-{rng.randrange(10**6)}"
    y_true = [rng.gauss(100, 30) for _ in range(300)]
    y_pred = [t + rng.gauss(3, 10) for t in y_true]
    _feed(two_replicas, model, None, y_true, y_pred)
    _settle(prometheus, model, len(y_true))
    expected = regression_metrics(y_true, y_pred)
    for metric in ("mae", "rmse", "r2"):
        assert _query(prometheus, counter_query(metric, None), model) == pytest.approx(
            expected[metric], rel=1e-9
        )

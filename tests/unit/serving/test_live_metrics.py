"""Live metrics: sliding windows per version computed like training metrics, one registry per app."""

from __future__ import annotations

from prometheus_client import generate_latest

from airflow_mlops.core.metrics import classification_metrics
from airflow_mlops.serving.client import parse_metrics
from airflow_mlops.serving.live_metrics import LiveMetrics


def test_window_metrics_equal_the_training_metric_functions():
    m = LiveMetrics(window=100)
    y_true = [0, 1, 1, 0, 1, 1, 0, 0, 1, 1]
    y_pred = [0, 1, 0, 0, 1, 1, 1, 0, 1, 0]
    m.observe_feedback("bc", "3", y_true, y_pred, classes=[0, 1])
    expected = classification_metrics(y_true, y_pred, classes=[0, 1])
    live = m.live("bc", "3")
    assert live == {k: expected[k] for k in ("accuracy", "precision", "recall", "f1")} | {"samples": 10.0}
    samples = parse_metrics(generate_latest(m.registry).decode())
    labels = frozenset({("model", "bc"), ("version", "3")})
    assert samples[("mlops_gateway_live_accuracy", labels)] == expected["accuracy"]
    assert samples[("mlops_gateway_live_f1", labels)] == expected["f1"]
    assert samples[("mlops_gateway_live_samples", labels)] == 10
    assert samples[("mlops_gateway_feedback_total", labels)] == 10


def test_window_slides_and_versions_are_separate():
    m = LiveMetrics(window=4)
    m.observe_feedback("bc", "1", [0, 0, 0, 0], [1, 1, 1, 1], classes=[0, 1])
    m.observe_feedback("bc", "1", [1, 1, 1, 1], [1, 1, 1, 1], classes=[0, 1])
    m.observe_feedback("bc", "2", [1], [0], classes=[0, 1])
    assert m.live("bc", "1")["accuracy"] == 1.0 and m.live("bc", "1")["samples"] == 4
    assert m.live("bc", "2")["accuracy"] == 0.0
    m.forget("bc", keep=["1"])
    assert m.live("bc", "2") == {}


def test_regression_feedback_is_counted_without_live_quality():
    m = LiveMetrics()
    m.observe_feedback("reg", "1", [1.5, 2.0], [1.4, 2.2], classes=None)
    assert m.live("reg", "1") == {}
    text = generate_latest(m.registry).decode()
    assert 'mlops_gateway_feedback_total{model="reg",version="1"} 2.0' in text


def test_each_instance_has_its_own_registry_and_contract_names():
    a, b = LiveMetrics(), LiveMetrics()
    a.requests.labels("bc", "1", "200").inc()
    a.latency.labels("bc", "1").observe(0.002)
    a.set_routes("bc", {"3": 0.9, "4": 0.1}, "3", previous=["2"])
    text = generate_latest(a.registry).decode()
    for name in (
        'mlops_gateway_requests_total{model="bc",status="200",version="1"} 1.0',
        'mlops_gateway_request_latency_seconds_bucket{le="0.0025",model="bc",version="1"} 1.0',
        'mlops_gateway_route_weight{model="bc",version="4"} 0.1',
        'mlops_gateway_route_weight{model="bc",version="2"} 0.0',
        'mlops_gateway_champion_version{model="bc"} 3.0',
    ):
        assert name in text, name
    assert "mlops_gateway_requests_total{" not in generate_latest(b.registry).decode()

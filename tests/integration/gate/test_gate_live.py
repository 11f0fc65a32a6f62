"""Online gates on a real Prometheus scraping a prometheus-client exporter, the metrics_url source, the
PrometheusHook, and the trigger driven with asyncio."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from airflow_mlops.core.errors import MlopsInputError, MlopsServiceError
from airflow_mlops.core.gate import FAILED, PASSED, PENDING, run_gate
from airflow_mlops.core.promql import PromClient, PromQLEmptyResult
from airflow_mlops.core.tracking import MlflowTarget
from tests.integration.gate.conftest import gate_tags

pytestmark = pytest.mark.timeout(300)


def wait_value(prometheus, promql: str, expected: float, timeout: float = 30.0) -> None:
    """Wait until Prometheus has scraped ``expected`` for ``promql``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = prometheus.query(promql)
        if result and float(result[0]["value"][1]) == expected:
            return
        time.sleep(0.3)
    raise TimeoutError(f"{promql} never became {expected}")


ONLINE = {
    "name": "canary",
    "source": {"kind": "prometheus"},
    "rules": [{"metric": "f1", "min": 0.8, "min_change": -0.02, "min_samples": 50}],
}


def test_prometheus_hook_numbers_and_errors(scraped_exporter, prometheus, prometheus_conn, monkeypatch):
    from airflow_mlops.hooks.prometheus import PrometheusHook

    scraped_exporter.set("hook", "1", samples=7, f1=0.5)
    wait_value(prometheus, 'mlops_gateway_live_f1{model="hook"}', 0.5)
    hook = PrometheusHook()
    assert hook.query_value('mlops_gateway_live_f1{model="hook",version="1"}') == 0.5
    assert hook.query_value('sum(mlops_gateway_live_samples{model="hook"}) * 2') == 14
    assert hook.test_connection() == (True, "Prometheus answered")
    with pytest.raises(MlopsInputError, match="parse error"):
        hook.query_value('mlops_gateway_live_f1{model="hook"')
    with pytest.raises(PromQLEmptyResult, match="returned no series"):
        hook.query_value('mlops_gateway_live_f1{model="nobody"}')
    with pytest.raises(MlopsInputError, match="returns a matrix"):
        hook.query('mlops_gateway_live_f1{model="hook"}[1m]')
    scraped_exporter.set("hook", "2", f1=0.6)
    wait_value(prometheus, 'mlops_gateway_live_f1{model="hook",version="2"}', 0.6)
    with pytest.raises(MlopsInputError, match="returned 2 series"):
        hook.query_value('mlops_gateway_live_f1{model="hook"}')
    with pytest.raises(MlopsServiceError, match="cannot be reached"):
        PromClient("http://127.0.0.1:9", timeout=2).query("1")
    monkeypatch.setenv(
        "AIRFLOW_CONN_PROMETHEUS_DOWN", '{"conn_type": "prometheus", "host": "127.0.0.1", "port": 9}'
    )
    ok, message = PrometheusHook("prometheus_down").test_connection()
    assert not ok and "cannot be reached" in message


def test_online_gate_waits_for_samples_then_passes(
    scraped_exporter, prometheus, live_model, mlflow_server, mlflow_client
):
    scraped_exporter.set(live_model, "1", samples=500, f1=0.90)
    scraped_exporter.set(live_model, "2", samples=10, f1=0.95)
    wait_value(prometheus, f'mlops_gateway_live_samples{{model="{live_model}",version="2"}}', 10)
    target = MlflowTarget(mlflow_server)
    client = PromClient(prometheus.url)
    pending = run_gate(ONLINE, live_model, "2", target, prometheus=client)
    assert pending.status == PENDING, pending.table()
    assert any("fewer than 50" in r.reason for r in pending.rows)
    scraped_exporter.set(live_model, "2", samples=80, f1=0.89)
    wait_value(prometheus, f'mlops_gateway_live_samples{{model="{live_model}",version="2"}}', 80)
    passed = run_gate(ONLINE, live_model, "2", target, prometheus=client)
    assert passed.status == PASSED, passed.table()
    change = next(r for r in passed.rows if r.check == "min_change")
    assert change.baseline == pytest.approx(0.90) and change.observed == pytest.approx(-0.01)
    assert gate_tags(mlflow_client, live_model, "2") == {}


def test_online_gate_missing_series_is_never_a_pass(prometheus, live_model, mlflow_server):
    spec = {**ONLINE, "rules": [{"metric": "f1", "min": 0.1}]}
    verdict = run_gate(
        spec, live_model, "2", MlflowTarget(mlflow_server), prometheus=PromClient(prometheus.url)
    )
    assert verdict.status == PENDING
    assert "no series" in verdict.rows[0].reason


def test_online_gate_custom_query_lower_is_better_and_bad_promql(
    scraped_exporter, prometheus, live_model, mlflow_server
):
    scraped_exporter.set(live_model, "2", samples=100, recall=0.3)
    wait_value(prometheus, f'mlops_gateway_live_recall{{model="{live_model}",version="2"}}', 0.3)
    # An error rate derived with PromQL: lower is better, and 0.7 is above the allowed maximum.
    spec = {"name": "err", "source": {"kind": "prometheus", "url": prometheus.url}, "rules": [
        {"metric": "error_rate", "max": 0.5, "min_samples": 50,
         "query": '1 - mlops_gateway_live_recall{model="{model}",version="{version}"}'}]}  # fmt: skip
    verdict = run_gate(spec, live_model, "2", MlflowTarget(mlflow_server))
    assert verdict.status == FAILED, verdict.table()
    assert verdict.failures()[0].candidate == pytest.approx(0.7)
    bad = {**spec, "rules": [{**spec["rules"][0], "query": "1 - mlops_gateway_live_recall{model=}"}]}
    with pytest.raises(MlopsInputError, match="Prometheus rejected the query"):
        run_gate(bad, live_model, "2", MlflowTarget(mlflow_server))


def test_metrics_url_source_reads_the_page_directly(exporter, live_model, mlflow_server):
    spec = {
        "name": "embedded",
        "source": {"kind": "metrics_url", "url": exporter.url},
        "rules": [{"metric": "f1", "min": 0.8, "min_change": -0.02, "min_samples": 50}],
    }
    target = MlflowTarget(mlflow_server)
    assert run_gate(spec, live_model, "2", target).status == PENDING  # nothing exported yet
    exporter.set(live_model, "1", samples=300, f1=0.91)
    exporter.set(live_model, "2", samples=20, f1=0.99)
    assert run_gate(spec, live_model, "2", target).status == PENDING
    exporter.set(live_model, "2", samples=60, f1=0.85)
    verdict = run_gate(spec, live_model, "2", target)
    assert verdict.status == FAILED
    assert [r.check for r in verdict.failures()] == ["min_change"]
    down = {**spec, "source": {"kind": "metrics_url", "url": "http://127.0.0.1:9/metrics", "timeout": 2}}
    with pytest.raises(MlopsServiceError, match="cannot be read"):
        run_gate(down, live_model, "2", target)


def test_trigger_serializes_and_decides_when_evidence_arrives(
    scraped_exporter, prometheus, prometheus_conn, mlflow_conn, live_model
):
    from airflow_mlops.triggers.validation_gate import ValidationGateTrigger

    scraped_exporter.set(live_model, "1", samples=500, f1=0.9)
    scraped_exporter.set(live_model, "2", samples=5, f1=0.91)
    wait_value(prometheus, f'mlops_gateway_live_samples{{model="{live_model}",version="2"}}', 5)
    trigger = ValidationGateTrigger(ONLINE, live_model, "2", end_time=time.time() + 60, poll_interval=0.5)
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_mlops.triggers.validation_gate.ValidationGateTrigger"
    again = ValidationGateTrigger(**kwargs)
    assert again.serialize() == (classpath, kwargs)
    # The canary collects enough labelled samples two seconds later.
    threading.Timer(2.0, scraped_exporter.set, args=(live_model, "2"), kwargs={"samples": 100}).start()

    async def first_event():
        return await asyncio.wait_for(again.run().__anext__(), timeout=60)

    started = time.monotonic()
    event = asyncio.run(first_event())
    assert event.payload["status"] == "decided", event.payload
    assert event.payload["verdict"]["status"] == "passed"
    assert time.monotonic() - started >= 2.0


def test_trigger_times_out_and_reports_bad_input(prometheus, prometheus_conn, mlflow_conn, live_model):
    from airflow_mlops.triggers.validation_gate import ValidationGateTrigger

    async def first_event(trigger):
        return await asyncio.wait_for(trigger.run().__anext__(), timeout=60)

    pending = ValidationGateTrigger(ONLINE, live_model, "2", end_time=time.time() + 1.5, poll_interval=0.5)
    event = asyncio.run(first_event(pending))
    assert event.payload["status"] == "timeout"
    assert event.payload["verdict"]["status"] == "pending"
    bad_spec = {**ONLINE, "rules": [{"metric": "f1", "min": 0.5, "query": "rate(x[1m]"}]}
    bad = ValidationGateTrigger(bad_spec, live_model, "2", end_time=time.time() + 30, poll_interval=0.5)
    event = asyncio.run(first_event(bad))
    assert event.payload["status"] == "error" and event.payload["error_type"] == "input"
    assert "parse error" in event.payload["message"]

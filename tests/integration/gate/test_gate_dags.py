"""ValidationGateSensor end to end with dag.test(): pass, fail at once, soft_fail skipping the deploy,
bad input, and the deferrable path on live Prometheus metrics (the trigger runs inline)."""

from __future__ import annotations

import time
import uuid

import pytest

from tests.conftest import run_dag
from tests.integration.gate.conftest import gate_tags, make_version

pytestmark = pytest.mark.timeout(400)


@pytest.fixture(scope="module")
def models(mlflow_server):
    """Version 1: a majority-class dummy; version 2: logistic regression."""
    name = f"dag-gate-{uuid.uuid4().hex[:6]}"
    make_version(mlflow_server, name, "sklearn.dummy.DummyClassifier", {"strategy": "prior"})
    make_version(mlflow_server, name, "sklearn.linear_model.LogisticRegression", {"max_iter": 500})
    return name


class _OnFetch:
    """A collector on the exporter that calls ``action`` at the ``n``-th fetch of its page."""

    def __init__(self, n: int, action) -> None:
        self.n, self.action, self.calls = n, action, 0

    def describe(self) -> list:
        return []

    def collect(self) -> list:
        self.calls += 1
        if self.calls == self.n:
            self.action()
        return []


def states(dr) -> dict[str, str]:
    return {
        ti.task_id: str(ti.state.value if hasattr(ti.state, "value") else ti.state)
        for ti in dr.get_task_instances()
    }


def ti_of(dr, task_id: str):
    return next(t for t in dr.get_task_instances() if t.task_id == task_id)


SPEC = {"name": "offline", "rules": [{"metric": "f1", "min": 0.9, "min_change": 0.0}]}


def test_passing_gate_tags_returns_verdict_and_deploys(airflow_db, mlflow_conn, mlflow_client, models):
    mlflow_client.set_registered_model_alias(models, "champion", "1")
    dr = run_dag("test_gate_offline", model_name=models, version="2", spec=SPEC)
    assert dr.state == "success", states(dr)
    assert states(dr) == {"gate": "success", "deploy": "success"}
    verdict = ti_of(dr, "gate").xcom_pull(task_ids="gate")
    assert verdict["status"] == "passed" and verdict["baseline_version"] == "1"
    assert ti_of(dr, "deploy").xcom_pull(task_ids="deploy") == "deployed v2"
    assert gate_tags(mlflow_client, models, "2")["mlops.gate.offline"] == "passed"


def test_failed_gate_fails_at_once(airflow_db, mlflow_conn, mlflow_client, models):
    mlflow_client.set_registered_model_alias(models, "champion", "2")
    started = time.monotonic()
    dr = run_dag("test_gate_offline", model_name=models, version="1", spec={**SPEC, "name": "hard"})
    assert dr.state == "failed"
    assert states(dr) == {"gate": "failed", "deploy": "upstream_failed"}
    assert time.monotonic() - started < 30  # the sensor's timeout: a decided failure is not re-poked
    assert gate_tags(mlflow_client, models, "1")["mlops.gate.hard"] == "failed"


def test_soft_fail_skips_the_gate_and_the_deploy(airflow_db, mlflow_conn, mlflow_client, models):
    mlflow_client.set_registered_model_alias(models, "champion", "2")
    dr = run_dag("test_gate_soft_fail", model_name=models, version="1", spec={**SPEC, "name": "soft"})
    assert states(dr) == {"gate": "skipped", "deploy": "skipped"}
    assert ti_of(dr, "gate").xcom_pull(task_ids="gate", key="verdict")["status"] == "failed"
    assert gate_tags(mlflow_client, models, "1")["mlops.gate.soft"] == "failed"


def test_bad_input_fails_even_with_soft_fail_and_tags_nothing(airflow_db, mlflow_conn, mlflow_client, models):
    before = dict(mlflow_client.get_registered_model(models).aliases)
    spec = {
        "name": "badspec",
        "rules": [{"metric": "f1", "min": 0.9, "max": 0.5}],
        "promote_alias": "challenger",
    }
    dr = run_dag("test_gate_soft_fail", model_name=models, version="2", spec=spec)
    assert states(dr)["gate"] == "failed"
    assert "mlops.gate.badspec" not in gate_tags(mlflow_client, models, "2")
    assert dict(mlflow_client.get_registered_model(models).aliases) == before


def test_deferrable_gate_waits_in_the_trigger(airflow_db, mlflow_conn, mlflow_client, exporter, live_model):
    """The gate reads the exporter's page (metrics_url); its first check, before deferring, is pending."""
    name = live_model
    exporter.set(name, "1", samples=400, f1=0.9)
    exporter.set(name, "2", samples=3, f1=0.93)
    # Labelled traffic reaches the canary only after the gate's first look (made before deferring):
    # a pass therefore proves the trigger re-evaluated it.
    fetches = _OnFetch(2, lambda: exporter.set(name, "2", samples=120))
    exporter.registry.register(fetches)
    spec = {"name": "canary", "source": {"kind": "metrics_url", "url": exporter.url},
            "rules": [{"metric": "f1", "min": 0.85, "min_change": -0.01, "min_samples": 50}]}  # fmt: skip
    dr = run_dag("test_gate_deferrable", model_name=name, version="2", spec=spec)
    assert dr.state == "success", states(dr)
    assert states(dr) == {"gate": "success", "deploy": "success"}
    assert fetches.calls >= 3
    assert ti_of(dr, "gate").xcom_pull(task_ids="gate")["status"] == "passed"
    assert gate_tags(mlflow_client, name, "2")["mlops.gate.canary"] == "passed"
    assert mlflow_client.get_registered_model(name).aliases["challenger"] == "2"

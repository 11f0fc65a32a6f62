"""Analysed gates against real parts: the deferrable sensor with dag.test() (measurements in the trigger,
the history in XCom and the details tag, the inconclusive outcome routed by a branch), source errors from
a real Prometheus (down, a rejected query), a NaN gauge, the trigger's serialization, and the CLI."""

from __future__ import annotations

import asyncio
import json
import math
import time

import pytest

from airflow_mlops.core.gate import ERROR, INCONCLUSIVE, PASSED, PENDING, run_analysis
from airflow_mlops.core.gate.evaluate import next_measurement
from airflow_mlops.core.promql import PromClient
from airflow_mlops.core.tracking import MlflowTarget
from tests.conftest import run_dag
from tests.integration.gate.conftest import gate_tags
from tests.integration.gate.test_gate_dags import states, ti_of

pytestmark = pytest.mark.timeout(300)


def analysed(url: str, name: str = "canary", **settings) -> dict:
    rule = {"metric": "f1", "min": 0.85, "min_samples": 50, "count": 3, "interval": 1, **settings}
    return {"name": name, "baseline": "none", "source": {"kind": "metrics_url", "url": url}, "rules": [rule]}


def test_analysis_passes_in_the_trigger_with_its_history(
    airflow_db, mlflow_conn, mlflow_client, exporter, live_model
):
    exporter.set(live_model, "2", samples=120, f1=0.9)
    started = time.monotonic()
    dr = run_dag("test_gate_analysis", model_name=live_model, version="2", spec=analysed(exporter.url))
    assert states(dr) == {"gate": "success", "deploy": "success", "route": "success", "promote": "success",
                          "approve": "skipped", "rollback": "skipped"}  # fmt: skip
    assert time.monotonic() - started >= 2  # three measurements one second apart
    gate = ti_of(dr, "gate")
    assert gate.xcom_pull(task_ids="gate", key="outcome") == "passed"
    verdict = gate.xcom_pull(task_ids="gate")
    f1 = verdict["analysis"]["rules"]["f1"]
    assert (f1["count"], f1["successful"], len(f1["measurements"])) == (3, 3, 3)
    gaps = [b["at"] - a["at"] for a, b in zip(f1["measurements"], f1["measurements"][1:], strict=False)]
    assert all(g >= 0.9 for g in gaps), gaps
    tags = gate_tags(mlflow_client, live_model, "2")
    assert tags["mlops.gate.canary"] == "passed"
    assert json.loads(tags["mlops.gate.canary.details"])["analysis"]["rules"]["f1"]["successful"] == 3
    assert mlflow_client.get_registered_model(live_model).aliases["challenger"] == "2"


def test_inconclusive_skips_the_deploy_and_routes_to_a_human(
    airflow_db, mlflow_conn, mlflow_client, exporter, live_model
):
    exporter.set(live_model, "2", samples=120, f1=0.8)  # under min 0.85, over fail_below 0.7
    spec = analysed(exporter.url, name="pause", fail_below=0.7, count=2)
    dr = run_dag("test_gate_analysis", model_name=live_model, version="2", spec=spec)
    assert states(dr) == {"gate": "skipped", "deploy": "skipped", "route": "success", "promote": "skipped",
                          "approve": "success", "rollback": "skipped"}  # fmt: skip
    gate = ti_of(dr, "gate")
    assert gate.xcom_pull(task_ids="gate", key="outcome") == INCONCLUSIVE
    assert gate.xcom_pull(task_ids="gate", key="verdict")["status"] == INCONCLUSIVE
    assert gate_tags(mlflow_client, live_model, "2")["mlops.gate.pause"] == INCONCLUSIVE
    assert "challenger" not in mlflow_client.get_registered_model(live_model).aliases


def test_failed_analysis_routes_to_rollback(airflow_db, mlflow_conn, mlflow_client, exporter, live_model):
    exporter.set(live_model, "2", samples=120, f1=0.5)
    dr = run_dag("test_gate_analysis", model_name=live_model, version="2", spec=analysed(exporter.url, "bad"))
    assert states(dr)["gate"] == "failed" and states(dr)["rollback"] == "success"
    assert ti_of(dr, "gate").xcom_pull(task_ids="gate", key="outcome") == "failed"


def test_real_prometheus_down_query_error_and_nan(scraped_exporter, prometheus, live_model, mlflow_server):
    target = MlflowTarget(mlflow_server)
    spec = {"name": "live", "baseline": "none", "source": {"kind": "prometheus"},
            "rules": [{"metric": "f1", "min": 0.8, "count": 2, "interval": 60, "consecutive_error_limit": 1}]}  # fmt: skip
    down = PromClient("http://127.0.0.1:9", timeout=2)
    v = run_analysis(spec, live_model, "2", target, prometheus=down, now=0.0)
    assert v.status == PENDING and v.analysis["rules"]["f1"]["consecutive_error"] == 1
    assert "cannot be reached" in v.rows[0].reason
    v = run_analysis(
        spec, live_model, "2", target, prometheus=down, state=v.analysis, now=next_measurement(spec, v)
    )
    assert v.status == ERROR, v.table()
    assert "ERROR" in v.summary() and "cannot be reached" in v.summary()
    # A query Prometheus rejects is an error measurement too; a good one resets the streak.
    bad = {**spec, "rules": [{**spec["rules"][0], "query": "mlops_gateway_live_f1{model=}"}]}
    v = run_analysis(bad, live_model, "2", target, prometheus=PromClient(prometheus.url), now=0.0)
    assert v.analysis["rules"]["f1"]["error"] == 1 and "rejected the query" in v.rows[0].reason
    # A NaN gauge (live metric undefined) is inconclusive, not an input error.
    scraped_exporter.set(live_model, "2", samples=100, f1=math.nan)
    query = f'mlops_gateway_live_f1{{model="{live_model}",version="2"}}'
    deadline = time.monotonic() + 30
    while not (r := prometheus.query(query)) or r[0]["value"][1] != "NaN":
        assert time.monotonic() < deadline, "Prometheus never scraped the NaN"
        time.sleep(0.3)
    nan = {**spec, "rules": [{**spec["rules"][0], "query": query}]}
    v = run_analysis(nan, live_model, "2", target, prometheus=PromClient(prometheus.url), now=0.0)
    assert v.status == INCONCLUSIVE, v.table()
    assert "NaN" in v.rows[0].reason


def test_trigger_keeps_the_history_across_measurements(mlflow_conn, exporter, live_model):
    from airflow_mlops.triggers.validation_gate import ValidationGateTrigger

    exporter.set(live_model, "2", samples=120, f1=0.9)
    spec = analysed(exporter.url, count=3, interval=0.5)
    first = run_analysis(spec, live_model, "2", MlflowTarget(mlflow_conn))
    assert first.status == PENDING and first.analysis["rules"]["f1"]["count"] == 1
    trigger = ValidationGateTrigger(spec, live_model, "2", end_time=time.time() + 60, poll_interval=0.5,
                                    analysis=first.analysis)  # fmt: skip
    classpath, kwargs = trigger.serialize()
    assert kwargs["analysis"] == first.analysis
    again = ValidationGateTrigger(**json.loads(json.dumps(kwargs)))
    assert again.serialize() == (classpath, kwargs)

    async def first_event():
        return await asyncio.wait_for(again.run().__anext__(), timeout=60)

    event = asyncio.run(first_event())
    assert event.payload["status"] == "decided"
    f1 = event.payload["verdict"]["analysis"]["rules"]["f1"]
    assert event.payload["verdict"]["status"] == PASSED and f1["count"] == 3
    assert f1["measurements"][0] == first.analysis["rules"]["f1"]["measurements"][0]
    # serialize() now carries the history as it stands, so a rebuilt trigger would continue it.
    assert again.serialize()[1]["analysis"]["rules"]["f1"]["count"] == 3


def test_cli_exits_3_on_inconclusive_and_tags_it(
    tmp_path, exporter, live_model, mlflow_server, mlflow_client, capsys
):
    from airflow_mlops.cli import EXIT_INCONCLUSIVE, main

    exporter.set(live_model, "2", samples=120, f1=0.8)
    path = tmp_path / "gate.json"
    path.write_text(json.dumps(analysed(exporter.url, name="cli", fail_below=0.7, count=2, interval=0.2)))
    code = main(["gate", "--spec", str(path), "--model", live_model, "--version", "2",
                 "--tracking-uri", mlflow_server])  # fmt: skip
    out = capsys.readouterr().out
    assert code == EXIT_INCONCLUSIVE, out
    assert "Analysis -> INCONCLUSIVE" in out and "INCONCLUSIVE" in out
    assert gate_tags(mlflow_client, live_model, "2")["mlops.gate.cli"] == INCONCLUSIVE

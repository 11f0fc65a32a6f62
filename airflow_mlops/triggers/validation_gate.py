"""ValidationGateTrigger: waits in the triggerer until a gate's verdict is decided (or time runs out).

It runs the very evaluation the sensor's ``poke`` runs
(:func:`airflow_mlops.sensors.validation_gate.evaluate_gate`), in a thread. Live sources use MLflow
clients whose stores carry their connection's credentials: no process-wide state is touched.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_mlops.sensors.validation_gate import evaluate_gate
from airflow_mlops.triggers.events import error_event

if TYPE_CHECKING:
    from airflow_mlops.core.gate import Verdict


class ValidationGateTrigger(BaseTrigger):
    """Re-evaluate a gate every ``poll_interval`` seconds until it is decided or ``end_time`` passes.

    An analysed gate (rules with ``interval``, ``count``, ...) sleeps until its next measurement is due
    instead, and keeps the measurement history across measurements: :meth:`serialize` returns it as it
    stands, so a trigger rebuilt from it continues the analysis.

    Events: ``{"status": "decided", "verdict": {...}}``, ``{"status": "timeout", "verdict": {...}}`` (the
    last, still pending verdict) or ``{"status": "error", "error_type": "input"|"service"|"other",
    "message": ...}``.

    :param spec: the gate spec as a JSON-able mapping.
    :param model_name: registered model name.
    :param version: candidate version.
    :param end_time: epoch seconds after which the wait ends with a timeout event.
    :param poll_interval: seconds between evaluations.
    :param mlflow_conn_id: MLflow connection.
    :param prometheus_conn_id: Prometheus connection.
    :param dvc_conn_id: DVC connection.
    :param analysis: the measurement history so far (analysed gates).
    """

    def __init__(
        self,
        spec: dict[str, Any],
        model_name: str,
        version: str,
        end_time: float,
        poll_interval: float = 60.0,
        mlflow_conn_id: str = "mlflow_default",
        prometheus_conn_id: str = "prometheus_default",
        dvc_conn_id: str = "dvc_default",
        analysis: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.model_name = model_name
        self.version = str(version)
        self.end_time = float(end_time)
        self.poll_interval = float(poll_interval)
        self.mlflow_conn_id = mlflow_conn_id
        self.prometheus_conn_id = prometheus_conn_id
        self.dvc_conn_id = dvc_conn_id
        self.analysis = analysis

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Classpath and every constructor argument."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "spec": self.spec,
                "model_name": self.model_name,
                "version": self.version,
                "end_time": self.end_time,
                "poll_interval": self.poll_interval,
                "mlflow_conn_id": self.mlflow_conn_id,
                "prometheus_conn_id": self.prometheus_conn_id,
                "dvc_conn_id": self.dvc_conn_id,
                "analysis": self.analysis,
            },
        )

    def _evaluate(self) -> Verdict:
        verdict = evaluate_gate(
            self.spec,
            self.model_name,
            self.version,
            mlflow_conn_id=self.mlflow_conn_id,
            prometheus_conn_id=self.prometheus_conn_id,
            dvc_conn_id=self.dvc_conn_id,
            analysis=self.analysis,
        )
        self.analysis = verdict.analysis
        return verdict

    def _wait(self, first: bool) -> float:
        """Seconds until the next evaluation: the poll interval, or the next due measurement of an
        analysed gate (the first wait is at least the poll interval), never past ``end_time``."""
        now = time.time()
        wait = self.poll_interval
        if self.analysis is not None:
            from airflow_mlops.core.gate import load_spec
            from airflow_mlops.core.gate.analysis import Analysis

            gate = load_spec(self.spec)
            due = Analysis.from_dict(self.analysis, gate).next_due(gate)
            wait = self.poll_interval if due is None else max(0.0, due - now)
            if first:
                wait = max(wait, self.poll_interval)
        return min(wait, max(0.0, self.end_time - now))

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Evaluate (in a thread: MLflow and Prometheus clients block) until decided or timed out.

        The sensor evaluated just before deferring, so the first evaluation here waits one interval. That
        also keeps an event from arriving before the scheduler has processed the deferring try's exit
        (apache/airflow#72716: a resumed task is failed on that stale event).
        """
        first = True
        while True:
            await asyncio.sleep(self._wait(first))
            first = False
            try:
                verdict = await asyncio.to_thread(self._evaluate)
            except Exception as e:  # noqa: BLE001 - reported to the task, which fails with it
                yield error_event(e)
                return
            self.log.info("%s", verdict.table())
            if verdict.decided:
                yield TriggerEvent({"status": "decided", "verdict": verdict.to_dict()})
                return
            if time.time() >= self.end_time:
                yield TriggerEvent({"status": "timeout", "verdict": verdict.to_dict()})
                return

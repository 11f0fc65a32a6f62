"""DriftTrigger: waits in the triggerer until the current data of a drift check changes.

The triggerer only polls a cheap condition (:func:`~airflow_mlops.core.drift.evaluate.source_state`: a
file listing and Parquet footers' row counts, in a thread); the statistics run in the worker when the
sensor resumes (:meth:`~airflow_mlops.sensors.drift.DriftSensor.execute_complete`). Nothing here reads
data, talks to MLflow or touches process-wide state.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_mlops.triggers.events import error_event


class DriftTrigger(BaseTrigger):
    """Poll the current data every ``poll_interval`` seconds until it changed (and has rows) or
    ``end_time`` passes.

    Events: ``{"status": "new_data", "state": {...}}`` (the sensor re-checks drift in the worker),
    ``{"status": "timeout", "state": {...}}`` or ``{"status": "error", "error_type": ..., "message": ...}``.

    :param spec: the evaluation spec (JSON-able; only its ``current`` part and ``model_name`` are used).
    :param end_time: epoch seconds after which the wait ends with a timeout event.
    :param poll_interval: seconds between polls.
    :param last_state: the source state at the last check (None: any data counts as new).
    """

    def __init__(
        self,
        spec: dict[str, Any],
        end_time: float,
        poll_interval: float = 300.0,
        last_state: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.end_time = float(end_time)
        self.poll_interval = float(poll_interval)
        self.last_state = last_state

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Classpath and every constructor argument."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "spec": self.spec,
                "end_time": self.end_time,
                "poll_interval": self.poll_interval,
                "last_state": self.last_state,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll (a file listing in a thread: disks block) until new data or timeout."""
        from airflow_mlops.core.drift.evaluate import has_new_data, source_state

        while True:
            await asyncio.sleep(min(self.poll_interval, max(0.0, self.end_time - time.time())))
            try:
                state = await asyncio.to_thread(source_state, self.spec)
            except Exception as e:  # noqa: BLE001 - reported to the task, which fails with it
                yield error_event(e)
                return
            if has_new_data(state, self.last_state):
                yield TriggerEvent({"status": "new_data", "state": state})
                return
            if time.time() >= self.end_time:
                yield TriggerEvent({"status": "timeout", "state": state})
                return

"""DeployStepTrigger: watches a held rollout stage in the triggerer, so no worker slot sleeps through it.

For the stage's hold time it polls the gateway's ``/health`` and ``/ready`` (bounded-timeout async
HTTP), then compares the new version's request and 5xx counts on ``/metrics`` with the counts at the
start of the stage. It holds no secret (none of these endpoints needs the admin token) and no global
state; the deferred task judges the event (:meth:`airflow_mlops.deploy.rollout.Deployer.finish_stage`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_mlops.triggers.events import error_event


class DeployStepTrigger(BaseTrigger):
    """Hold a rollout stage until ``end_time`` while the gateway stays healthy.

    Events: ``{"status": "ok", "stage": i, "version": v}``, ``{"status": "failed", "reason": ...,
    "stage": i, "version": v}``, or an error event (:func:`~airflow_mlops.triggers.events.error_event`).

    :param endpoint: the gateway's base URL.
    :param model_name: registered model name.
    :param version: the new version, whose error rate counts.
    :param stage: index of the held stage (echoed in the event).
    :param end_time: epoch seconds when the hold ends (fixed at deferral: a restarted triggerer does
        not extend it).
    :param max_error_rate: largest share of failed requests of ``version`` in the stage.
    :param min_requests: requests of ``version`` needed before the rate counts.
    :param baseline: ``{status: count}`` of ``version`` when the stage began.
    :param poll_interval: seconds between health checks.
    :param request_timeout: seconds per HTTP call.
    :param not_before: epoch seconds before which no event is sent, failures included (see
        :data:`~airflow_mlops.operators.deploy.DEFER_FLOOR_SECONDS`: an event right after the deferral
        lets Airflow's scheduler fail the resumed task).
    """

    def __init__(
        self,
        endpoint: str,
        model_name: str,
        version: str,
        stage: int,
        end_time: float,
        max_error_rate: float,
        min_requests: int,
        baseline: dict[str, float] | None = None,
        poll_interval: float = 2.0,
        request_timeout: float = 5.0,
        not_before: float = 0.0,
    ) -> None:
        super().__init__()
        self.endpoint = endpoint.rstrip("/")
        self.model_name = model_name
        self.version = str(version)
        self.stage = int(stage)
        self.end_time = float(end_time)
        self.max_error_rate = float(max_error_rate)
        self.min_requests = int(min_requests)
        self.baseline = {str(k): float(v) for k, v in (baseline or {}).items()}
        self.poll_interval = float(poll_interval)
        self.request_timeout = float(request_timeout)
        self.not_before = float(not_before)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Classpath and every constructor argument."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "endpoint": self.endpoint,
                "model_name": self.model_name,
                "version": self.version,
                "stage": self.stage,
                "end_time": self.end_time,
                "max_error_rate": self.max_error_rate,
                "min_requests": self.min_requests,
                "baseline": self.baseline,
                "poll_interval": self.poll_interval,
                "request_timeout": self.request_timeout,
                "not_before": self.not_before,
            },
        )

    def _event(self, status: str, reason: str | None = None) -> TriggerEvent:
        body: dict[str, Any] = {"status": status, "stage": self.stage, "version": self.version}
        if reason is not None:
            body["reason"] = reason
        return TriggerEvent(body)

    async def _healthy(self, client: Any) -> str | None:
        import httpx

        for path in ("/health", "/ready"):
            try:
                r = await client.get(path)
            except httpx.HTTPError as e:
                return f"the gateway at {self.endpoint} did not answer {path} ({type(e).__name__})"
            if r.status_code != 200:
                return f"the gateway at {self.endpoint} answered {path} with {r.status_code}"
        return None

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll health until the hold ends, then judge the stage's error rate (no event before
        ``not_before``)."""
        event = await self._judge()
        wait = self.not_before - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
        yield event

    async def _judge(self) -> TriggerEvent:
        """The stage's event: failed at the first unhealthy check, else judged on its error rate."""
        import httpx

        from airflow_mlops.deploy.plan import error_rate_problem
        from airflow_mlops.serving.client import request_counts

        try:
            timeout = httpx.Timeout(self.request_timeout, connect=min(3.0, self.request_timeout))
            # trust_env=False: a proxy configured for the internet must never see gateway traffic.
            async with httpx.AsyncClient(base_url=self.endpoint, timeout=timeout, trust_env=False) as client:
                while True:
                    problem = await self._healthy(client)
                    if problem is not None:
                        return self._event("failed", problem)
                    left = self.end_time - time.time()
                    if left <= 0:
                        break
                    await asyncio.sleep(min(self.poll_interval, left))
                try:
                    r = await client.get("/metrics")
                    r.raise_for_status()
                except httpx.HTTPError as e:
                    return self._event("failed", f"the gateway's /metrics failed ({type(e).__name__})")
                after = request_counts(r.text, self.model_name).get(self.version, {})
            problem = error_rate_problem(
                self.baseline, after, self.version, self.max_error_rate, self.min_requests
            )
            return self._event("ok" if problem is None else "failed", problem)
        except Exception as e:  # noqa: BLE001 - reported to the task, which fails with it
            return error_event(e)

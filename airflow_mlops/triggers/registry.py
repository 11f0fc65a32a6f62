"""RegistryEventTrigger: watches an MLflow model registry (new version, alias moved) for an
``AssetWatcher``, where MLflow's webhooks cannot reach Airflow.

Each change becomes one trigger event, whose payload is the registry event of
:mod:`airflow_mlops.core.registry_events` (the same shape the webhook plugin emits); Airflow's triggerer
turns it into an Asset event (extra ``{"from_trigger": true, "payload": <event>}``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from airflow_mlops.core.redact import redact
from airflow_mlops.core.registry_events import ALIAS_CREATED, VERSION_CREATED, diff


class RegistryEventTrigger(BaseEventTrigger):
    """Poll ``model_name`` in the MLflow registry every ``poll_interval`` seconds; yield an event per new
    version and per alias that moved.

    The cursor (the last snapshot seen) is this trigger's own state: kept on the instance and, when the
    triggerer gives the watcher an asset state store, in that store too, so a restarted triggerer
    resumes from it instead of missing what happened meanwhile. With no cursor yet, the first poll
    only records the registry as it is (nothing fires for versions that existed before).

    Nothing process-wide is touched: the MLflow client carries its connection's credentials, and
    every registry call runs in a thread bounded by ``request_timeout``. A failed poll is logged
    (redacted) and retried at the next interval: a watcher outlives an MLflow outage.

    :param model_name: the registered model.
    :param mlflow_conn_id: MLflow connection.
    :param poll_interval: seconds between polls.
    :param events: which changes fire: ``model_version.created``, ``model_version_alias.created``.
    :param aliases: only these aliases fire (default: any).
    :param request_timeout: seconds a poll may take before it counts as failed.
    """

    def __init__(
        self,
        model_name: str,
        mlflow_conn_id: str = "mlflow_default",
        poll_interval: float = 30.0,
        events: list[str] | tuple[str, ...] = (VERSION_CREATED, ALIAS_CREATED),
        aliases: list[str] | tuple[str, ...] | None = None,
        request_timeout: float = 20.0,
    ) -> None:
        super().__init__()
        unknown = set(events) - {VERSION_CREATED, ALIAS_CREATED}
        if unknown:
            raise ValueError(
                f"events {sorted(unknown)} cannot be polled: use {VERSION_CREATED!r} and/or {ALIAS_CREATED!r} "
                "(tag changes reach Airflow only through the webhook plugin)."
            )
        if poll_interval <= 0 or request_timeout <= 0:
            raise ValueError("poll_interval and request_timeout must be positive seconds, e.g. 30 and 20.")
        self.model_name = model_name
        self.mlflow_conn_id = mlflow_conn_id
        self.poll_interval = float(poll_interval)
        self.events = list(events)
        self.aliases = list(aliases) if aliases is not None else None
        self.request_timeout = float(request_timeout)
        self._cursor: dict[str, Any] | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Classpath and every constructor argument (not the cursor: state, not configuration)."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "model_name": self.model_name,
                "mlflow_conn_id": self.mlflow_conn_id,
                "poll_interval": self.poll_interval,
                "events": self.events,
                "aliases": self.aliases,
                "request_timeout": self.request_timeout,
            },
        )

    @property
    def _state_key(self) -> str:
        return f"mlops.registry_cursor.{self.model_name}"

    def _snapshot(self) -> dict[str, Any]:
        """The registry now (runs in a thread: MLflow's client blocks)."""
        from airflow_mlops.core.gate.evaluate import probe_mlflow
        from airflow_mlops.core.registry_events import snapshot
        from airflow_mlops.hooks.mlflow import MlflowHook

        target = MlflowHook(self.mlflow_conn_id).target
        probe_mlflow(target, timeout=min(5.0, self.request_timeout))
        return snapshot(target.client(), self.model_name)

    def _wanted(self, event: dict[str, Any]) -> bool:
        if event["event"] not in self.events:
            return False
        return event["event"] != ALIAS_CREATED or self.aliases is None or event["alias"] in self.aliases

    async def _load_cursor(self) -> dict[str, Any] | None:
        if self._cursor is not None or self.asset_state_store is None:
            return self._cursor
        try:
            stored = await self.asset_state_store.aget(self._state_key)
        except Exception as e:  # noqa: BLE001 - no stored cursor: start from the registry as it is
            self.log.warning("No stored registry cursor (%s): starting from the registry as it is", redact(e))
            return None
        return stored if isinstance(stored, dict) else None

    async def _save_cursor(self, cursor: dict[str, Any]) -> None:
        self._cursor = cursor
        if self.asset_state_store is None:
            return
        try:
            await self.asset_state_store.aset(self._state_key, cursor)
        except Exception as e:  # noqa: BLE001 - the in-memory cursor still holds
            self.log.warning("Could not store the registry cursor (%s)", redact(e))

    async def poll_once(self) -> list[dict[str, Any]]:
        """One poll: the wanted events since the cursor (none on the very first poll); moves the cursor.

        :raises Exception: the registry could not be read within ``request_timeout``.
        """
        before = await self._load_cursor()
        now = await asyncio.wait_for(asyncio.to_thread(self._snapshot), timeout=self.request_timeout)
        if before is None:
            self.log.info(
                "Watching %s in the MLflow registry from versions %s, aliases %s",
                self.model_name, now["versions"], now["aliases"],
            )  # fmt: skip
        events = [] if before is None else [e for e in diff(self.model_name, before, now) if self._wanted(e)]
        if before != now:
            await self._save_cursor(now)
        else:
            self._cursor = now
        return events

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll forever; one event per change. Failed polls are logged and retried."""
        while True:
            started = time.monotonic()
            try:
                events = await self.poll_once()
            except Exception as e:  # noqa: BLE001 - a watcher survives outages; the next poll retries
                reason = "timed out" if isinstance(e, (asyncio.TimeoutError, TimeoutError)) else redact(e)
                self.log.warning("Polling %s in the MLflow registry failed: %s", self.model_name, reason)
                events = []
            for event in events:
                self.log.info("Registry event: %s", event)
                yield TriggerEvent(event)
            await asyncio.sleep(max(0.0, self.poll_interval - (time.monotonic() - started)))

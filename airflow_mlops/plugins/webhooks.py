"""MLflow webhooks into Airflow: a FastAPI app the api-server mounts (the provider's Airflow plugin).

MLflow (3.3+, SQL backend store) delivers registry events to ``POST <api-server>/mlops/webhooks/mlflow``:
``model_version.created``, ``model_version_alias.created`` and ``model_version_tag.set``. Each delivery's
HMAC signature (``X-MLflow-Signature``: ``v1,`` + base64 HMAC-SHA256 of ``<delivery id>.<timestamp>.<body>``
with the webhook's secret) and timestamp are checked; a good one becomes an Asset event of
``mlops://registry/<model>`` whose extra is the registry event (``event``, ``model``, ``version``,
``alias``, ``key``, ``value``), and a DAG scheduled on that Asset runs.

The secret is the Airflow Variable ``mlops_mlflow_webhook_secret`` or, when unset, the password of the
Airflow connection ``mlflow_webhook`` (secrets backends apply to both). It is never logged or echoed.

Answers: 200 with the Asset event's id; 202 for an event this app does not handle (nothing emitted);
400 for a body that is not MLflow's; 401 for a missing, stale or wrong signature (nothing emitted);
404 when no DAG is scheduled on the model's Asset; 503 when no secret is configured (unsigned
deliveries are never accepted).

The Asset event is made with the function Airflow's ``POST /api/v2/assets/events`` endpoint calls
(``asset_manager.register_asset_change(..., source_is_api=True)``): the same semantics (an existing
Asset only, queued DAG runs, listeners notified), without a second HTTP hop that would need an Airflow
credential stored in the plugin; the webhook's signature is its authentication.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from airflow_mlops.core.registry_events import event_from_webhook, registry_asset_uri, verify_signature

log = logging.getLogger(__name__)

SECRET_VARIABLE = "mlops_mlflow_webhook_secret"
SECRET_CONN_ID = "mlflow_webhook"
URL_PREFIX = "/mlops/webhooks"
# A registry event body is a few hundred bytes; refuse anything much larger before parsing it.
MAX_BODY_BYTES = 256 * 1024

app = FastAPI(
    title="airflow-provider-mlops: MLflow webhooks",
    description="Receives MLflow model-registry webhooks and emits Airflow Asset events.",
)


def webhook_secret() -> str | None:
    """The webhook secret from Airflow (Variable first, then the connection's password); None if unset."""
    from airflow.models.connection import Connection
    from airflow.models.variable import Variable

    secret = Variable.get(SECRET_VARIABLE, default_var=None)
    if secret:
        return str(secret)
    try:
        conn = Connection.get_connection_from_secrets(SECRET_CONN_ID)
    except Exception:  # noqa: BLE001 - AirflowNotFoundException: no connection, so no secret
        return None
    return conn.password or None


def emit_asset_event(event: dict[str, Any]) -> int | None:
    """Record an Asset event of the model's registry Asset, as ``POST /api/v2/assets/events`` does;
    the event's id, or None when no active Asset has that URI (no DAG is scheduled on it)."""
    from airflow._shared.timezones import timezone
    from airflow.assets.manager import asset_manager
    from airflow.models.asset import AssetActive, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    uri = registry_asset_uri(event["model"])
    with create_session() as session:
        asset = session.scalar(
            select(AssetModel)
            .join(AssetActive, (AssetActive.name == AssetModel.name) & (AssetActive.uri == AssetModel.uri))
            .where(AssetModel.uri == uri)
            .limit(1)
        )
        if asset is None:
            return None
        recorded = asset_manager.register_asset_change(
            asset=asset, timestamp=timezone.utcnow(), extra=event, source_is_api=True, session=session
        )
        session.flush()
        return None if recorded is None else int(recorded.id)


def _answer(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": message, **extra})


@app.post("/mlflow")
async def mlflow_webhook(request: Request) -> JSONResponse:
    """One MLflow webhook delivery: verify, then emit the registry Asset event."""
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        return _answer(413, f"body larger than {MAX_BODY_BYTES} bytes: not an MLflow registry event")
    secret = await run_in_threadpool(webhook_secret)
    if not secret:
        log.error("MLflow webhook refused: no secret configured (%s or %s)", SECRET_VARIABLE, SECRET_CONN_ID)
        return _answer(
            503,
            f"no webhook secret configured: set the Airflow Variable {SECRET_VARIABLE} (or the password of "
            f"the connection {SECRET_CONN_ID}) to the MLflow webhook's secret.",
        )
    refused = verify_signature(secret, dict(request.headers), body)
    if refused is not None:
        log.warning("MLflow webhook refused (401): %s", refused)
        return _answer(401, f"signature refused: {refused}")
    try:
        event = event_from_webhook(body)
    except ValueError as e:
        return _answer(400, str(e))
    if event is None:
        return _answer(202, "event not handled (model_version.created, model_version_alias.created and "
                       "model_version_tag.set are): nothing emitted")  # fmt: skip
    event_id = await run_in_threadpool(emit_asset_event, event)
    if event_id is None:
        uri = registry_asset_uri(event["model"])
        log.warning("MLflow webhook for %s: no DAG is scheduled on %s", event["model"], uri)
        return _answer(
            404, f"no DAG is scheduled on Asset {uri!r}: schedule one on it to receive these events"
        )
    log.info("MLflow webhook %s for %s: Asset event %s", event["event"], event["model"], event_id)
    return JSONResponse(status_code=200, content={"asset_uri": registry_asset_uri(event["model"]),
                                                  "asset_event_id": event_id, "event": event})  # fmt: skip

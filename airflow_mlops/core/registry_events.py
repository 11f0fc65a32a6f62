"""Model-registry events for event-driven releases: MLflow webhook deliveries (signature, payload) and
registry snapshots a poller compares (new version, alias moved), both turned into one event shape.

An event is ``{"event": ..., "model": ..., "version": ..., "alias": ..., "key": ..., "value": ...}``
(absent fields left out); ``event`` is MLflow's webhook name (``model_version.created``,
``model_version_alias.created``, ``model_version_tag.set``). It is the extra of the Asset event that
:func:`registry_asset_uri` names, whichever path (webhook or watcher) saw it.

No Airflow import here; MLflow only inside :func:`snapshot`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import MlflowClient

# MLflow's header names and signature version (mlflow.webhooks.constants, MLflow 3.3+).
SIGNATURE_HEADER = "X-MLflow-Signature"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERY_ID_HEADER = "X-MLflow-Delivery-Id"
SIGNATURE_VERSION = "v1"
# Deliveries older (or newer) than this are refused: a captured request cannot be replayed later.
MAX_CLOCK_SKEW_SECONDS = 300

VERSION_CREATED = "model_version.created"
ALIAS_CREATED = "model_version_alias.created"
TAG_SET = "model_version_tag.set"
EVENTS = (VERSION_CREATED, ALIAS_CREATED, TAG_SET)
# The webhook's (entity, action) pairs, as MLflow's payload envelope names them.
_ENVELOPE = {
    ("model_version", "created"): VERSION_CREATED,
    ("model_version_alias", "created"): ALIAS_CREATED,
    ("model_version_tag", "set"): TAG_SET,
}


def registry_asset_uri(model_name: str) -> str:
    """The Asset that registry events of ``model_name`` update (webhook and watcher alike)."""
    return f"mlops://registry/{model_name}"


def sign(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """MLflow's signature of a delivery: ``v1,`` + base64(HMAC-SHA256(secret, "<id>.<timestamp>.<body>")).

    :param secret: the webhook's secret.
    :param delivery_id: the ``X-MLflow-Delivery-Id`` header.
    :param timestamp: the ``X-MLflow-Timestamp`` header (epoch seconds).
    :param body: the request body, byte for byte as received.
    """
    signed = delivery_id.encode() + b"." + timestamp.encode() + b"." + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def verify_signature(
    secret: str,
    headers: dict[str, str],
    body: bytes,
    now: float | None = None,
    max_skew: float = MAX_CLOCK_SKEW_SECONDS,
) -> str | None:
    """Check a delivery's signature and freshness; the reason it is refused, or None when it is good.

    The reason names a header, never the secret or the expected signature.

    :param secret: the webhook's secret.
    :param headers: the request headers (any case).
    :param body: the raw body.
    :param now: epoch seconds (default: now).
    :param max_skew: the largest accepted distance between the delivery's timestamp and ``now``.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    signature = lower.get(SIGNATURE_HEADER.lower())
    delivery_id = lower.get(DELIVERY_ID_HEADER.lower())
    timestamp = lower.get(TIMESTAMP_HEADER.lower())
    if not signature or not delivery_id or not timestamp:
        return f"missing {SIGNATURE_HEADER}, {DELIVERY_ID_HEADER} or {TIMESTAMP_HEADER} header"
    try:
        sent = int(timestamp)
    except ValueError:
        return f"{TIMESTAMP_HEADER} is not epoch seconds"
    if abs((time.time() if now is None else now) - sent) > max_skew:
        return f"{TIMESTAMP_HEADER} is more than {max_skew:.0f}s away from now (a replay, or a wrong clock)"
    expected = sign(secret, delivery_id, timestamp, body)
    # Several signatures may be sent during a secret rotation, space separated.
    if not any(hmac.compare_digest(expected, s) for s in signature.split()):
        return f"{SIGNATURE_HEADER} does not match the body (wrong secret, or a changed body)"
    return None


def event_from_webhook(body: bytes | str | dict[str, Any]) -> dict[str, Any] | None:
    """The registry event of a webhook delivery's body; None for events this provider does not handle.

    :raises ValueError: the body is not MLflow's JSON envelope (``entity``, ``action``, ``data``).
    """
    payload = json.loads(body) if isinstance(body, (bytes, str)) else body
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), dict):
        raise ValueError("not an MLflow webhook payload: expected a JSON object with entity, action and data")
    name = _ENVELOPE.get((str(payload.get("entity")), str(payload.get("action"))))
    if name is None:
        return None
    data = payload["data"]
    if not data.get("name"):
        raise ValueError(f"{name} payload without a model name")
    event: dict[str, Any] = {"event": name, "model": str(data["name"])}
    for key in ("version", "alias", "key", "value"):
        if data.get(key) is not None:
            event[key] = str(data[key])
    if payload.get("timestamp"):
        event["at"] = str(payload["timestamp"])
    return event


def snapshot(client: MlflowClient, model_name: str) -> dict[str, Any]:
    """What a poller compares: the model's version numbers and its aliases (alias -> version).

    A model that does not exist yet has no versions and no aliases.
    """
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(model_name)
    except MlflowException as e:
        if "RESOURCE_DOES_NOT_EXIST" in str(e.error_code):
            return {"versions": [], "aliases": {}}
        raise
    versions = sorted(
        {str(mv.version) for mv in client.search_model_versions(f"name='{_quote(model_name)}'")}, key=int
    )
    aliases = {str(k): str(v) for k, v in (model.aliases or {}).items()}
    return {"versions": versions, "aliases": aliases}


def _quote(name: str) -> str:
    return name.replace("'", "\\'")


def diff(model_name: str, before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    """The events between two snapshots, new versions first (oldest first), then moved aliases.

    An alias that disappears is not an event (MLflow's ``model_version_alias.deleted`` is not handled).
    """
    events: list[dict[str, Any]] = []
    known = set(before.get("versions", []))
    for version in after.get("versions", []):
        if version not in known:
            events.append({"event": VERSION_CREATED, "model": model_name, "version": version})
    old = before.get("aliases", {})
    for alias, version in sorted(after.get("aliases", {}).items()):
        if old.get(alias) != version:
            moved = {"event": ALIAS_CREATED, "model": model_name, "alias": alias, "version": version}
            if old.get(alias) is not None:
                moved["previous_version"] = old[alias]
            events.append(moved)
    return events

"""Registry events: MLflow's webhook signature (checked against MLflow's own signing code), payloads,
and the snapshot diff a poller uses."""

from __future__ import annotations

import json
import time

import pytest

from airflow_mlops.core.registry_events import (
    ALIAS_CREATED,
    TAG_SET,
    VERSION_CREATED,
    diff,
    event_from_webhook,
    registry_asset_uri,
    sign,
    verify_signature,
)


def _delivery(secret: str, body: bytes, ts: int | None = None) -> dict[str, str]:
    """Headers as MLflow's delivery code signs them (mlflow.webhooks.delivery, the real function)."""
    from mlflow.webhooks.delivery import _generate_hmac_signature

    stamp = str(int(time.time()) if ts is None else ts)
    return {
        "X-MLflow-Delivery-Id": "d-1",
        "X-MLflow-Timestamp": stamp,
        "X-MLflow-Signature": _generate_hmac_signature(secret, "d-1", stamp, body.decode()),
    }


BODY = json.dumps(
    {"entity": "model_version", "action": "created", "timestamp": "2026-12-02T00:00:00+00:00",
     "data": {"name": "m", "version": "3", "source": "runs:/r/model", "run_id": "r", "tags": {}}}
).encode()  # fmt: skip


def test_our_signature_is_mlflows_and_a_good_delivery_verifies():
    headers = _delivery("s3cret", BODY)
    assert sign("s3cret", "d-1", headers["X-MLflow-Timestamp"], BODY) == headers["X-MLflow-Signature"]
    assert verify_signature("s3cret", {k.lower(): v for k, v in headers.items()}, BODY) is None


@pytest.mark.parametrize(
    ("secret", "body", "age", "drop", "why"),
    [
        ("wrong", BODY, 0, None, "does not match"),
        ("s3cret", BODY.replace(b'"3"', b'"4"'), 0, None, "does not match"),  # a changed body
        ("s3cret", BODY, 3600, None, "away from now"),  # a replay an hour later
        ("s3cret", BODY, 0, "X-MLflow-Signature", "missing"),
        ("s3cret", BODY, 0, "X-MLflow-Timestamp", "missing"),
    ],
)
def test_bad_deliveries_are_refused_with_a_reason_that_never_shows_the_secret(secret, body, age, drop, why):
    headers = _delivery("s3cret", BODY, int(time.time()) - age)
    good_signature = headers["X-MLflow-Signature"]
    if drop:
        del headers[drop]
    reason = verify_signature(secret, headers, body)
    assert reason is not None and why in reason
    assert "s3cret" not in reason and good_signature not in reason


def test_webhook_payloads_become_registry_events():
    assert event_from_webhook(BODY) == {
        "event": VERSION_CREATED, "model": "m", "version": "3", "at": "2026-12-02T00:00:00+00:00"
    }  # fmt: skip
    alias = {
        "entity": "model_version_alias",
        "action": "created",
        "data": {"name": "m", "alias": "champion", "version": "3"},
    }
    assert event_from_webhook(alias) == {
        "event": ALIAS_CREATED,
        "model": "m",
        "alias": "champion",
        "version": "3",
    }
    tag = {
        "entity": "model_version_tag",
        "action": "set",
        "data": {"name": "m", "version": "3", "key": "k", "value": "v"},
    }
    assert event_from_webhook(tag) == {
        "event": TAG_SET,
        "model": "m",
        "version": "3",
        "key": "k",
        "value": "v",
    }
    assert event_from_webhook({"entity": "prompt", "action": "created", "data": {"name": "p"}}) is None
    with pytest.raises(ValueError, match="not an MLflow webhook payload"):
        event_from_webhook(b"[1, 2]")
    assert registry_asset_uri("m") == "mlops://registry/m"


def test_the_diff_names_new_versions_and_moved_aliases():
    before = {"versions": ["1"], "aliases": {"champion": "1", "old": "1"}}
    after = {"versions": ["1", "2", "3"], "aliases": {"champion": "2", "challenger": "3"}}
    assert diff("m", before, after) == [
        {"event": VERSION_CREATED, "model": "m", "version": "2"},
        {"event": VERSION_CREATED, "model": "m", "version": "3"},
        {"event": ALIAS_CREATED, "model": "m", "alias": "challenger", "version": "3"},
        {"event": ALIAS_CREATED, "model": "m", "alias": "champion", "version": "2", "previous_version": "1"},
    ]
    assert diff("m", after, after) == []

"""The webhook plugin's FastAPI app in this process, on a real (SQLite) Airflow metadata database:
signatures made by MLflow's own signing function, Asset events read back from the database. The
delivery by a real MLflow server to a real api-server is tested in tests/deployment/test_release_events.py."""

from __future__ import annotations

import json
import time
import uuid

import pytest

SECRET = "webhook-s3cret"


def _signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    from mlflow.webhooks.delivery import _generate_hmac_signature

    delivery, stamp = str(uuid.uuid4()), str(int(time.time()))
    return {
        "Content-Type": "application/json",
        "X-MLflow-Delivery-Id": delivery,
        "X-MLflow-Timestamp": stamp,
        "X-MLflow-Signature": _generate_hmac_signature(secret, delivery, stamp, body.decode()),
    }


def _body(model: str, entity: str = "model_version_alias", action: str = "created", **data: str) -> bytes:
    return json.dumps(
        {
            "entity": entity,
            "action": action,
            "timestamp": "2026-12-02T00:00:00+00:00",
            "data": {"name": model, **data},
        }
    ).encode()


@pytest.fixture
def model_asset(airflow_db):
    """A model whose registry Asset is active (as when a DAG is scheduled on it); yields the model name."""
    from airflow.models.asset import AssetActive, AssetModel
    from airflow.utils.session import create_session

    from airflow_mlops.core.registry_events import registry_asset_uri

    model = f"m-{uuid.uuid4().hex[:8]}"
    uri = registry_asset_uri(model)
    with create_session() as session:
        asset = AssetModel(name=uri, uri=uri)
        session.add(asset)
        session.flush()
        session.add(AssetActive.for_asset(asset))
    return model


def _events(model: str) -> list[dict]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from airflow_mlops.core.registry_events import registry_asset_uri

    with create_session() as session:
        rows = session.scalars(
            select(AssetEvent).join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetModel.uri == registry_asset_uri(model))
        ).all()  # fmt: skip
        return [dict(r.extra) for r in rows]


@pytest.fixture
def client(monkeypatch):
    from fastapi.testclient import TestClient

    from airflow_mlops.plugins.webhooks import app

    monkeypatch.setenv("AIRFLOW_VAR_MLOPS_MLFLOW_WEBHOOK_SECRET", SECRET)
    return TestClient(app)


def test_a_signed_delivery_emits_one_asset_event_with_the_registry_event(client, model_asset):
    body = _body(model_asset, alias="champion", version="3")
    r = client.post("/mlflow", content=body, headers=_signed(body))
    assert r.status_code == 200, r.text
    expected = {"event": "model_version_alias.created", "model": model_asset, "alias": "champion",
                "version": "3", "at": "2026-12-02T00:00:00+00:00"}  # fmt: skip
    assert r.json()["event"] == expected and r.json()["asset_event_id"]
    assert _events(model_asset) == [expected]


@pytest.mark.parametrize("how", ["wrong secret", "changed body", "unsigned"])
def test_a_bad_signature_gets_401_and_emits_nothing(client, model_asset, how, capsys):
    body = _body(model_asset, alias="champion", version="3")
    headers = _signed(body, "not-the-secret" if how == "wrong secret" else SECRET)
    if how == "unsigned":
        del headers["X-MLflow-Signature"]
    sent = body.replace(b'"3"', b'"4"') if how == "changed body" else body
    r = client.post("/mlflow", content=sent, headers=headers)
    assert r.status_code == 401, r.text
    assert _events(model_asset) == []
    out = capsys.readouterr()
    assert SECRET not in r.text + out.out + out.err


def test_no_secret_configured_refuses_everything(client, model_asset, monkeypatch):
    monkeypatch.delenv("AIRFLOW_VAR_MLOPS_MLFLOW_WEBHOOK_SECRET")
    body = _body(model_asset, alias="champion", version="3")
    r = client.post("/mlflow", content=body, headers=_signed(body))
    assert r.status_code == 503 and "mlops_mlflow_webhook_secret" in r.json()["detail"]
    assert _events(model_asset) == []


def test_the_secret_can_come_from_a_connection_and_other_answers(client, model_asset, monkeypatch):
    from tests.conftest import conn_env

    monkeypatch.delenv("AIRFLOW_VAR_MLOPS_MLFLOW_WEBHOOK_SECRET")
    monkeypatch.setenv(*conn_env("mlflow_webhook", {"conn_type": "generic", "password": SECRET}))
    body = _body(model_asset, entity="model_version", version="5", source="runs:/r/m", run_id="r")
    assert client.post("/mlflow", content=body, headers=_signed(body)).status_code == 200
    assert _events(model_asset)[0]["event"] == "model_version.created"
    ignored = _body(model_asset, entity="registered_model", action="created")
    assert client.post("/mlflow", content=ignored, headers=_signed(ignored)).status_code == 202
    nobody = _body("model-no-dag-listens-to", alias="champion", version="1")
    r = client.post("/mlflow", content=nobody, headers=_signed(nobody))
    assert r.status_code == 404 and "schedule" in r.json()["detail"]
    garbage = b'{"entity": "model_version"}'
    assert client.post("/mlflow", content=garbage, headers=_signed(garbage)).status_code == 400
    assert len(_events(model_asset)) == 1

"""The gateway app in-process (Starlette's TestClient runs its lifespan and threads for real).

Models are real fitted pipelines handed to the app by an in-memory loader instead of the MLflow
registry, so these tests stay fast; loading from a real MLflow server, the uvicorn process and
the HTTP client are covered in tests/integration/serving.
"""

from __future__ import annotations

import logging
import time

import pyarrow.parquet as pq
import pytest
from starlette.testclient import TestClient

from airflow_mlops.core import prediction_log as contract
from airflow_mlops.core.errors import MlopsInputError
from airflow_mlops.serving.app import GatewaySettings, HttpError, create_app
from airflow_mlops.serving.client import parse_metrics
from airflow_mlops.serving.config import DeploymentConfig

pytestmark = [
    pytest.mark.filterwarnings("ignore:X does not have valid feature names"),
    pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`"),
]
TOKEN = "unit-admin-token-7f3a"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FEEDBACK_TOKEN = "unit-feedback-token-2c8e"


@pytest.fixture
def make_client(bc_models, tmp_path):
    loads: list[str] = []
    aliases = {"champion": "1", "challenger": "2"}

    def load_model(name: str, version: str):
        loads.append(version)
        return bc_models[version]

    def resolve(name: str, ref: str) -> str:
        ref = ref.removeprefix("@")
        version = ref if ref.isdigit() else aliases.get(ref)
        if version not in bc_models:
            raise MlopsInputError(f"Model {name!r} has no version or alias {ref}.")
        return version

    clients = []

    def make(config: dict | None = None, **settings) -> TestClient:
        opts = {
            "admin_token": TOKEN,
            "feedback_token": FEEDBACK_TOKEN,
            "log_dir": str(tmp_path / "log"),
            **settings,
        }
        app = create_app(
            GatewaySettings(**opts),
            config=DeploymentConfig.parse(config) if config else None,
            load_model=load_model,
            resolve=resolve,
        )
        # Feedback senders hold the feedback token (admin calls pass their own header).
        client = TestClient(app, headers={"Authorization": f"Bearer {FEEDBACK_TOKEN}"})
        client.__enter__()
        clients.append(client)
        client.loads = loads  # type: ignore[attr-defined]
        if config:
            deadline = time.monotonic() + 30
            while client.get("/ready").status_code != 200:
                assert time.monotonic() < deadline, client.get("/ready").json()
                time.sleep(0.02)
        return client

    yield make
    for c in clients:
        c.__exit__(None, None, None)


SINGLE = {"model_name": "bc", "strategy": "single", "routes": [{"version": "1"}]}


def _metrics(client: TestClient) -> dict:
    return parse_metrics(client.get("/metrics").text)


def _lab(version: str, **extra: str) -> frozenset:
    return frozenset({("model", "bc"), ("version", version), *extra.items()})


def test_predict_one_and_many(make_client, bc_records, bc_models):
    c = make_client(SINGLE)
    r = c.post("/predict", json={"inputs": bc_records[0]})
    assert r.status_code == 200
    body = r.json()
    assert (
        body["model_name"] == "bc"
        and body["model_version"] == "1"
        and len(body["request_id"].split(".")[0]) == 32
    )
    expected, proba = bc_models["1"].predict(bc_models["1"].batch(bc_records[:50]))
    assert body["predictions"] == [expected[0]]
    assert body["probabilities"][0] == pytest.approx(proba[0].tolist())
    r = c.post("/predict", json={"inputs": bc_records[:50]})
    assert r.json()["predictions"] == expected.tolist()
    m = _metrics(c)
    assert m[("mlops_gateway_requests_total", _lab("1", status="200"))] == 2
    assert m[("mlops_gateway_predictions_total", _lab("1"))] == 51
    assert m[("mlops_gateway_request_latency_seconds_count", _lab("1"))] == 2
    assert m[("mlops_gateway_champion_version", frozenset({("model", "bc")}))] == 1


def test_bad_requests_get_clear_errors(make_client, bc_records):
    c = make_client(SINGLE, max_body_bytes=50_000, max_rows=20)
    missing = {k: v for k, v in bc_records[0].items() if k != "mean radius"}
    cases = [
        (c.post("/predict", json={"inputs": missing}), 422, "no column 'mean radius'"),
        (
            c.post("/predict", json={"inputs": {**bc_records[0], "mean area": "big"}}),
            422,
            "Column 'mean area'",
        ),
        (
            c.post("/predict", content=b"{nope", headers={"content-type": "application/json"}),
            400,
            "not valid JSON",
        ),
        (c.post("/predict", json={"rows": []}), 422, '{"inputs"'),
        (c.post("/predict", json={"inputs": []}), 422, "non-empty list"),
        (c.post("/predict", json={"inputs": bc_records[:21]}), 413, "21 rows, over the limit of 20"),
        (c.post("/predict", json={"inputs": bc_records[:200]}), 413, "over the limit of 50000"),
    ]
    for r, status, fragment in cases:
        assert r.status_code == status, r.text
        assert fragment in r.json()["detail"]
    m = _metrics(c)
    assert m[("mlops_gateway_requests_total", _lab("1", status="422"))] == 2  # routed, then rejected
    assert m[("mlops_gateway_requests_total", _lab("none", status="422"))] == 2  # malformed body
    assert m[("mlops_gateway_requests_total", _lab("none", status="413"))] == 2


def test_body_limit_holds_without_content_length(make_client, bc_records):
    c = make_client(SINGLE, max_body_bytes=2000)
    import json

    def chunks():
        raw = json.dumps({"inputs": bc_records[:5]}).encode()
        for i in range(0, len(raw), 500):
            yield raw[i : i + 500]

    r = c.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "over the limit of 2000 bytes" in r.json()["detail"]


def test_not_ready_until_a_deployment_is_put(make_client, bc_records):
    c = make_client()
    assert c.get("/health").json() == {"status": "ok"}
    r = c.get("/ready")
    assert r.status_code == 503 and r.json()["status"] == "empty"
    assert c.post("/predict", json={"inputs": bc_records[0]}).status_code == 503
    assert c.get("/admin/deployment", headers=AUTH).status_code == 404
    r = c.put("/admin/deployment", json={**SINGLE, "routes": [{"version": "@champion"}]}, headers=AUTH)
    assert r.status_code == 200 and r.json()["routes"] == [{"version": "1", "weight": 1.0}]
    assert c.get("/ready").json()["versions"] == ["1"]


def test_startup_load_error_is_reported_on_ready():
    bad = create_app(
        GatewaySettings(admin_token=TOKEN),
        config=DeploymentConfig.parse({"model_name": "bc", "routes": [{"version": "9"}]}),
        load_model=lambda n, v: None,
        resolve=lambda n, v: (_ for _ in ()).throw(MlopsInputError("Model 'bc' has no version 9.")),
    )
    with TestClient(bad) as tc:
        deadline = time.monotonic() + 10
        while tc.get("/ready").json()["status"] != "error":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert "no version 9" in tc.get("/ready").json()["detail"]
        assert tc.get("/health").status_code == 200


def test_admin_needs_the_token_and_token_never_logged(make_client, caplog):
    caplog.set_level(logging.DEBUG)
    c = make_client(SINGLE)
    assert c.get("/admin/deployment").status_code == 401
    r = c.get("/admin/deployment", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert c.get("/admin/deployment", headers={"Authorization": TOKEN}).status_code == 401  # no scheme
    assert c.put("/admin/deployment", json=SINGLE).status_code == 401
    assert c.get("/admin/deployment", headers=AUTH).json() == DeploymentConfig.parse(SINGLE).to_dict()
    canary = {
        "model_name": "bc",
        "strategy": "canary",
        "routes": [{"version": "1", "weight": 0.5}, {"version": "2", "weight": 0.5}],
    }
    assert c.put("/admin/deployment", json=canary, headers=AUTH).status_code == 200
    assert TOKEN not in caplog.text
    assert "Deployment of bc: strategy canary" in caplog.text


def test_admin_is_refused_when_no_token_is_configured(make_client):
    c = make_client(SINGLE, admin_token=None)
    r = c.get("/admin/deployment", headers={"Authorization": "Bearer "})
    assert r.status_code == 401 and "MLOPS_GATEWAY_ADMIN_TOKEN" in r.json()["detail"]


def test_bad_deployment_changes_nothing(make_client, bc_records):
    c = make_client(SINGLE)
    before = c.get("/admin/deployment", headers=AUTH).json()
    bad_weights = {
        "model_name": "bc",
        "strategy": "canary",
        "routes": [{"version": "1", "weight": 0.5}, {"version": "2", "weight": 0.2}],
    }
    r = c.put("/admin/deployment", json=bad_weights, headers=AUTH)
    assert r.status_code == 422 and "sum to 1" in r.json()["detail"] and "not changed" in r.json()["detail"]
    r = c.put("/admin/deployment", json={**SINGLE, "routes": [{"version": "7"}]}, headers=AUTH)
    assert r.status_code == 422 and "no version or alias 7" in r.json()["detail"]
    assert c.get("/admin/deployment", headers=AUTH).json() == before
    assert c.post("/predict", json={"inputs": bc_records[0]}).json()["model_version"] == "1"


def test_swap_reuses_loaded_versions(make_client):
    c = make_client(SINGLE)
    canary = {
        "model_name": "bc",
        "strategy": "canary",
        "routes": [{"version": "1", "weight": 0.9}, {"version": "2", "weight": 0.1}],
    }
    c.put("/admin/deployment", json=canary, headers=AUTH)
    assert c.loads == ["1", "2"]  # version 1 stayed loaded
    m = _metrics(c)
    assert m[("mlops_gateway_route_weight", _lab("2"))] == 0.1
    c.put("/admin/deployment", json={**SINGLE, "routes": [{"version": "2"}]}, headers=AUTH)
    m = _metrics(c)
    assert m[("mlops_gateway_route_weight", _lab("1"))] == 0.0
    assert m[("mlops_gateway_champion_version", frozenset({("model", "bc")}))] == 2


def test_feedback_feeds_live_metrics_and_rejects_bad_joins(make_client, bc_records, bc_frame):
    c = make_client(SINGLE)
    y = bc_frame["target"].tolist()
    ids = []
    for i in range(40):
        body = c.post("/predict", json={"inputs": bc_records[i]}).json()
        ids.append(body["request_id"])
        r = c.post("/feedback", json={"request_id": body["request_id"], "label": y[i]})
        assert r.status_code == 200 and r.json()["accepted"] == 1
    batch = c.post("/predict", json={"inputs": bc_records[40:50]}).json()
    r = c.post("/feedback", json={"request_id": batch["request_id"], "labels": [str(v) for v in y[40:50]]})
    assert r.status_code == 200 and r.json()["accepted"] == 10
    m = _metrics(c)
    assert m[("mlops_gateway_feedback_total", _lab("1"))] == 50
    assert m[("mlops_gateway_live_samples", _lab("1"))] == 50
    assert 0.9 < m[("mlops_gateway_live_accuracy", _lab("1"))] <= 1.0
    for metric in ("precision", "recall", "f1"):
        assert ("mlops_gateway_live_" + metric, _lab("1")) in m
    fresh = c.post("/predict", json={"inputs": bc_records[60:70]}).json()
    cases = [
        (c.post("/feedback", json={"request_id": "nope", "label": 1}), 404, "Unknown request_id 'nope'"),
        (c.post("/feedback", json={"request_id": batch["request_id"], "labels": [1] * 10}), 409, "already"),
        (c.post("/feedback", json={"request_id": ids[0], "label": 1}), 409, "already recorded"),
        (
            c.post("/feedback", json={"request_id": fresh["request_id"], "labels": [1]}),
            422,
            "predicted 10 rows but 1 labels",
        ),
        (c.post("/feedback", json={"request_id": fresh["request_id"]}), 422, '"label"'),
        (c.post("/feedback", json={"label": 1}), 422, "request_id"),
    ]
    body = c.post("/predict", json={"inputs": bc_records[0]}).json()
    cases.append(
        (
            c.post("/feedback", json={"request_id": body["request_id"], "label": 7}),
            422,
            "Label 7 is not a class",
        )
    )
    for r, status, fragment in cases:
        assert r.status_code == status, r.text
        assert fragment in r.json()["detail"]


def test_feedback_joins_any_number_of_requests_back(make_client, bc_records):
    """Signed ids carry their predictions: no capacity of pending requests limits how old a join may be
    (the capacity now bounds the in-process dedup memory only)."""
    c = make_client(SINGLE, feedback_capacity=3)
    ids = [c.post("/predict", json={"inputs": bc_records[i]}).json()["request_id"] for i in range(5)]
    assert c.post("/feedback", json={"request_id": ids[0], "label": 0}).status_code == 200
    assert c.post("/feedback", json={"request_id": ids[4], "label": 0}).status_code == 200
    assert c.post("/feedback", json={"request_id": ids[4], "label": 0}).status_code == 409


def test_feedback_after_a_swap_counts_for_the_version_that_served(make_client, bc_records):
    c = make_client(SINGLE)
    rid = c.post("/predict", json={"inputs": bc_records[0]}).json()["request_id"]
    c.put("/admin/deployment", json={**SINGLE, "routes": [{"version": "2"}]}, headers=AUTH)
    r = c.post("/feedback", json={"request_id": rid, "label": 0})
    assert r.json()["model_version"] == "1"
    assert _metrics(c)[("mlops_gateway_feedback_total", _lab("1"))] == 1


def test_shadow_copies_are_scored_off_the_request_path(make_client, bc_records, bc_models):
    shadow = {
        "model_name": "bc",
        "strategy": "shadow",
        "champion": "1",
        "routes": [{"version": "1"}, {"version": "2"}],
    }
    c = make_client(shadow)
    for i in range(60):
        assert c.post("/predict", json={"inputs": bc_records[i]}).json()["model_version"] == "1"
    c.post("/predict", json={"inputs": bc_records[100:300]})
    p1, _ = bc_models["1"].predict(bc_models["1"].batch(bc_records[:60]))
    p2, _ = bc_models["2"].predict(bc_models["2"].batch(bc_records[:60]))
    agreeing = int((p1 == p2).sum())
    assert agreeing < 60  # the weak model disagrees somewhere, so agreement is really counted
    deadline = time.monotonic() + 10
    while _metrics(c).get(("mlops_gateway_shadow_requests_total", _lab("2")), 0) < 61:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    m = _metrics(c)
    assert m[("mlops_gateway_shadow_requests_total", _lab("2"))] == 61
    assert m[("mlops_gateway_shadow_agreement_total", _lab("2"))] == agreeing  # the batch disagrees too
    assert ("mlops_gateway_requests_total", _lab("2", status="200")) not in m


def test_ab_is_sticky_by_key_or_sticky_field(make_client, bc_records):
    ab = {
        "model_name": "bc", "strategy": "ab", "sticky_key": "user_id",
        "routes": [{"version": "1", "weight": 0.5}, {"version": "2", "weight": 0.5}],
    }  # fmt: skip
    c = make_client(ab)
    seen = {}
    for i in range(40):
        user = f"user-{i % 8}"
        v = c.post("/predict", json={"inputs": {**bc_records[i], "user_id": user}}).json()["model_version"]
        assert seen.setdefault(user, v) == v
        assert c.post("/predict", json={"inputs": bc_records[i], "key": user}).json()["model_version"] == v
    assert set(seen.values()) == {"1", "2"}


def test_bandit_learns_from_feedback(make_client, bc_records, monkeypatch):
    """Thompson sampling is random: the router's source is seeded so that the run is one fixed draw."""
    import random
    import types

    from airflow_mlops.serving import routing

    monkeypatch.setattr(routing, "random", types.SimpleNamespace(Random=lambda: random.Random(20261201)))
    bandit = {"model_name": "bc", "strategy": "bandit", "routes": [{"version": "1"}, {"version": "2"}]}
    c = make_client(bandit)
    served = []
    for i in range(300):
        body = c.post("/predict", json={"inputs": bc_records[i]}).json()
        served.append(body["model_version"])
        # Ground truth that rewards only version 2: its own prediction is called right.
        truth = body["predictions"][0] if body["model_version"] == "2" else 1 - body["predictions"][0]
        c.post("/feedback", json={"request_id": body["request_id"], "label": truth})
    assert served[-100:].count("2") > 90
    assert served[:20].count("1") > 0  # it explored version 1 first


def test_prediction_log_is_flushed_on_shutdown(make_client, bc_records, tmp_path):
    c = make_client(SINGLE, log_flush_seconds=3600)
    ids = [c.post("/predict", json={"inputs": bc_records[i : i + 2]}).json()["request_id"] for i in range(5)]
    c.__exit__(None, None, None)
    files = list((tmp_path / "log" / "bc").rglob("*.parquet"))
    assert len(files) == 1
    t = pq.read_table(files[0]).to_pydict()
    # The log keys rows by the id's random part (the rest is the signed payload).
    assert t[contract.REQUEST_ID] == [rid.split(".")[0] for rid in ids for _ in range(2)]
    assert t["mean radius"] == [bc_records[j]["mean radius"] for i in range(5) for j in (i, i + 1)]
    assert set(t[contract.MODEL_VERSION]) == {"1"}


class _Broken:
    """An estimator that fails at predict time, as a model with a bad dependency would."""

    def predict(self, X):
        raise RuntimeError("feature store offline")


def test_a_failing_model_answers_500_and_is_counted():
    from airflow_mlops.serving.models import LoadedModel

    app = create_app(
        GatewaySettings(admin_token=TOKEN),
        config=DeploymentConfig.parse({"model_name": "bc", "routes": [{"version": "3"}]}),
        load_model=lambda n, v: LoadedModel(n, v, _Broken()),
        resolve=lambda n, v: v,
    )
    with TestClient(app) as c:
        deadline = time.monotonic() + 10
        while c.get("/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        r = c.post("/predict", json={"inputs": {"x": 1.0}})
        assert (
            r.status_code == 500
            and "Model bc v3 failed to predict: feature store offline" in r.json()["detail"]
        )
        assert _metrics(c)[("mlops_gateway_requests_total", _lab("3", status="500"))] == 1


def test_feedback_for_a_long_gone_model_is_refused_clearly(make_client, bc_records, monkeypatch):
    from airflow_mlops.serving import app as app_module

    monkeypatch.setattr(app_module, "MODELS_KEPT", 1)
    c = make_client(SINGLE)
    rid = c.post("/predict", json={"inputs": bc_records[0]}).json()["request_id"]
    c.put("/admin/deployment", json={**SINGLE, "routes": [{"version": "2"}]}, headers=AUTH)
    r = c.post("/feedback", json={"request_id": rid, "label": 0})
    assert r.status_code == 410 and "served by bc/1" in r.json()["detail"]


# --- the Gateway's domain methods, without HTTP ------------------------------------------------------
def _gateway(bc_models, config: dict, **settings):
    import asyncio

    from airflow_mlops.serving.app import Gateway

    gw = Gateway(GatewaySettings(**settings), lambda n, v: bc_models[v], lambda n, ref: ref)
    asyncio.run(gw.apply(DeploymentConfig.parse(config)))
    return gw


def test_gateway_predict_then_feedback_joins_labels_rewards_the_bandit_and_counts(bc_models, bc_records):
    import asyncio

    gw = _gateway(bc_models, SINGLE)
    answer = asyncio.run(gw.predict({"inputs": bc_records[:4]}))
    assert answer["model_version"] == "1" and len(answer["predictions"]) == 4
    labels = [int(p) for p in answer["predictions"]]
    labels[0] = 1 - labels[0]  # one wrong prediction
    joined = gw.feedback({"request_id": answer["request_id"], "labels": labels})
    assert joined == {"request_id": answer["request_id"], "model_version": "1", "accepted": 4, "correct": 3}
    assert gw.bandit.posterior("1") == (4.0, 2.0)
    assert gw.metrics.requests.labels("bc", "1", "200")._value.get() == 1
    assert gw.metrics.feedback.labels("bc", "1")._value.get() == 4
    with pytest.raises(HttpError) as again:
        gw.feedback({"request_id": answer["request_id"], "labels": labels})
    assert again.value.status == 409 and "already recorded" in again.value.detail


def test_gateway_feedback_refuses_unknown_ids_and_wrong_label_counts(bc_models, bc_records):
    import asyncio

    gw = _gateway(bc_models, SINGLE, feedback_capacity=7)
    rid = asyncio.run(gw.predict({"inputs": bc_records[:2]}))["request_id"]
    cases = [
        ({"request_id": "nope", "label": 0}, 404, "it was not issued by this gateway"),
        ({"request_id": rid[:-2] + "AA", "label": 0}, 404, "it was not issued by this gateway"),
        ({"request_id": rid, "labels": [0]}, 422, "predicted 2 rows but 1 labels"),
        ({"request_id": rid}, 422, 'Give the true value as "label"'),
        ({"label": 0}, 422, "The body must be"),
    ]
    for body, status, text in cases:
        with pytest.raises(HttpError) as e:
            gw.feedback(body)
        assert (e.value.status, text in e.value.detail) == (status, True), body
    assert gw.bandit.posterior("1") == (1.0, 1.0)  # nothing joined


def test_gateway_predict_refusals_are_counted_under_their_status(bc_models, bc_records):
    import asyncio

    from airflow_mlops.serving.app import Gateway

    empty = Gateway(GatewaySettings(), lambda n, v: bc_models[v], lambda n, ref: ref)
    with pytest.raises(HttpError) as e:
        asyncio.run(empty.predict({"inputs": bc_records[0]}))
    assert e.value.status == 503 and empty.readiness() == (
        {"status": "empty", "detail": "no deployment configured"},
        503,
    )
    assert empty.metrics.requests.labels("none", "none", "503")._value.get() == 1
    gw = _gateway(bc_models, SINGLE, max_rows=2)
    for body, status in (({"inputs": bc_records[:3]}, 413), ({"inputs": []}, 422), ([1], 422)):
        with pytest.raises(HttpError) as e:
            asyncio.run(gw.predict(body))
        assert e.value.status == status, body
    assert gw.metrics.requests.labels("bc", "none", "422")._value.get() == 2
    assert gw.readiness()[1] == 200 and gw.readiness()[0]["versions"] == ["1"]


def test_gateway_put_deployment_maps_errors_and_keeps_serving(bc_models):
    import asyncio

    gw = _gateway(bc_models, SINGLE)
    with pytest.raises(HttpError) as e:
        asyncio.run(gw.put_deployment({"model_name": "bc", "strategy": "nope", "routes": []}))
    assert e.value.status == 422 and e.value.detail.endswith("The deployment was not changed.")
    assert gw.deployment is not None and gw.deployment.config.versions == ["1"]
    applied = asyncio.run(gw.put_deployment({**SINGLE, "routes": [{"version": "2"}]}))
    assert applied["routes"][0]["version"] == "2" and gw.deployment.config.versions == ["2"]

"""The CeleryExecutor on a real deployment: two Celery workers on two queues, each with its own HOME and
deploy-state folder (they share no disk but the task-log folder), one triggerer, PostgreSQL and Redis.

* A canary deployed by a task on worker A is rolled back by a task on worker B: deployment state must
  live where every worker sees it.
* Three deferrable gates with different MLflow credentials wait at once in the one triggerer, against a
  real basic-auth MLflow server: each sees its own model, and one whose user loses the right to read
  the other's model fails with a permission message instead of borrowing another trigger's identity.
"""

from __future__ import annotations

import base64
import http.server
import json
import secrets
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator

import pytest

from tests.deployment.harness import Airflow
from tests.models import register_versions
from tests.servers import free_port, start_gateway, start_process, stop

USERS = {
    "admin": secrets.token_urlsafe(12),
    "user_a": secrets.token_urlsafe(12),
    "user_b": secrets.token_urlsafe(12),
}
TIER_DAGS = ["deployment_celery_handoff", "deployment_two_credentials"]
GATEWAY_ADMIN_TOKEN = secrets.token_urlsafe(16)


def mlflow_call(
    url: str, path: str, body: dict | None = None, user: str = "admin", method: str | None = None
) -> dict:
    """An MLflow REST call with basic auth."""
    req = urllib.request.Request(
        f"{url}{path}", data=json.dumps(body).encode() if body is not None else None, method=method,
        headers={"Content-Type": "application/json",
                 "Authorization": "Basic " + base64.b64encode(f"{user}:{USERS[user]}".encode()).decode()},
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=60) as r:  # hashing a password takes seconds on a busy host
        return json.loads(r.read() or b"{}")


def grant(url: str, user: str, resource_type: str, resource_id: str, permission: str) -> None:
    mlflow_call(url, "/api/3.0/mlflow/users/permissions/grant",
                {"username": user, "resource_type": resource_type, "resource_id": resource_id,
                 "permission": permission})  # fmt: skip


def revoke(url: str, user: str, resource_type: str, resource_id: str) -> None:
    mlflow_call(url, "/api/3.0/mlflow/users/permissions/revoke",
                {"username": user, "resource_type": resource_type, "resource_id": resource_id})  # fmt: skip


@pytest.fixture(scope="module")
def auth_mlflow(tier_dir) -> Iterator[str]:
    """A real ``mlflow server --app-name basic-auth`` where users see nothing unless granted."""
    import os

    root = tier_dir("mlflow-basic-auth")
    ini = root / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\ndefault_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{root / 'auth.db'}\n"
        f"admin_username = admin\nadmin_password = {USERS['admin']}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")},
        "MLFLOW_AUTH_CONFIG_PATH": str(ini),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": uuid.uuid4().hex,
    }
    port = free_port()
    args = [
        sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", str(root / "artifacts"),
    ]  # fmt: skip
    proc, url = start_process(args, root, "mlflow-basic-auth", "/health", port, timeout=300, env=env)
    for user in ("user_a", "user_b"):
        mlflow_call(url, "/api/2.0/mlflow/users/create", {"username": user, "password": USERS[user]})
    yield url
    stop(proc)


def _conn(url: str, user: str) -> str:
    return json.dumps({"conn_type": "mlflow", "host": url, "login": user, "password": USERS[user]})


@pytest.fixture(scope="module")
def celery_deployment(postgres, redis_url, auth_mlflow, tier_dir) -> Iterator[Airflow]:
    """api-server, scheduler, dag-processor, triggerer and two Celery workers (``queue_a``, ``queue_b``)."""
    root = tier_dir("celery-executor")
    db = postgres.create_database("airflow_celery")
    env = {
        "AIRFLOW_CONN_MLFLOW_DEFAULT": _conn(auth_mlflow, "admin"),
        "AIRFLOW_CONN_MLFLOW_A": _conn(auth_mlflow, "user_a"),
        "AIRFLOW_CONN_MLFLOW_B": _conn(auth_mlflow, "user_b"),
        "MLOPS_GATEWAY_ADMIN_TOKEN": GATEWAY_ADMIN_TOKEN,
    }
    celery = {"broker_url": redis_url, "result_backend": "db+" + db}
    airflow = Airflow(root, db, "CeleryExecutor", env, celery=celery)
    try:
        airflow.start_core()
        for worker, queue in (("worker-a", "queue_a"), ("worker-b", "queue_b")):
            home = root / f"{worker}-home"
            home.mkdir()
            airflow.start(
                worker,
                ["celery", "worker", "-q", queue, "-c", "2", "-H", f"{worker}@%h", "--skip-serve-logs",
                 "--without-gossip", "--without-mingle"],
                env={"HOME": str(home), "AIRFLOW_HOME": str(home / "airflow"),
                     "MLOPS_DEPLOY_STATE_DIR": str(home / "deployments")},
            )  # fmt: skip
        airflow.wait_dags(TIER_DAGS)
        yield airflow
    finally:
        stragglers = airflow.stop()
        assert not stragglers, "processes outlived their Airflow component:\n" + "\n".join(stragglers)


@pytest.fixture(scope="module")
def gateway(auth_mlflow, tier_dir, monkeypatch_module) -> Iterator[str]:
    """An external gateway (a service every worker reaches), reading models as admin."""
    monkeypatch_module.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch_module.setenv("MLFLOW_TRACKING_PASSWORD", USERS["admin"])
    proc, url = start_gateway(tier_dir("gateway"), auth_mlflow, admin_token=GATEWAY_ADMIN_TOKEN)
    monkeypatch_module.delenv("MLFLOW_TRACKING_USERNAME")
    monkeypatch_module.delenv("MLFLOW_TRACKING_PASSWORD")
    yield url
    stop(proc)


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as mp:
        yield mp


ADMIN = ("admin", USERS["admin"])


def _client(url: str):  # noqa: ANN202 - an MlflowClient
    """The test's own admin client (the deployment never sees these credentials but in connections)."""
    from airflow_mlops.core.tracking import MlflowTarget

    return MlflowTarget(url, username=ADMIN[0], password=ADMIN[1]).client()


@pytest.mark.timeout(2700)  # the module's set-up included (Postgres, Redis, MLflow, six components)
def test_a_canary_deployed_on_worker_a_is_rolled_back_on_worker_b(celery_deployment, auth_mlflow, gateway):
    af = celery_deployment
    model = f"handoff_{secrets.token_hex(3)}"
    assert register_versions(auth_mlflow, model, [{"C": 1.0}, {"C": 0.5}], auth=ADMIN) == ["1", "2"]
    af.unpause("deployment_celery_handoff")
    run = af.trigger("deployment_celery_handoff", {"model": model, "gateway_url": gateway})
    seen: dict[str, set[str]] = {}
    tis = af.wait_run("deployment_celery_handoff", run, timeout=900, seen=seen)
    states = {t: ti["state"] for t, ti in tis.items()}
    where = {t: (ti["hostname"], ti["queue"]) for t, ti in tis.items()}
    print(f"\nstates {states}; where {where}; seen {seen}")
    # Which worker ran each task, as the REST API reports it.
    assert where["serve_v1"] == ("worker-a", "queue_a") and where["canary_v2"] == ("worker-a", "queue_a"), (
        where
    )
    assert where["rollback"] == ("worker-b", "queue_b"), where
    assert states["serve_v1"] == "success" and states["canary_v2"] == "success", (
        f"{states}\n{af.diagnostics('deployment_celery_handoff', run)}"
    )
    canary = af.xcom("deployment_celery_handoff", run, "canary_v2")
    assert {str(k): float(v) for k, v in canary["weights"].items()} == {
        "1": pytest.approx(0.7),
        "2": pytest.approx(0.3),
    }, canary
    # The rollback on worker B knows what worker A deployed.
    assert states["rollback"] == "success", (
        f"the rollback on worker B failed: {states}\n{af.diagnostics('deployment_celery_handoff', run)}"
    )
    from airflow_mlops.serving.client import GatewayClient

    with GatewayClient(gateway, admin_token=GATEWAY_ADMIN_TOKEN) as gw:
        config = gw.get_deployment()
    served = {str(r["version"]): float(r["weight"]) for r in config["routes"]}
    assert {v: w for v, w in served.items() if w > 0} == {"1": 1.0}, config
    assert str(config.get("champion")) == "1", config
    assert _client(auth_mlflow).get_registered_model(model).aliases.get("champion") == "1"


class _Page(http.server.BaseHTTPRequestHandler):
    text = ""

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        body = type(self).text.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def live_page() -> Iterator[tuple[str, type[_Page]]]:
    """A Prometheus-format page of live gauges the test controls (empty: the gates wait)."""
    page = type("Page", (_Page,), {"text": ""})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/metrics", page
    server.shutdown()


def _gauges(models: list[str]) -> str:
    lines = []
    for name in ("mlops_gateway_live_f1", "mlops_gateway_live_samples"):
        lines.append(f"# TYPE {name} gauge")
        for m in models:
            lines.append(f'{name}{{model="{m}",version="1"}} {0.95 if name.endswith("f1") else 50}')
    return "\n".join(lines) + "\n"


@pytest.mark.timeout(1500)
def test_gates_with_different_credentials_each_see_their_own_in_one_triggerer(
    celery_deployment, auth_mlflow, live_page
):
    af = celery_deployment
    url, page = live_page
    model_a, model_b = f"cred_a_{secrets.token_hex(3)}", f"cred_b_{secrets.token_hex(3)}"
    register_versions(auth_mlflow, model_a, [{}], auth=ADMIN)
    register_versions(auth_mlflow, model_b, [{}], auth=ADMIN)
    grant(auth_mlflow, "user_a", "registered_model", model_a, "EDIT")
    grant(auth_mlflow, "user_b", "registered_model", model_b, "EDIT")
    grant(auth_mlflow, "user_b", "registered_model", model_a, "READ")  # revoked while the gates wait

    af.unpause("deployment_two_credentials")
    run = af.trigger(
        "deployment_two_credentials", {"model_a": model_a, "model_b": model_b, "metrics_url": url}
    )
    gates = ("gate_a", "gate_b", "gate_b_reads_a")

    def all_deferred() -> bool:
        tis = af.task_instances("deployment_two_credentials", run)
        done = {
            t: tis[t]["state"]
            for t in gates
            if tis[t]["state"] not in (None, "queued", "running", "scheduled", "deferred")
        }
        assert not done, (
            f"a gate ended before the evidence came: {done}\n{af.diagnostics('deployment_two_credentials', run)}"
        )
        return all(tis[t]["state"] == "deferred" for t in gates)

    af.wait(all_deferred, 180, "all three gates to be deferred in the triggerer at once")
    # User B loses the right to read model A while its trigger waits: its next poll must be refused.
    revoke(auth_mlflow, "user_b", "registered_model", model_a)
    time.sleep(6)  # three polls of every trigger with these identities
    page.text = _gauges([model_a, model_b])
    tis = af.wait_run("deployment_two_credentials", run, timeout=180)
    states = {t: tis[t]["state"] for t in gates}
    print(f"\ngate states {states}; where { {t: (tis[t]['hostname'], tis[t]['queue']) for t in gates} }")
    diag = af.diagnostics("deployment_two_credentials", run)
    assert states["gate_a"] == "success" and states["gate_b"] == "success", f"{states}\n{diag}"
    assert af.xcom("deployment_two_credentials", run, "gate_a")["model_name"] == model_a
    assert af.xcom("deployment_two_credentials", run, "gate_b")["model_name"] == model_b
    assert states["gate_b_reads_a"] == "failed", (
        f"user B read model A after losing the right: {states}\n{diag}"
    )
    log = af.task_log(
        "deployment_two_credentials", run, "gate_b_reads_a", int(tis["gate_b_reads_a"]["try_number"])
    )
    assert "PERMISSION_DENIED" in log or "ermission" in log, log[-3000:]
    client = _client(auth_mlflow)
    assert client.get_model_version(model_a, "1").tags.get("mlops.gate.live") == "passed"
    assert client.get_model_version(model_b, "1").tags.get("mlops.gate.live") == "passed"

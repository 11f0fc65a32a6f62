"""Clients of two MlflowTargets with different credentials, used at once from threads (as triggers in
one triggerer are), each talk to a real basic-auth MLflow server with their own identity."""

from __future__ import annotations

import base64
import json
import os
import sys
import threading
import urllib.request
import uuid

import pytest

from tests.servers import free_port, start_process, stop

ADMIN = ("admin", "admin-password-1234")


def _call(url: str, path: str, body: dict | None = None, auth: tuple[str, str] = ADMIN) -> dict:
    req = urllib.request.Request(
        f"{url}{path}", data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json",
                 "Authorization": "Basic " + base64.b64encode(":".join(auth).encode()).decode()},
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read() or b"{}")


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory):
    """A real ``mlflow server --app-name basic-auth`` with users alice and bob."""
    root = tmp_path_factory.mktemp("mlflow-auth")
    ini = root / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{root / 'auth.db'}\n"
        f"admin_username = {ADMIN[0]}\nadmin_password = {ADMIN[1]}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    port = free_port()
    env = {
        **os.environ,
        "MLFLOW_AUTH_CONFIG_PATH": str(ini),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": uuid.uuid4().hex,
    }
    for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        env.pop(k, None)
    args = [
        sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", str(root / "artifacts"),
    ]  # fmt: skip
    proc, url = start_process(args, root, "mlflow-auth", "/health", port, timeout=300, env=env)
    for user in ("alice", "bob"):
        _call(url, "/api/2.0/mlflow/users/create", {"username": user, "password": f"{user}-password-1234"})
    yield url
    stop(proc)


def _managed_experiments(url: str, user: str) -> set[str]:
    """Experiments ``user`` holds MANAGE on (the server grants it to an experiment's creator)."""
    got = _call(url, f"/api/3.0/mlflow/users/permissions/list?username={user}")
    return {
        str(r["resource_pattern"])
        for r in got["permissions"]
        if r["resource_type"] == "experiment" and r["permission"] == "MANAGE"
    }


def test_concurrent_targets_each_use_their_own_credentials(auth_server, monkeypatch):
    from airflow_mlops.core.tracking import MlflowTarget

    for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    env_before = dict(os.environ)
    targets = {
        u: MlflowTarget(auth_server, username=u, password=f"{u}-password-1234") for u in ("alice", "bob")
    }
    created: dict[str, list[str]] = {u: [] for u in targets}
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(targets))

    def work(user: str) -> None:
        try:
            client = targets[user].client()
            barrier.wait()
            for i in range(6):
                created[user].append(client.create_experiment(f"{user}-{i}-{uuid.uuid4().hex[:6]}"))
                client.search_experiments(max_results=5)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(u,)) for u in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    # The creator of an experiment gets MANAGE on it: each one was made with its own thread's identity.
    for user, other in (("alice", "bob"), ("bob", "alice")):
        assert len(created[user]) == 6
        assert set(created[user]) <= _managed_experiments(auth_server, user)
        assert not set(created[user]) & _managed_experiments(auth_server, other)
    assert dict(os.environ) == env_before


def test_wrong_credentials_are_refused_without_leaking_into_others(auth_server):
    from mlflow.exceptions import MlflowException

    from airflow_mlops.core.tracking import MlflowTarget

    good = MlflowTarget(auth_server, username="alice", password="alice-password-1234").client()
    bad = MlflowTarget(auth_server, username="alice", password="wrong").client()
    with pytest.raises(MlflowException, match="401|nauthorized|credentials"):
        bad.search_experiments(max_results=1)
    assert good.search_experiments(max_results=1) is not None

"""GatewayClient against the real gateway app served by uvicorn on loopback (in a thread), with
models handed over in memory instead of by the MLflow registry (loading those is covered in
tests/integration/serving)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_mlops.core.net import free_port
from airflow_mlops.serving.app import GatewaySettings, create_app
from airflow_mlops.serving.client import GatewayClient, GatewayError, GatewayInputError
from airflow_mlops.serving.config import DeploymentConfig

pytestmark = pytest.mark.filterwarnings("ignore:X does not have valid feature names")
TOKEN = "client-admin-token-51d0"
SINGLE = {"model_name": "bc", "routes": [{"version": "1"}]}


class _Served:
    def __init__(self, app: Any) -> None:
        import uvicorn

        self.url = f"http://127.0.0.1:{free_port()}"
        port = int(self.url.rsplit(":", 1)[1])
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def serve(bc_models, tmp_path) -> Iterator[Any]:
    served: list[_Served] = []

    def load_model(name: str, version: str) -> Any:
        if version not in bc_models:
            raise RuntimeError(f"no model file for version {version}")
        return bc_models[version]

    def make(config: dict | None = None) -> _Served:
        settings = GatewaySettings(admin_token=TOKEN, log_dir=str(tmp_path / f"log-{len(served)}"))
        parsed = DeploymentConfig.parse(config) if config else None
        app = create_app(settings, config=parsed, load_model=load_model, resolve=lambda name, ref: ref)
        served.append(_Served(app))
        return served[-1]

    yield make
    for s in served:
        s.stop()


def test_calls_of_one_client_share_one_connection_and_count_requests(serve, bc_records):
    """Infra validation times its calls with one client: they must not pay a new connection each."""
    gw = serve(SINGLE)
    with GatewayClient(gw.url, TOKEN) as client:
        assert client.wait_ready(timeout=30)["versions"] == ["1"]
        for record in bc_records[:5]:
            assert client.predict(record)["model_version"] == "1"
        with pytest.raises(GatewayInputError) as e:
            client.predict({"nope": 1.0})
        assert e.value.status_code == 422
        assert len(gw.server.server_state.connections) == 1  # every call over the one kept-alive connection
        assert client.request_counts("bc") == {"1": {"200": 5.0, "422": 1.0}}
        assert client.get_deployment() == DeploymentConfig.parse(SINGLE).to_dict()


def test_admin_calls_without_the_token_name_the_fix(serve):
    gw = serve()
    with pytest.raises(GatewayInputError, match="MLOPS_GATEWAY_ADMIN_TOKEN") as e:
        GatewayClient(gw.url).get_deployment()
    assert e.value.status_code == 401
    with GatewayClient(gw.url, "a guess") as client, pytest.raises(GatewayInputError, match="was refused"):
        client.put_deployment(DeploymentConfig.parse(SINGLE))
    assert GatewayClient(gw.url, TOKEN).get_deployment() is None  # nothing deployed yet


def test_waiting_for_a_gateway_that_cannot_become_ready_ends_early(serve):
    empty = serve()
    client = GatewayClient(empty.url)
    assert client.ok("/health") and not client.healthy()
    with pytest.raises(GatewayError, match="not ready within 0s: no deployment configured"):
        client.wait_ready(timeout=0.3)
    with pytest.raises(GatewayError, match="exited before it was ready"):
        client.wait_ready(timeout=30, alive=lambda: False)
    broken = serve({"model_name": "bc", "routes": [{"version": "7"}]})  # no such model: the load fails
    started = time.monotonic()
    with pytest.raises(GatewayError, match="could not load its models: .*no model file for version 7"):
        GatewayClient(broken.url).wait_ready(timeout=60)
    assert time.monotonic() - started < 15


def test_a_gateway_that_does_not_answer_is_a_service_error_without_credentials():
    url = f"http://gw-user:s3cret-pw@127.0.0.1:{free_port()}"
    client = GatewayClient(url, timeout=2.0)
    started = time.monotonic()
    with pytest.raises(GatewayError, match="did not answer GET /health") as e:
        client.health()
    assert e.value.status_code == 0 and "s3cret-pw" not in str(e.value)
    assert not client.ok("/health") and time.monotonic() - started < 10

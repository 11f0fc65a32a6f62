"""The deploy state every worker sees: compare-and-set revisions in MLflow, a second worker, the lease,
the append-only ledger, and the rollbacks of issue 9 (external first deploy, held first model).

Real MLflow server, real gateway subprocesses, real models; nothing is mocked. "Another worker" is a
Deployer with its own work folder and HOME: it shares only MLflow (and the admin token, through the
setting every worker shares), as Celery workers do.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from airflow_mlops.core.errors import MlopsInputError, MlopsServiceError
from airflow_mlops.core.registry import CHAMPION, alias_version
from airflow_mlops.core.tracking import MlflowTarget
from airflow_mlops.deploy import ledger
from airflow_mlops.deploy.plan import DeployRequest
from airflow_mlops.deploy.rollout import RolledBackError
from airflow_mlops.deploy.state import (
    CasRecord,
    DeploymentBusyError,
    Operation,
    StateConflictError,
    StateStore,
)
from airflow_mlops.serving.client import GatewayClient

pytestmark = pytest.mark.timeout(400)


def _served(endpoint: str, records: list[dict], n: int = 3) -> set[str]:
    with GatewayClient(endpoint) as api:
        return {api.predict(records[i % len(records)])["model_version"] for i in range(n)}


def test_racing_writers_of_one_revision_on_the_server_exactly_one_wins(mlflow_server):
    """8 threads, each with its own client, write revision 1 of a record nobody created yet (so they also
    race to create its run): the server's primary key lets exactly one through."""
    key = f"race-{uuid.uuid4().hex[:8]}"
    barrier = threading.Barrier(8)
    outcomes: dict[int, str] = {}

    def write(i: int) -> None:
        rec = CasRecord(MlflowTarget(mlflow_server).client(), "deployment", key)
        barrier.wait()
        try:
            rec.write(1, {"writer": i})
            outcomes[i] = "won"
        except StateConflictError:
            outcomes[i] = "conflict"
        except Exception as e:  # noqa: BLE001 - reported by the assertion
            outcomes[i] = repr(e)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    winners = [i for i, o in outcomes.items() if o == "won"]
    assert len(winners) == 1 and sorted(outcomes.values()).count("conflict") == 7, outcomes
    rev, value = CasRecord(MlflowTarget(mlflow_server).client(), "deployment", key).read()
    assert (rev, value) == (1, {"writer": winners[0]})
    # One run holds the record: the losers of the creation race deleted theirs.
    client = MlflowTarget(mlflow_server).client()
    exp = client.get_experiment_by_name("mlops-deployments")
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`mlops.record` = 'deployment/{key}'")
    assert len(runs) == 1


def test_a_second_worker_rolls_back_what_the_first_deployed(
    two_versions, deployers, records, mlflow_client, model_name, tmp_path, monkeypatch
):
    v1, v2 = two_versions
    monkeypatch.setenv("HOME", str(tmp_path / "home-a"))
    worker_a = deployers("shared", admin_token="shared-token")
    worker_a.deploy(DeployRequest(model_name, v1, validate=False, op_id="a-1"))
    out = worker_a.deploy(DeployRequest(model_name, v2, validate=False, op_id="a-2"))
    assert alias_version(mlflow_client, model_name, CHAMPION) == v2

    monkeypatch.setenv("HOME", str(tmp_path / "home-b"))
    from airflow_mlops.deploy.backends import LocalBackend
    from airflow_mlops.deploy.rollout import Deployer

    worker_b = Deployer("shared", LocalBackend(), MlflowTarget(mlflow_client.tracking_uri),
                        StateStore(tmp_path / "worker-b"), admin_token="shared-token")  # fmt: skip
    back = worker_b.rollback(model_name, op_id="b-1")
    assert back.served_versions == [v1] and back.endpoint == out.endpoint
    assert alias_version(mlflow_client, model_name, CHAMPION) == v1
    assert _served(out.endpoint, records) == {v1}
    assert not (tmp_path / "worker-b" / "shared.admin-token").exists()  # nothing secret written on B


def test_busy_deployment_is_refused_until_the_lease_runs_out(
    two_versions, deployers, mlflow_client, model_name
):
    v1, v2 = two_versions
    dep = deployers("busy")
    first = dep.deploy(DeployRequest(model_name, v1, validate=False, op_id="first"))
    state, rev = dep.records.load("busy")
    state.op = Operation(id="crashed-worker/op", action="deploy", version=v2, strategy="canary",
                         expected_champion=v1, previous_config=state.config, lease_until=time.time() + 600)  # fmt: skip
    dep.records.save(state, "busy", rev)
    t0 = time.monotonic()
    with pytest.raises(DeploymentBusyError, match=r"is busy: operation 'crashed-worker/op'.*lease runs out"):
        dep.deploy(DeployRequest(model_name, v2, validate=False, op_id="second"))
    assert time.monotonic() - t0 < 15
    assert alias_version(mlflow_client, model_name, CHAMPION) == v1
    # The crashed holder's lease runs out: the next operation takes over from what served before it.
    state, rev = dep.records.load("busy")
    state.op.lease_until = time.time() - 1
    dep.records.save(state, "busy", rev)
    out = dep.deploy(DeployRequest(model_name, v2, validate=False, op_id="second"))
    assert out.promoted and out.served_versions == [v2] and out.endpoint == first.endpoint
    assert dep.rollback(model_name).served_versions == [v1]


def test_concurrent_ledger_writers_lose_nothing(two_versions, mlflow_server, model_name):
    v1, _ = two_versions
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def write(i: int) -> None:
        client = MlflowTarget(mlflow_server).client()
        barrier.wait()
        try:
            for j in range(3):
                ledger.record(
                    client, model_name, ledger.LedgerEntry("deploy", v1, None, "replace", reason=f"{i}-{j}")
                )
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=200)
    assert not errors, errors
    client = MlflowTarget(mlflow_server).client()
    history = ledger.read_history(client, model_name)
    assert sorted(h["reason"] for h in history) == sorted(f"{i}-{j}" for i in range(6) for j in range(3))
    import json

    view = json.loads(client.get_registered_model(model_name).tags[ledger.HISTORY_TAG])
    assert view == history[-len(view) :] and view[-1] == history[-1]  # the tag is the log's newest end


def test_failed_first_deploy_to_an_external_gateway_restores_what_it_served(
    two_versions, mlflow_server, records, model_name, tmp_path
):
    """Someone else's gateway serves v1 (not deployed by us): our first deploy of v2 fails its check and
    the gateway serves v1 again, not the failed version."""
    from airflow_mlops.deploy.backends import ExternalBackend
    from airflow_mlops.deploy.rollout import Deployer
    from tests.servers import start_gateway, stop

    v1, v2 = two_versions
    config = {"model_name": model_name, "strategy": "single", "champion": v1,
              "routes": [{"version": v1, "weight": 1.0}]}  # fmt: skip
    proc, url = start_gateway(tmp_path / "gw", mlflow_server, config=config, admin_token="ext-token")
    try:

        def fails(endpoint, cfg, new):
            raise MlopsServiceError("the new version's answers look wrong")

        dep = Deployer("ext-first", ExternalBackend(url), MlflowTarget(mlflow_server), StateStore(tmp_path / "s"),
                       admin_token="ext-token", step_check=fails)  # fmt: skip
        with pytest.raises(RolledBackError, match="rolled back to replace routing of versions"):
            dep.deploy(DeployRequest(model_name, v2, validate=False, op_id="ext-1"))
        assert _served(url, records) == {v1}
        with GatewayClient(url, "ext-token") as api:
            assert api.get_deployment()["routes"] == [{"version": v1, "weight": 1.0}]
        assert proc.poll() is None
    finally:
        stop(proc)


def test_held_first_model_serves_alone_but_champion_waits_for_promotion(
    two_versions, deployers, records, mlflow_client, model_name
):
    v1, _ = two_versions
    dep = deployers("held-first")
    held = dep.deploy(DeployRequest(model_name, v1, strategy="canary", promote=False, validate=False,
                                    step_seconds=0, op_id="canary"))  # fmt: skip
    assert held.served_versions == [v1] and not held.promoted
    assert alias_version(mlflow_client, model_name, CHAMPION) is None  # the online gate has not judged it
    assert _served(held.endpoint, records) == {v1}
    promoted = dep.deploy(DeployRequest(model_name, v1, strategy="replace", validate=False, op_id="promote"))
    assert promoted.promoted and alias_version(mlflow_client, model_name, CHAMPION) == v1
    assert [(h["action"], h["version"]) for h in ledger.read_history(mlflow_client, model_name)] == [
        ("deploy", v1),
        ("promote", v1),
    ]


def test_rollback_of_a_held_first_model_records_what_it_took_out_and_that_nothing_serves(
    two_versions, deployers, mlflow_client, model_name
):
    """The online gate failed a first model's held canary: nothing served before it, so the rollback
    stops the gateway and its ledger entry names the version rolled back and that nothing serves now
    (it used to crash writing the ledger: ``str(None)`` as the version)."""
    v1, _ = two_versions
    dep = deployers("held-first-rb")
    held = dep.deploy(DeployRequest(model_name, v1, strategy="canary", promote=False, validate=False,
                                    step_seconds=0, op_id="canary"))  # fmt: skip
    back = dep.rollback(model_name, held_version=v1, op_id="rb")
    assert back.served_versions == [] and back.endpoint is None
    assert not dep.backend.alive(held.handle) and alias_version(mlflow_client, model_name, CHAMPION) is None
    entry = ledger.read_history(mlflow_client, model_name)[-1]
    assert (entry["action"], entry["version"], entry["rolled_back"], entry["serving"]) == (
        "rollback",
        v1,
        v1,
        "none",
    )
    tags = mlflow_client.get_model_version(model_name, v1).tags
    assert tags["mlops.deploy.action"] == "rollback" and tags["mlops.deploy.serving"] == "none"
    assert dep.rollback(model_name, held_version=v1, op_id="rb-again").reused


def test_rollback_of_a_held_canary_only_when_it_is_held(two_versions, deployers, mlflow_client, model_name):
    """The branch after an online gate that failed, timed out or errored: roll back the held canary of
    this version; when nothing is held (already promoted or rolled back), change nothing."""
    v1, v2 = two_versions
    dep = deployers("held-rb")
    dep.deploy(DeployRequest(model_name, v1, validate=False))
    dep.deploy(DeployRequest(model_name, v2, strategy="canary", canary_steps=(0.3,), step_seconds=0,
                             promote=False, validate=False, op_id="canary"))  # fmt: skip
    back = dep.rollback(model_name, held_version=v2, op_id="rb")
    assert back.served_versions == [v1] and alias_version(mlflow_client, model_name, CHAMPION) == v1
    again = dep.rollback(model_name, held_version=v2, op_id="rb-again")
    assert again.reused and again.served_versions == [v1]
    with pytest.raises(MlopsInputError, match="no earlier routing"):
        dep.rollback(model_name, op_id="rb-3")


def test_abort_restores_routing_and_the_gateway_gets_its_feedback_token(
    two_versions, deployers, records, mlflow_client, model_name
):
    """What on_kill does: a canary interrupted while held gets the routing from before it back. The
    feedback token reaches the gateway by environment and is never in the state of record."""
    import json

    v1, v2 = two_versions
    dep = deployers("abort", feedback_token="fb-Secret-123")
    first = dep.deploy(DeployRequest(model_name, v1, validate=False))
    env = open(f"/proc/{first.handle['pid']}/environ", "rb").read().split(b"\0")
    assert b"MLOPS_GATEWAY_FEEDBACK_TOKEN=fb-Secret-123" in env
    progress = dep.start(DeployRequest(model_name, v2, strategy="canary", canary_steps=(0.5,), step_seconds=60,
                                       validate=False, op_id="killed"))  # fmt: skip
    assert progress.watch is not None and dep.status()["config"]["strategy"] == "canary"
    assert not dep.abort("another-op")  # not the holder: nothing happens
    assert dep.abort("killed")
    state, _ = dep.records.load("abort")
    assert (
        state.config.to_dict()["routes"] == [{"version": v1, "weight": 1.0}]
        and state.op.status == "rolled_back"
    )
    assert _served(first.endpoint, records) == {v1}
    assert alias_version(mlflow_client, model_name, CHAMPION) == v1
    assert "fb-Secret" not in json.dumps(state.to_json())
    assert ledger.read_history(mlflow_client, model_name)[-1]["reason"] == "the task was killed"


def test_on_kill_while_mlflow_is_half_imported_puts_the_routing_back_over_http(
    two_versions, deployers, records, mlflow_conn, model_name, tmp_path, monkeypatch
):
    """The kill of a resumed deploy can land while its main thread is still importing MLflow (on_kill
    runs in that thread's signal handler: ``cannot import name 'MlflowClient' from partially initialized
    module 'mlflow'``). on_kill then imports no MLflow and puts the routing from before the deploy back
    through the gateway's HTTP API. The half-import is simulated by the import system's own flag on the
    module's spec (a real one cannot be timed); the gateway, the registry and the routing are real."""
    import sys

    from airflow_mlops.operators.deploy import DeployOperator

    v1, v2 = two_versions
    dep = deployers("killed-early")
    first = dep.deploy(DeployRequest(model_name, v1, validate=False))
    progress = dep.start(DeployRequest(model_name, v2, strategy="canary", canary_steps=(0.5,), step_seconds=60,
                                       validate=False, op_id="dag/run/deploy/-1"))  # fmt: skip
    assert progress.watch is not None and progress.watch.previous_config.to_dict()["routes"] == [
        {"version": v1, "weight": 1.0}
    ]
    assert _served(first.endpoint, records, n=12) == {v1, v2}
    op = DeployOperator(task_id="deploy", model_name=model_name, deployment_name="killed-early",
                        state_dir=str(tmp_path / "state"), version=v2)  # fmt: skip
    op._op_id = "dag/run/deploy/-1"
    op._restore = {"endpoint": progress.watch.endpoint, "config": progress.watch.previous_config.to_dict()}
    monkeypatch.setattr(sys.modules["mlflow"].__spec__, "_initializing", True, raising=False)
    op.on_kill()
    monkeypatch.undo()
    assert _served(first.endpoint, records, n=12) == {v1}
    state, _ = dep.records.load("killed-early")
    assert state.op.status == "in_progress"  # the state of record keeps the operation until its lease ends

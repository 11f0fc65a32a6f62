"""The closed loop on a real deployment: api-server, scheduler, dag-processor and triggerer (LocalExecutor,
PostgreSQL, ``default_deferrable=true``), the example DAGs unpaused as a user would, driven and observed
only through the REST API and MLflow. No ``dag.test()``: sensors really defer to the triggerer, the
gateway a task started outlives it, and the drift monitor's Asset event makes the scheduler run
``mlops_retrain`` by itself.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deployment.harness import Airflow
from tests.servers import free_port, start_mlflow_server, stop

EXAMPLES = ["mlops_train_gate_deploy", "mlops_drift_monitor", "mlops_retrain"]
# The release chain both training DAGs run; each must succeed (the rollback is skipped).
RELEASE = ("train", "offline_gate", "deploy_canary", "online_gate", "promote")


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def make_data(root: Path) -> tuple[Path, Path]:
    """A git+DVC repository with the first training data (60% of breast_cancer), and the pool the
    production traffic is drawn from (the other 40%), as in the demo."""
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame.sample(frac=1.0, random_state=7).reset_index(drop=True)
    cut = int(len(frame) * 0.6)
    repo, remote = root / "data-repo", root / "dvc-remote"
    (repo / "data").mkdir(parents=True)
    remote.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.email", "ci@example.com")
    _git(repo, "config", "user.name", "ci")
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run([*dvc, "init", "-q"], cwd=repo, check=True)
    subprocess.run([*dvc, "remote", "add", "-d", "local", str(remote)], cwd=repo, check=True)
    frame.iloc[:cut].to_csv(repo / "data" / "training.csv", index=False)
    subprocess.run([*dvc, "add", "-q", "data/training.csv"], cwd=repo, check=True)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "training data v1")
    subprocess.run([*dvc, "push", "-q"], cwd=repo, check=True)
    pool = root / "pool.csv"
    frame.iloc[cut:].to_csv(pool, index=False)
    return repo, pool


class Traffic(threading.Thread):
    """Production traffic: ``python -m airflow_mlops.simulator`` batches against the gateway whenever it
    serves, with ground truth sent back; ``shift`` switches to the changed world. ``paused`` (set)
    holds new batches back while a canary is deployed, so that its online gate's first check finds too
    little evidence and the sensor really defers (it passes at once, rightly, when the evidence is
    already there: a first model serves all the traffic from its canary deploy on)."""

    def __init__(self, endpoint: str, pool: Path, env: dict[str, str], log: Path) -> None:
        super().__init__(name="traffic", daemon=True)
        self.endpoint, self.pool, self.env, self.log = endpoint, pool, env, log
        self.shift: list[str] = []
        self.paused = threading.Event()
        self.stop = threading.Event()
        self.sent = {"clean": 0, "shifted": 0, "failed": 0}
        self.proc: subprocess.Popen | None = None

    def halt(self) -> None:
        """Stop sending, ending a batch in flight."""
        self.stop.set()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
        self.join(timeout=30)

    def run(self) -> None:
        import httpx

        batch = 0
        while not self.stop.is_set():
            if self.paused.is_set():
                time.sleep(0.5)
                continue
            try:
                httpx.get(f"{self.endpoint}/ready", timeout=1, trust_env=False).raise_for_status()
            except httpx.HTTPError:
                time.sleep(0.5)  # nothing served yet
                continue
            shift = list(self.shift)
            args = [sys.executable, "-m", "airflow_mlops.simulator", "--endpoint", self.endpoint,
                    "--data", str(self.pool), "--target", "target", "--requests", "100",
                    "--concurrency", "2", "--feedback-delay", "0.3", "--seed", str(batch)]  # fmt: skip
            for s in shift:
                args += ["--shift", s]
            self.proc = subprocess.Popen(
                args,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
            try:
                out, err = self.proc.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                out, err = self.proc.communicate()
            proc = subprocess.CompletedProcess(args, self.proc.returncode, out, err)
            batch += 1
            with open(self.log, "a") as f:
                f.write(
                    f"--- batch {batch} shift={bool(shift)} rc={proc.returncode}\n{proc.stdout[-600:]}{proc.stderr[-1500:]}\n"
                )
            try:
                stats = json.loads(proc.stdout)
                ok = int(stats["requests"]) - int(stats["failed"])
                self.sent["failed"] += int(stats["failed"])
            except (ValueError, KeyError):
                ok = 0
                self.sent["failed"] += 100
                time.sleep(1)
            self.sent["shifted" if shift else "clean"] += ok


@pytest.fixture(scope="module")
def mlflow_server(tier_dir) -> Iterator[str]:
    """A real MLflow server of this module, its store in the tier's folder (not pytest's temp folders)."""
    proc, url = start_mlflow_server(tier_dir("mlflow"))
    yield url
    stop(proc)


@pytest.fixture(scope="module")
def deployment(postgres, mlflow_server, tier_dir) -> Iterator[dict]:
    """The example DAGs on a real LocalExecutor deployment, with their data, MLflow and traffic."""
    root = tier_dir("local-executor")
    repo, pool = make_data(root)
    model = f"deploy_tier_{secrets.token_hex(3)}"
    gateway_port = free_port()
    feedback_token = secrets.token_urlsafe(16)
    env = {
        "AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps({"conn_type": "mlflow", "host": mlflow_server}),
        "AIRFLOW_CONN_DVC_DEFAULT": json.dumps(
            {"conn_type": "dvc", "host": str(repo), "extra": {"remote": "local"}}
        ),
        "MLOPS_MODEL_NAME": model,
        "MLOPS_DEPLOY_BACKEND": "local",
        "MLOPS_GATEWAY_PORT": str(gateway_port),
        "MLOPS_PREDICTION_LOG_DIR": str(root / "predictions"),
        "MLOPS_DEPLOY_STATE_DIR": str(root / "deployments"),
        "MLOPS_ONLINE_MIN_SAMPLES": "40",
        "MLOPS_DRIFT_WINDOW_SECONDS": "45",
        # The gateway's /feedback takes ground truth only with this bearer token (it and the simulator
        # read it from the environment).
        "MLOPS_GATEWAY_FEEDBACK_TOKEN": feedback_token,
    }
    airflow = Airflow(root, postgres.create_database("airflow_local"), "LocalExecutor", env)
    traffic = None
    try:
        airflow.start_core()
        airflow.wait_dags(EXAMPLES)
        endpoint = f"http://127.0.0.1:{gateway_port}"
        traffic_env = {**airflow.env, "MLOPS_GATEWAY_FEEDBACK_TOKEN": feedback_token}
        traffic = Traffic(endpoint, pool, traffic_env, root / "traffic.log")
        traffic.start()
        yield {"airflow": airflow, "model": model, "traffic": traffic, "root": root, "endpoint": endpoint}
    finally:
        if traffic is not None:
            traffic.halt()
        stragglers = airflow.stop()
        # Only gateways the deploy tasks started may outlive the components: they are the deployment.
        unexpected = [p for p in stragglers if "airflow_mlops.serving" not in p]
        assert not unexpected, f"processes outlived their Airflow component:\n{unexpected}"


def _columns(pool: Path, prefixes: tuple[str, ...] = ("mean", "worst")) -> list[str]:
    header = pool.read_text().splitlines()[0].split(",")
    return [c for c in header if c.split(" ")[0] in prefixes]


@pytest.mark.timeout(2700)  # set-up included; every wait has its own bound, sized for six sessions
def test_the_example_dags_close_the_loop_on_a_real_scheduler(deployment, mlflow_server):
    af: Airflow = deployment["airflow"]
    model, traffic = deployment["model"], deployment["traffic"]
    from mlflow import MlflowClient

    from airflow_mlops.deploy.ledger import read_history

    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    started = time.monotonic()
    # A user unpauses all three examples at once: nothing may run by itself that deploys a model
    # beside the one trained below (the drift monitor's first run and the retrain DAG's cron).
    for dag_id in EXAMPLES:
        af.unpause(dag_id)

    # 1. The first model: train -> offline gate -> canary -> online gate (live traffic) -> promote.
    def resume_when_gate_defers(seen: dict[str, set[str]]) -> None:
        if "deferred" in seen.get("online_gate", ()):
            traffic.paused.clear()

    traffic.paused.set()  # until the online gate has deferred (see Traffic)
    first = af.trigger("mlops_train_gate_deploy")
    seen: dict[str, set[str]] = {}
    tis = af.wait_run(
        "mlops_train_gate_deploy", first, timeout=900, seen=seen, on_poll=resume_when_gate_defers
    )
    traffic.paused.clear()
    states = {t: ti["state"] for t, ti in tis.items()}
    others = {
        d: [(r["run_type"], r["state"]) for r in af.runs(d) if r["dag_run_id"] != first] for d in EXAMPLES
    }
    versions = sorted(mv.version for mv in client.search_model_versions(f"name='{model}'"))
    assert versions == ["1"], (
        f"versions {versions} after the first run: something trained beside it (runs of the examples the "
        f"scheduler made by itself: {others})\n{af.diagnostics('mlops_train_gate_deploy', first)}"
    )
    release = {t: states.get(t) for t in RELEASE}
    assert release == dict.fromkeys(RELEASE, "success") and states.get("rollback") == "skipped", (
        f"{states}\n{af.diagnostics('mlops_train_gate_deploy', first)}"
    )
    assert "deferred" in seen["online_gate"], f"the online gate never deferred: {seen}"
    trained = af.xcom("mlops_train_gate_deploy", first, "train")
    assert trained["model_name"] == model and str(trained["version"]) == "1"
    first_done = time.monotonic() - started

    # 2-3. Production traffic with ground truth, then the changed world.
    af.wait(lambda: traffic.sent["clean"] >= 100, 120, f"clean traffic with ground truth ({traffic.sent})")
    traffic.shift = [f"{c}*1.3" for c in _columns(Path(deployment["root"]) / "pool.csv")]
    af.wait(lambda: traffic.sent["shifted"] >= 400, 240, f"shifted traffic ({traffic.sent})")
    time.sleep(11)  # the gateway flushes its prediction log every 10 s

    # 4. The drift monitor finds the drift; its Asset event requests retraining.
    monitor = af.trigger("mlops_drift_monitor")
    seen_monitor: dict[str, set[str]] = {}
    tis = af.wait_run("mlops_drift_monitor", monitor, timeout=480, seen=seen_monitor)
    assert tis["request_retraining"]["state"] == "success", af.diagnostics("mlops_drift_monitor", monitor)
    request = af.xcom("mlops_drift_monitor", monitor, "request_retraining")
    assert request["model_name"] == model and request["reasons"], request

    # 5. The scheduler queues mlops_retrain on the Asset event by itself; it promotes version 2.
    def asset_run() -> str | None:
        runs = [r for r in af.runs("mlops_retrain") if r["run_type"] == "asset_triggered"]
        return runs[0]["dag_run_id"] if runs else None

    retrain = af.wait(asset_run, 60, "the Asset event to queue mlops_retrain")
    traffic.paused.set()  # until v2's online gate has deferred (see Traffic)
    seen_retrain: dict[str, set[str]] = {}
    tis = af.wait_run(
        "mlops_retrain", retrain, timeout=900, seen=seen_retrain, on_poll=resume_when_gate_defers
    )
    traffic.paused.clear()
    states = {t: ti["state"] for t, ti in tis.items()}
    release = {t: states.get(t) for t in ("snapshot_training_data", *RELEASE)}
    assert set(release.values()) == {"success"} and states.get("rollback") == "skipped", (
        f"{states}\n{af.diagnostics('mlops_retrain', retrain)}"
    )
    assert "deferred" in seen_retrain["online_gate"], f"the online gate never deferred: {seen_retrain}"

    # The registry: exactly two versions, v2 the champion, and a ledger that tells the story.
    versions = sorted(mv.version for mv in client.search_model_versions(f"name='{model}'"))
    assert versions == ["1", "2"], f"versions {versions}: something trained besides the loop"
    assert client.get_registered_model(model).aliases["champion"] == "2"
    history = [(h["action"], str(h["version"])) for h in read_history(client, model)]
    assert history == [
        # A first model's held canary serves alone but is not champion until its online gate passed
        # (issue 9): a "deploy" entry, then the promotion.
        ("deploy", "1"),
        ("promote", "1"),
        ("deploy", "2"),  # the canary, held for the online gate
        ("promote", "2"),
    ], history
    v2 = client.get_model_version(model, "2")
    assert v2.tags["mlops.gate.offline"] == "passed" and v2.tags["mlops.gate.online"] == "passed"
    assert v2.tags["mlops.airflow.dag_id"] == "mlops_retrain"
    # No other run of any example happened besides the ones above, or they did nothing.
    others = [
        (d, r["run_type"], r["state"])
        for d in EXAMPLES
        for r in af.runs(d)
        if r["dag_run_id"] not in (first, monitor, retrain)
    ]
    print(
        f"\nfirst model {first_done:.0f}s, whole loop {time.monotonic() - started:.0f}s; traffic {traffic.sent}; "
        f"other runs {others}; deferred seen: {sorted(t for t, s in {**seen, **seen_retrain}.items() if 'deferred' in s)}"
    )

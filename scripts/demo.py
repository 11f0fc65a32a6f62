"""The embedded demo: the whole model lifecycle on this machine, no Docker, through real Airflow DAG runs.

1. ``mlops_train_gate_deploy`` trains a first model from DVC-tracked data, gates it and deploys it.
2. Production traffic (the simulator) is served with delayed ground truth.
3. The world changes: a shift is injected into the traffic.
4. ``mlops_drift_monitor`` finds the drift (and the fall of live F1) and emits a retraining request.
5. Airflow queues ``mlops_retrain`` on that Asset event; it snapshots the labelled production data
   with DVC, retrains, gates, deploys a canary, gates it on live metrics, and promotes it.

Production traffic is fresh rows drawn from the data's distribution (``RowGenerator``, fitted on rows no
model trains on at first), never a replayed pool: every version is judged (test split, online gate) on
rows it never trained on, and the summary says how many rows each stage trained and was judged on.

The terminal shows one line per step and the summary; everything else (DVC, MLflow, Airflow, pip in
``demo.sh``) goes to the log file whose path is printed first. Everything lives in ``.mlops/``
(git-ignored). Run: ``bash scripts/demo.sh``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from airflow_mlops.core.net import free_port

ROOT = Path(__file__).resolve().parents[1]
WORK = Path(os.environ.get("MLOPS_DEMO_DIR", ROOT / ".mlops")).resolve()
MODEL = os.environ.get("MLOPS_MODEL_NAME", "breast_cancer")
# The changed world: a recalibrated instrument reads every size and shape measure 30% higher.
SHIFT_COLUMNS = ("mean", "worst")
SHIFT_FACTOR = 1.3
LOG = Path(os.environ.get("MLOPS_DEMO_LOG", WORK / "demo.log")).resolve()


class Console:
    """The terminal gets progress lines and the summary; file descriptors 1 and 2 (this process, its
    threads and its subprocesses: DVC, MLflow, Airflow) go to the log file."""

    def __init__(self, log: Path) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log = log
        sys.stdout.flush()
        sys.stderr.flush()
        self._terminal = os.fdopen(os.dup(1), "w", buffering=1)
        with open(log, "a") as f:  # O_APPEND: the shared descriptors never overwrite each other
            os.dup2(f.fileno(), 1)
            os.dup2(f.fileno(), 2)

    def say(self, text: str = "") -> None:
        """A line on the terminal, and in the log."""
        self._terminal.write(text + "\n")
        print(text, flush=True)


console: Console | None = None


def say(text: str = "") -> None:
    if console is None:
        print(text, flush=True)
    else:
        console.say(text)


def configure_environment() -> dict[str, str]:
    """Point Airflow, the connections and the example DAGs at the embedded stores (before importing Airflow)."""
    mlflow_dir = WORK / "mlflow"
    # The embedded default is a local store; MLOPS_DEMO_MLFLOW_URI runs the same story against a server.
    server = os.environ.get("MLOPS_DEMO_MLFLOW_URI")
    mlflow_conn = (
        {"conn_type": "mlflow", "host": server}
        if server
        else {
            "conn_type": "mlflow",
            "host": f"sqlite:///{mlflow_dir / 'mlflow.db'}",
            "extra": {"artifact_location": str(mlflow_dir / "artifacts")},
        }
    )
    env = {
        "AIRFLOW_HOME": str(WORK / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # Unpaused, so that an Asset event queues the DAGs scheduled on it, as in production.
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps(mlflow_conn),
        "AIRFLOW_CONN_DVC_DEFAULT": json.dumps(
            {"conn_type": "dvc", "host": str(WORK / "data-repo"), "extra": {"remote": "local"}}
        ),
        "MLOPS_MODEL_NAME": MODEL,
        # The gateway takes ground truth only with its feedback token: the DeployOperator hands it to the
        # gateway, the traffic simulator sends it.
        "MLOPS_GATEWAY_FEEDBACK_TOKEN": os.environ.get("MLOPS_GATEWAY_FEEDBACK_TOKEN")
        or secrets.token_urlsafe(24),
        "MLOPS_GATEWAY_PORT": str(free_port()),
        "MLOPS_PREDICTION_LOG_DIR": str(WORK / "predictions"),
        "MLOPS_DEPLOY_STATE_DIR": str(WORK / "deployments"),
        "MLOPS_ONLINE_MIN_SAMPLES": "40",
        "MLOPS_DRIFT_WINDOW_SECONDS": "45",
        "GIT_PYTHON_REFRESH": "quiet",
        "DVC_NO_ANALYTICS": "1",
    }
    os.environ.update(env)
    # Airflow's DAG processor and workers put the DAG folder on sys.path; so does this in-process run.
    sys.path.insert(0, str(ROOT / "dags"))
    return env


def run(cmd: list[str], cwd: Path | None = None) -> str:
    return subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def split_data():
    """The first training data (60%) and the rest (40%): production rows are drawn from the distribution
    of the rest (``RowGenerator``), so no production row is a row of the first training data."""
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame.sample(frac=1.0, random_state=7).reset_index(drop=True)
    cut = int(len(frame) * 0.6)
    return frame.iloc[:cut].reset_index(drop=True), frame.iloc[cut:].reset_index(drop=True)


def make_data_repo(training) -> None:  # noqa: ANN001 - a DataFrame
    """A git+DVC repository holding the first training data, pushed to a local remote."""
    repo, remote = WORK / "data-repo", WORK / "dvc-remote"
    repo.mkdir(parents=True)
    remote.mkdir(parents=True, exist_ok=True)
    run(["git", "init", "-q", "-b", "main"], repo)
    run(["git", "config", "user.email", "demo@airflow-mlops.local"], repo)
    run(["git", "config", "user.name", "airflow-mlops demo"], repo)
    run([sys.executable, "-m", "dvc", "init", "-q"], repo)
    run([sys.executable, "-m", "dvc", "remote", "add", "-d", "local", str(remote)], repo)
    (repo / "data").mkdir()
    training.to_csv(repo / "data" / "training.csv", index=False)
    run([sys.executable, "-m", "dvc", "add", "-q", "data/training.csv"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", "training data v1"], repo)
    run([sys.executable, "-m", "dvc", "push", "-q"], repo)


class Traffic(threading.Thread):
    """Production traffic in the background: predictions with ground truth a moment later."""

    def __init__(self, endpoint: str, world) -> None:  # noqa: ANN001 - a DataFrame
        from airflow_mlops.simulator import RowGenerator

        super().__init__(name="traffic", daemon=True)
        # Fresh rows each round, never a replayed pool: a version is never judged on rows it trained on.
        self.endpoint, self.rows = endpoint, RowGenerator(world, "target", seed=11)
        self.shifts: list = []
        self.stop = threading.Event()
        self.sent = {"clean": 0, "shifted": 0, "failed": 0}
        self.first_rows = 0

    def run(self) -> None:
        import httpx

        from airflow_mlops.simulator import simulate

        while not self.stop.is_set():
            try:
                httpx.get(f"{self.endpoint}/ready", timeout=1, trust_env=False).raise_for_status()
            except httpx.HTTPError:
                time.sleep(0.5)  # no model served yet
                continue
            shifts = list(self.shifts)
            stats = simulate(self.endpoint, self.rows.sample(40), "target", requests=None, shifts=shifts,
                             concurrency=2, feedback_delay=0.3, seed=sum(self.sent.values()))  # fmt: skip
            self.sent["shifted" if shifts else "clean"] += stats.requests - stats.failed
            self.sent["failed"] += stats.failed

    def wait_for(self, kind: str, n: int, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while self.sent[kind] < n:
            if time.monotonic() > deadline:
                raise SystemExit(f"traffic stalled: {self.sent}")
            time.sleep(0.5)


def run_dag(dag_id: str, **conf: object) -> str:
    """Run one DAG through Airflow (``dag.test()``) and return its final state."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    if bag.import_errors:
        raise SystemExit(f"DAG import errors: {bag.import_errors}")
    started = time.monotonic()
    dr = bag.dags[dag_id].test(run_conf=conf or None)
    states = {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}
    print(f"DAG {dag_id}: task states {states}")
    say(f"   {dag_id}: {dr.state} in {time.monotonic() - started:.0f}s")
    if str(dr.state) != "success":
        raise SystemExit(f"{dag_id} did not succeed; task logs: {WORK / 'airflow' / 'logs'}")
    return str(dr.state)


def queued_retraining() -> dict | None:
    """The retraining request Airflow queued for ``mlops_retrain`` (as its scheduler would run it)."""
    from airflow.models.asset import AssetDagRunQueue, AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        queued = (
            session.query(AssetDagRunQueue).filter(AssetDagRunQueue.target_dag_id == "mlops_retrain").all()
        )
        if not queued:
            return None
        asset = session.get(AssetModel, queued[0].asset_id)
        event = (
            session.query(AssetEvent)
            .filter(AssetEvent.asset_id == asset.id)
            .order_by(AssetEvent.id.desc())
            .first()
        )
        extra = dict(event.extra or {})
        extra["asset"] = asset.uri
        extra["source_dag"] = event.source_dag_id
        session.query(AssetDagRunQueue).filter(AssetDagRunQueue.target_dag_id == "mlops_retrain").delete()
        return extra


def gateway_metrics(endpoint: str) -> dict[str, dict[str, float]]:
    """Live metrics per served version from the gateway's /metrics page."""
    from airflow_mlops.serving.client import GatewayClient, parse_metrics

    with GatewayClient(endpoint) as client:
        samples = parse_metrics(client.metrics_text())
    out: dict[str, dict[str, float]] = {}
    for (name, labels), value in samples.items():
        labels = dict(labels)
        if labels.get("model") == MODEL and name.startswith("mlops_gateway_live_"):
            out.setdefault(labels["version"], {})[name.removeprefix("mlops_gateway_live_")] = value
    return out


def judged_live(tags: dict[str, str]) -> int | None:
    """How many labelled live requests the online gate judged a version on (its min_samples row)."""
    rows = json.loads(tags.get("mlops.gate.online.details", "{}")).get("rows", [])
    counts = [
        r.get("observed") for r in rows if r.get("check") == "min_samples" and r.get("observed") is not None
    ]
    return int(min(counts)) if counts else None


def summary(endpoint: str, drift: dict, traffic: Traffic) -> None:
    """Versions, the rows each stage trained and was judged on, metrics, champion history, drift, where
    things are."""
    from mlflow import MlflowClient

    from airflow_mlops.deploy.ledger import read_history

    uri = json.loads(os.environ["AIRFLOW_CONN_MLFLOW_DEFAULT"])["host"]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    aliases = client.get_registered_model(MODEL).aliases
    live = gateway_metrics(endpoint)
    say(f"\nModel {MODEL}: rows each version trained on, and was judged on (test split, online gate)")
    say(f"  {'version':>7}  {'trained':>7}  {'tested':>6}  {'gated live':>10}  {'test f1':>7}  {'live f1':>7}  "
        f"{'live acc':>8}  aliases, gates")  # fmt: skip
    for mv in sorted(client.search_model_versions(f"name='{MODEL}'"), key=lambda m: int(m.version)):
        run = client.get_run(mv.run_id).data
        m, lv = run.metrics, live.get(str(mv.version), {})
        names = [a for a, v in aliases.items() if str(v) == str(mv.version)]
        gates = [
            f"{k.removeprefix('mlops.gate.')}={v}"
            for k, v in mv.tags.items()
            if k.startswith("mlops.gate.") and not k.endswith(".details")
        ]
        gated = judged_live(mv.tags)
        say(
            f"  {mv.version:>7}  {run.params.get('n_train_rows', '?'):>7}  {run.params.get('n_test_rows', '?'):>6}  "
            f"{'-' if gated is None else gated:>10}  {m.get('f1', float('nan')):7.3f}  "
            f"{lv.get('f1', float('nan')):7.3f}  {lv.get('accuracy', float('nan')):8.3f}  {', '.join(names + gates)}"
        )
    snapshot = run_quiet(["git", "log", "-1", "--format=%s"], WORK / "data-repo")
    added = snapshot.split(" (", 1)[0]  # "N labelled production rows (reasons)"
    say(
        f"  Data: the first training file held {traffic.first_rows} rows (train + test split); retraining added {added}"
    )
    say(
        f"  Traffic: {traffic.sent['clean']} clean + {traffic.sent['shifted']} shifted requests, each a fresh row drawn "
        "from the data's distribution"
    )
    say("  (none replayed): every test split and online gate above judged rows its version never trained on")
    say("\nChampion history (promotion ledger)")
    for h in read_history(client, MODEL):
        say(f"  {h['at']}  {h['action']:<8} version {h['version']:<3} from {h.get('from_version') or '-':<3} "
            f"{h.get('dag_run') or ''}")  # fmt: skip
    say(
        f"\nDrift: {drift.get('drift_share', 0):.0%} of columns drifted -> {'; '.join(drift.get('reasons', []))}"
    )
    say(f"\nMLflow store: {uri}  (UI: .venv/bin/mlflow ui --backend-store-uri {uri} --port 5000)")
    say("Drift reports: MLflow experiment 'mlops-drift' in that store (JSON + HTML per check)")
    say(f"Prediction log: {WORK / 'predictions'}; DVC data repository: {WORK / 'data-repo'}")
    say(f"Airflow home and task logs: {WORK / 'airflow'}")


def run_quiet(cmd: list[str], cwd: Path) -> str:
    try:
        return run(cmd, cwd)
    except (OSError, subprocess.CalledProcessError):
        return "?"


def stop_gateway() -> None:
    from airflow_mlops.core.tracking import MlflowTarget
    from airflow_mlops.deploy.backends import LocalBackend
    from airflow_mlops.deploy.rollout import Deployer
    from airflow_mlops.deploy.state import StateStore

    uri = json.loads(os.environ["AIRFLOW_CONN_MLFLOW_DEFAULT"])["host"]
    Deployer(MODEL, LocalBackend(), MlflowTarget(uri), StateStore(WORK / "deployments")).teardown()


def reset_work() -> None:
    """Every demo starts from nothing (but the log, which ``demo.sh`` may have begun)."""
    WORK.mkdir(parents=True, exist_ok=True)
    for path in WORK.iterdir():
        if path != LOG:
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


def main() -> None:
    global console
    started = time.monotonic()
    reset_work()
    console = Console(LOG)
    say(f"Embedded demo in {WORK}; details (DVC, MLflow, Airflow) in the log: {LOG}")
    try:
        lifecycle(started)
    except BaseException as e:
        say(f"FAILED: {type(e).__name__}: {e}" if not isinstance(e, SystemExit) else f"FAILED: {e}")
        say(f"Details in the log: {LOG}")
        raise


def lifecycle(started: float) -> None:
    env = configure_environment()
    endpoint = f"http://127.0.0.1:{env['MLOPS_GATEWAY_PORT']}"
    say(f"0. Data: a git+DVC repository with the first training data; the gateway will serve at {endpoint}")
    training, world = split_data()
    make_data_repo(training)
    run([sys.executable, "-m", "airflow", "db", "migrate"])
    traffic = Traffic(endpoint, world)
    traffic.first_rows = len(training)
    traffic.start()
    try:
        say("1. First model: train from DVC data, offline gate, deploy, online gate on live traffic, promote")
        run_dag("mlops_train_gate_deploy")
        say(
            f"2. Serving production traffic with delayed ground truth ({traffic.sent['clean']} requests so far)"
        )
        from airflow_mlops.simulator import Shift

        columns = [c for c in world.columns if c.split(" ")[0] in SHIFT_COLUMNS]
        traffic.shifts = [Shift(c, "*", SHIFT_FACTOR) for c in columns]
        say(f"3. The world changes: {len(columns)} of {world.shape[1] - 1} features now read {SHIFT_FACTOR}x")
        traffic.wait_for("shifted", 400)
        time.sleep(11)  # the gateway writes its prediction log every 10 s
        say("4. Drift monitor: drift in the prediction log, and the champion's live F1")
        run_dag("mlops_drift_monitor")
        request = queued_retraining()
        if request is None:
            raise SystemExit("the drift monitor did not request retraining")
        say(f"   Airflow queued mlops_retrain on {request['asset']} from {request['source_dag']}")
        say("5. Retraining with the labelled production data, then canary, online gate, promotion")
        run_dag("mlops_retrain", reasons=request["reasons"])
        summary(endpoint, request, traffic)
    finally:
        traffic.stop.set()
        traffic.join(timeout=30)
        stop_gateway()
    say(f"\nDemo finished in {time.monotonic() - started:.0f}s; details in {LOG}")


if __name__ == "__main__":
    main()

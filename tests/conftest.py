"""Shared fixtures: an isolated Airflow home, a real MLflow server, a real git+DVC repo."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# Airflow reads its configuration at import: isolate it before anything imports airflow.
_HOME = Path(tempfile.mkdtemp(prefix="mlops-airflow-home-"))
os.environ["AIRFLOW_HOME"] = str(_HOME)
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
# dag.test() in Airflow 3.3 runs DAGs from a bundle folder: the example DAGs and the test DAGs
# (tests/dag_files) are copied into one, and a test runs them by id with run_dag().
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(_HOME / "dags")
# Airflow's DAG processor and workers put the DAG folder on sys.path (the example DAGs share a module).
(_HOME / "dags").mkdir()
sys.path.insert(0, str(_HOME / "dags"))
os.environ.setdefault("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{_HOME / 'airflow.db'}")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]

from tests.servers import start_mlflow_server, start_prometheus, stop  # noqa: E402


@pytest.fixture(autouse=True)
def _mlflow_http_env_restored():
    """The gate CLI bounds MLflow's HTTP retries and timeout in its own process's environment
    (``airflow_mlops.cli``); tests that call it in-process must not leave those bounds to later tests."""
    keys = (
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
        "MLFLOW_HTTP_REQUEST_TIMEOUT",
    )
    before = {k: os.environ.get(k) for k in keys}
    yield
    for k, v in before.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated Airflow metadata database (SQLite) in a throwaway AIRFLOW_HOME, with the DAG folder."""
    dags = _HOME / "dags"
    shutil.copytree(
        REPO_ROOT / "dags", dags, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__")
    )
    for src in (REPO_ROOT / "tests" / "dag_files").glob("*.py"):
        shutil.copy(src, dags / src.name)
    importlib.invalidate_caches()
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)
    return _HOME


def load_dag(dag_id: str):
    """The DAG object with ``dag_id`` from the test DAG folder."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(_HOME / "dags"))
    assert not bag.import_errors, bag.import_errors
    return bag.dags[dag_id]


def run_dag(dag_id: str, **conf):
    """Run a DAG of the test DAG folder with ``dag.test()`` and return its DagRun."""
    return load_dag(dag_id).test(run_conf=conf or None)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """URL of a real MLflow tracking server on 127.0.0.1 (SQLite backend, local artifacts)."""
    proc, url = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    yield url
    stop(proc)


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory):
    """A real Prometheus server on 127.0.0.1 (1 s scrapes); ``.add_target("127.0.0.1:PORT")`` to scrape more.

    Returns a :class:`tests.servers.PrometheusServer` (``.url``, ``.add_target``, ``.query``, ``.wait_for``).
    """
    server = start_prometheus(tmp_path_factory.mktemp("prometheus"))
    yield server
    stop(server.proc)


def conn_env(conn_id: str, conn: dict) -> tuple[str, str]:
    """The environment variable that defines an Airflow connection (JSON form)."""
    return f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn)


@pytest.fixture
def mlflow_conn(mlflow_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The ``mlflow_default`` connection pointed at the test MLflow server; returns the server URL."""
    monkeypatch.setenv(*conn_env("mlflow_default", {"conn_type": "mlflow", "host": mlflow_server}))
    return mlflow_server


@pytest.fixture
def mlflow_client(mlflow_server: str):
    """An MlflowClient on the test server."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)


@pytest.fixture
def model_name(request: pytest.FixtureRequest) -> str:
    """A registered-model name unique to the test (the server is shared by the session)."""
    import uuid

    return f"{request.node.name[:40]}-{uuid.uuid4().hex[:6]}".replace("[", "-").replace("]", "")


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="session")
def _dvc_repo_template(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One real git + DVC repo with its remote, made once (four ``dvc`` runs cost seconds each); every
    ``dvc_repo`` is a copy of it. The remote's URL is relative (``../dvc-remote``), so a copy of the repo and
    its remote side by side is a complete repo with its own remote, sharing nothing with the template."""
    from sklearn.datasets import load_breast_cancer

    root = tmp_path_factory.mktemp("dvc-template")
    repo, remote = root / "repo", root / "dvc-remote"
    repo.mkdir()
    remote.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.email", "ci@example.com")
    _git(repo, "config", "user.name", "ci")
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=repo, check=True)
    subprocess.run(
        [sys.executable, "-m", "dvc", "remote", "add", "-d", "local", "../dvc-remote"], cwd=repo, check=True
    )
    (repo / "data").mkdir()
    frame = load_breast_cancer(as_frame=True).frame
    frame.to_csv(repo / "data" / "breast_cancer.csv", index=False)
    subprocess.run([sys.executable, "-m", "dvc", "add", "-q", "data/breast_cancer.csv"], cwd=repo, check=True)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "data v1")
    subprocess.run([sys.executable, "-m", "dvc", "push", "-q"], cwd=repo, check=True)
    shutil.rmtree(repo / ".dvc" / "tmp", ignore_errors=True)  # DVC's state of this path, not of a copy
    return {"root": root, "rev": _git(repo, "rev-parse", "HEAD"), "frame": frame}


@pytest.fixture
def dvc_repo(_dvc_repo_template: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """A real git + DVC repo with a local-folder remote, tracking ``data/breast_cancer.csv``.

    Returns a dict with ``path``, ``remote``, ``rev`` (the commit sha) and ``data_path``; the
    ``dvc_default`` connection points at it. Each test gets its own copy of the session's template.
    """
    repo, remote = tmp_path / "repo", tmp_path / "dvc-remote"
    shutil.copytree(_dvc_repo_template["root"] / "repo", repo, symlinks=True)
    shutil.copytree(_dvc_repo_template["root"] / "dvc-remote", remote, symlinks=True)
    rev = _dvc_repo_template["rev"]
    assert _git(repo, "rev-parse", "HEAD") == rev
    monkeypatch.setenv(
        *conn_env("dvc_default", {"conn_type": "dvc", "host": str(repo), "extra": {"remote": "local"}})
    )
    frame = _dvc_repo_template["frame"].copy()
    return {"path": repo, "remote": remote, "rev": rev, "data_path": "data/breast_cancer.csv", "frame": frame}

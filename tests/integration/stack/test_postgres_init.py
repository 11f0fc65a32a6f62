"""docker/postgres/init-mlflow-db.sh against a real PostgreSQL server (Debian's postgresql package).

The stack's Postgres container runs the script once, as its superuser, with ``POSTGRES_USER``,
``POSTGRES_DB`` and ``MLFLOW_DB_PASSWORD`` set; here a throwaway cluster on a free loopback port does.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.stack.stack_files import DOCKER
from tests.servers import free_port

SCRIPT = DOCKER / "postgres" / "init-mlflow-db.sh"
PASSWORD = "s3cret 'quoted' $pass"  # quotes, spaces and a dollar must survive as a literal


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return shutil.which(name) or (found[-1] if found else None)


def _as_postgres(cmd: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, str]]:
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl and shutil.which("psql")):
        pytest.skip("PostgreSQL is absent: apt-get install -y postgresql (CI installs it)")
    root = Path(tempfile.mkdtemp(prefix="stack-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    data, port = root / "data", free_port()
    subprocess.run(
        _as_postgres([initdb, "-D", str(data), "-U", "airflow", "--auth-local=trust", "--auth-host=scram-sha-256"]),
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
    subprocess.run(
        _as_postgres([pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "pg.log"), "-w", "start"]),
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    env = {"PATH": os.environ["PATH"], "PGHOST": str(root), "PGPORT": str(port)}
    try:
        # What the image's entrypoint does before running the init scripts: create POSTGRES_DB.
        subprocess.run(
            ["psql", "-U", "airflow", "-d", "postgres", "-c", "CREATE DATABASE airflow"],
            env=env, check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        yield {**env, "port": str(port)}
    finally:
        subprocess.run(
            _as_postgres([pg_ctl, "-D", str(data), "-m", "fast", "stop"]), capture_output=True, timeout=60
        )
        shutil.rmtree(root, ignore_errors=True)


def _run_script(cluster: dict[str, str], password: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in cluster.items() if k != "port"}
    env.update(POSTGRES_USER="airflow", POSTGRES_DB="airflow", MLFLOW_DB_PASSWORD=password)
    return subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)


def _login_as_mlflow(cluster: dict[str, str], password: str) -> subprocess.CompletedProcess[str]:
    """A TCP login with a password (scram-sha-256), as MLflow's server makes it."""
    return subprocess.run(
        ["psql", "-h", "127.0.0.1", "-p", cluster["port"], "-U", "mlflow", "-d", "mlflow", "-tAc",
         "SELECT current_user || '/' || current_database() || '/' || "
         "(SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'mlflow')"],
        env={"PATH": os.environ["PATH"], "PGPASSWORD": password}, capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def test_creates_mlflow_role_and_database_and_is_idempotent(cluster: dict[str, str]) -> None:
    first = _run_script(cluster, PASSWORD)
    assert first.returncode == 0, first.stderr
    again = _run_script(cluster, PASSWORD)  # a restart with an existing volume must not break
    assert again.returncode == 0, again.stderr
    login = _login_as_mlflow(cluster, PASSWORD)
    assert login.returncode == 0, login.stderr
    assert login.stdout.strip() == "mlflow/mlflow/mlflow"
    assert _login_as_mlflow(cluster, "wrong").returncode != 0


def test_refuses_to_run_without_a_password(cluster: dict[str, str]) -> None:
    proc = _run_script(cluster, "")
    assert proc.returncode != 0
    assert "MLFLOW_DB_PASSWORD" in proc.stderr

"""Airflow's real components on loopback, for the deployment tier: Postgres, Redis, and an Airflow
deployment (api-server, scheduler, dag-processor, triggerer, Celery workers) driven through its REST API.

Every process starts in its own process group with its output in a log file, and carries a marker in
its environment (``MLOPS_TEST_DEPLOYMENT_ID``) that its children (task processes, gateways a task
started) inherit, so that teardown can find and stop everything the deployment made.
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.servers import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
TEST_DAGS = Path(__file__).resolve().parent / "dags"
MARKER = "MLOPS_TEST_DEPLOYMENT_ID"
TERMINAL = {"success", "failed"}
TI_DONE = {"success", "failed", "skipped", "upstream_failed", "removed"}


def tail(path: Path, chars: int = 4000) -> str:
    """The end of a log file (or why there is none)."""
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError as e:
        return f"<{path}: {e}>"


def _stop_group(pid: int, timeout: float = 20.0) -> None:
    """SIGTERM the process group ``pid`` leads, then SIGKILL what is left after ``timeout``."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def marked_processes(marker: str) -> list[int]:
    """Live processes (not zombies) whose environment carries ``MLOPS_TEST_DEPLOYMENT_ID=<marker>``."""
    needle = f"{MARKER}={marker}".encode() + b"\0"
    found = []
    for d in glob.glob("/proc/[0-9]*"):
        pid = int(d.rsplit("/", 1)[1])
        if pid == os.getpid():
            continue
        try:
            if needle not in Path(d, "environ").read_bytes() + b"\0":
                continue
            state = Path(d, "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if state not in ("Z", "X"):
            found.append(pid)
    return found


def describe(pids: list[int]) -> str:
    """``pid: command line`` of each process."""
    lines = []
    for pid in pids:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            cmd = "?"
        lines.append(f"{pid}: {cmd[:200]}")
    return "\n".join(lines)


def kill_marked(marker: str, timeout: float = 20.0) -> list[str]:
    """Stop every process carrying ``marker`` (whole process groups); return what had to be stopped."""
    pids = marked_processes(marker)
    stopped = describe(pids).splitlines()
    for pgid in {os.getpgid(p) for p in pids if Path(f"/proc/{p}").exists()}:
        _stop_group(pgid, timeout)
    return stopped


def _log_line(entry: Any) -> str:
    """One structured task-log entry as text, with its exception (type and message) when it has one."""
    if not isinstance(entry, dict):
        return str(entry)
    line = f"{entry.get('timestamp', '')} {entry.get('event', '')}"
    for err in entry.get("error_detail") or []:
        if isinstance(err, dict):
            line += f"\n    {err.get('exc_type')}: {err.get('exc_value')}"
    return line


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    path = found[-1] if found else shutil.which(name)
    if not path:
        raise RuntimeError(
            f"PostgreSQL's {name} is missing: run scripts/setup.sh (apt-get install postgresql)"
        )
    return path


def _as_postgres(cmd: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


class Postgres:
    """A private PostgreSQL cluster on a free loopback port (trust auth, superuser ``airflow``)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="mlops-deploy-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        self.data, self.port = self.root / "data", free_port()
        self.log = self.root / "pg.log"

    def start(self) -> Postgres:
        initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
        init = subprocess.run(
            _as_postgres([initdb, "-D", str(self.data), "-U", "airflow", "--auth=trust"]),
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if init.returncode:
            raise RuntimeError(f"initdb failed: {init.stdout}{init.stderr}")
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=300"
        # pg_ctl start daemonizes the server with setsid: it is its own process group.
        started = subprocess.run(
            _as_postgres([pg_ctl, "-D", str(self.data), "-o", options, "-l", str(self.log), "-w", "start"]),
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if started.returncode:
            raise RuntimeError(f"PostgreSQL did not start: {started.stderr}\n{tail(self.log)}")
        return self

    def create_database(self, name: str) -> str:
        """Create database ``name``; return its SQLAlchemy URL (psycopg2)."""
        subprocess.run(
            [_pg_bin("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "airflow", "-d", "postgres",
             "-v", "ON_ERROR_STOP=1", "-c", f'CREATE DATABASE "{name}"'],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        return f"postgresql+psycopg2://airflow@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        subprocess.run(
            _as_postgres([_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "stop"]),
            capture_output=True, timeout=60,
        )  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)


def start_redis(root: Path) -> tuple[subprocess.Popen, str]:
    """Debian's ``redis-server`` on a free loopback port, no persistence; returns (process, URL)."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).exists():
        raise RuntimeError("redis-server is missing: run scripts/setup.sh (apt-get install redis-server)")
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = open(root / "redis.log", "wb")  # noqa: SIM115 - kept open for the process's life
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(root)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    import socket

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {proc.returncode}:\n{tail(root / 'redis.log')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.2)
    _stop_group(proc.pid)
    raise RuntimeError(f"redis-server did not answer within 30s:\n{tail(root / 'redis.log')}")


def dag_folder(root: Path) -> Path:
    """One DAG folder: the repository's example DAGs plus the tier's test DAGs."""
    folder = root / "dags"
    shutil.copytree(REPO_ROOT / "dags", folder, ignore=shutil.ignore_patterns("__pycache__"))
    for src in TEST_DAGS.glob("*.py"):
        shutil.copy(src, folder / src.name)
    return folder


class Airflow:
    """An Airflow deployment made of real processes, observed only through its REST API.

    :param root: folder for its home, logs and DAG folder.
    :param database_url: the metadata database (SQLAlchemy URL).
    :param executor: ``LocalExecutor`` or ``CeleryExecutor``.
    :param env: more environment for every component (connections, ``MLOPS_*`` settings).
    :param celery: ``{"broker_url": ..., "result_backend": ...}`` for the CeleryExecutor.
    """

    def __init__(
        self,
        root: Path,
        database_url: str,
        executor: str,
        env: dict[str, str],
        celery: dict[str, str] | None = None,
    ) -> None:
        self.root = root
        self.home = root / "airflow-home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.logs = root / "component-logs"
        self.logs.mkdir(exist_ok=True)
        self.marker = uuid.uuid4().hex
        self.password = secrets.token_urlsafe(12)
        self.api_port = free_port()
        self.url = f"http://127.0.0.1:{self.api_port}"
        self.procs: dict[str, subprocess.Popen] = {}
        self._token: str | None = None
        passwords = self.home / "passwords.json"
        passwords.write_text(json.dumps({"admin": self.password}))
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AIRFLOW", "MLOPS_", "MLFLOW_", "PYTEST"))
        }
        self.env = {
            **base,
            "PATH": f"{Path(sys.executable).parent}:{base.get('PATH', '/usr/bin:/bin')}",
            # The repository root, for the hostname callable below (tests.deployment.hostname).
            "PYTHONPATH": str(REPO_ROOT),
            MARKER: self.marker,
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dag_folder(root)),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": executor,
            "AIRFLOW__CORE__PARALLELISM": "6",
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.deployment.hostname.name",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url,
            "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "true",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API__WORKERS": "1",
            # One signing key for every component: workers' task tokens must verify on the api-server.
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            # All task logs in one folder the api-server reads (the role remote logging plays in
            # production): two workers on one host cannot each serve logs on the configured port.
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(root / "task-logs"),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "MLFLOW_ENABLE_ASYNC_LOGGING": "false",
            # MLflow's telemetry thread sets and pops _MLFLOW_TELEMETRY_SESSION_ID in os.environ while a
            # task's request reads the environment: "API request ... failed with exception
            # '_MLFLOW_TELEMETRY_SESSION_ID'" (a KeyError) failed resumed deploys on Celery workers.
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "GIT_PYTHON_REFRESH": "quiet",
            "DVC_NO_ANALYTICS": "1",
            **env,
        }
        if celery:
            self.env["AIRFLOW__CELERY__BROKER_URL"] = celery["broker_url"]
            self.env["AIRFLOW__CELERY__RESULT_BACKEND"] = celery["result_backend"]
            self.env["AIRFLOW__CELERY__WORKER_CONCURRENCY"] = "2"

    # -- processes --------------------------------------------------------------------------------

    def migrate(self) -> None:
        """``airflow db migrate`` (fails with its output)."""
        proc = subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"], env=self.env,
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        (self.logs / "db-migrate.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode:
            raise RuntimeError(f"airflow db migrate failed:\n{(proc.stdout + proc.stderr)[-4000:]}")

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start ``airflow <args>`` as component ``name`` in its own process group."""
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - kept open for the process's life
        proc = subprocess.Popen(
            [sys.executable, "-m", "airflow", *args], env={**self.env, "MLOPS_TEST_HOSTNAME": name, **(env or {})},
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            cwd=str(self.root),
        )  # fmt: skip
        self.procs[name] = proc
        return proc

    def start_core(self) -> None:
        """Migrate, then start api-server, scheduler, dag-processor and triggerer; wait for the API."""
        self.migrate()
        self.start("api-server", ["api-server", "--host", "127.0.0.1", "--port", str(self.api_port)])
        self.start("scheduler", ["scheduler"])
        self.start("dag-processor", ["dag-processor"])
        self.start("triggerer", ["triggerer"])
        self.wait(lambda: self._health_ok(), 300, "the api-server to answer /api/v2/monitor/health")
        self.warm_up_execution_api()

    def warm_up_execution_api(self) -> None:
        """One request to the execution API before any task starts. Its first request builds the versioned
        execution app, which stalled the whole api-server for 33-62 s on a loaded host (load average 30 on
        2 cores), longer than a task's start-up retries wait: the first task was killed before it ran."""
        import httpx

        r = httpx.get(f"{self.url}/execution/health", timeout=180, trust_env=False)
        assert r.status_code == 200, f"GET /execution/health: {r.status_code} {r.text[:300]}"

    def check_alive(self) -> None:
        """Fail, with its log, when a component died."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise AssertionError(
                    f"Airflow component {name} exited with {proc.returncode}:\n{tail(self.logs / f'{name}.log')}"
                )

    def stop(self) -> list[str]:
        """Stop every component (process groups, all at once), then whatever else carries the marker
        (task processes, gateways a task started); return what was still alive after the components."""
        running = [p for p in self.procs.values() if p.poll() is None]
        for proc in running:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 20
        for proc in running:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for proc in running:
            _stop_group(proc.pid, timeout=5)
        stragglers = kill_marked(self.marker)
        left = marked_processes(self.marker)
        if left:
            raise AssertionError(f"processes of the deployment survived SIGKILL:\n{describe(left)}")
        return stragglers

    # -- REST API ---------------------------------------------------------------------------------

    def _http(self):  # noqa: ANN202 - an httpx.Client
        import httpx

        return httpx.Client(base_url=self.url, timeout=30, trust_env=False)

    def _health_ok(self) -> bool:
        self.check_alive()
        import httpx

        try:
            with self._http() as c:
                return c.get("/api/v2/monitor/health").status_code == 200
        except httpx.HTTPError:
            return False

    def token(self) -> str:
        """A real JWT from the simple auth manager (``POST /auth/token``)."""
        if self._token is None:
            with self._http() as c:
                r = c.post("/auth/token", json={"username": "admin", "password": self.password})
            assert r.status_code in (200, 201), f"POST /auth/token: {r.status_code} {r.text}"
            self._token = r.json()["access_token"]
        return self._token

    def api(self, method: str, path: str, expect: tuple[int, ...] = (200,), **kwargs: Any) -> Any:
        """Call ``/api/v2<path>`` with the token; the JSON answer (or text)."""
        with self._http() as c:
            r = c.request(
                method, f"/api/v2{path}", headers={"Authorization": f"Bearer {self.token()}"}, **kwargs
            )
        if r.status_code not in expect:
            raise AssertionError(f"{method} /api/v2{path}: {r.status_code} {r.text[:2000]}")
        try:
            return r.json()
        except ValueError:
            return r.text

    def wait(self, condition: Callable[[], Any], timeout: float, what: str, interval: float = 1.0) -> Any:
        """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            result = condition()
            if result:
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout:.0f}s for {what}\n{self.component_tails()}")
            time.sleep(interval)

    def wait_dags(self, dag_ids: list[str], timeout: float = 300) -> None:
        """Wait until the dag-processor has parsed ``dag_ids``; fail at once on an import error."""

        def parsed() -> bool:
            self.check_alive()
            errors = self.api("GET", "/importErrors")["import_errors"]
            assert not errors, f"DAG import errors: {json.dumps(errors, indent=1)[:4000]}"
            have = {d["dag_id"] for d in self.api("GET", "/dags", params={"limit": 100})["dags"]}
            return set(dag_ids) <= have

        self.wait(parsed, timeout, f"the DAGs {dag_ids} to be parsed")

    def unpause(self, dag_id: str) -> None:
        self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        """Trigger a run; its run id."""
        run = self.api("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf or {}})
        return run["dag_run_id"]

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        return self.api("GET", f"/dags/{dag_id}/dagRuns", params={"order_by": "-run_after"})["dag_runs"]

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        tis = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 100})
        return {ti["task_id"]: ti for ti in tis["task_instances"]}

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        entry = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}")
        return entry["value"]

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        """A task's log through the REST API, as text."""
        with self._http() as c:
            r = c.get(
                f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
                params={"full_content": "true"},
                headers={"Authorization": f"Bearer {self.token()}", "Accept": "application/json"},
            )
        if r.status_code != 200:
            return f"<log of {task_id}: {r.status_code} {r.text[:300]}>"
        content = r.json().get("content")
        if isinstance(content, list):
            return "\n".join(_log_line(e) for e in content)
        return str(content)

    def wait_run(
        self,
        dag_id: str,
        run_id: str,
        timeout: float,
        seen: dict[str, set[str]] | None = None,
        on_poll: Callable[[dict[str, set[str]]], None] | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Wait for a run to end; record in ``seen`` every state each task was observed in (``on_poll``
        is called with it after each look). On timeout, fail with the task logs and the components'
        log tails."""
        seen = seen if seen is not None else {}
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            run = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
            tis = self.task_instances(dag_id, run_id)
            for task_id, ti in tis.items():
                seen.setdefault(task_id, set()).add(str(ti["state"]))
            if on_poll is not None:
                on_poll(seen)
            if run["state"] in TERMINAL:
                return tis
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{dag_id} run {run_id} still {run['state']} after {timeout:.0f}s; task states "
                    f"{ {t: ti['state'] for t, ti in tis.items()} }\n{self.diagnostics(dag_id, run_id)}"
                )
            time.sleep(1.0)

    def diagnostics(self, dag_id: str, run_id: str) -> str:
        """Every task's log (REST API) and the components' log tails."""
        parts = []
        try:
            for task_id, ti in self.task_instances(dag_id, run_id).items():
                if ti["state"] is None:
                    continue
                log = self.task_log(dag_id, run_id, task_id, max(1, int(ti.get("try_number") or 1)))
                parts.append(f"----- task {task_id} ({ti['state']}) -----\n{log[-3000:]}")
        except Exception as e:  # noqa: BLE001 - diagnostics must not hide the original failure
            parts.append(f"<task logs unavailable: {e}>")
        return "\n".join(parts) + "\n" + self.component_tails()

    def component_tails(self, chars: int = 2500) -> str:
        return "\n".join(
            f"----- {name} -----\n{tail(self.logs / f'{name}.log', chars)}" for name in self.procs
        )

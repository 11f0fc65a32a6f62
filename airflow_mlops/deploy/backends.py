"""Deploy backends: where a gateway runs (:func:`airflow_mlops.deploy.factory.make_backend` picks one). ``local``: a managed subprocess; ``docker``: a container;
``external``: a gateway run by someone else (docker-compose), whose routing only is managed.

A backend starts a gateway with a deployment config, tells whether it is still alive and stops it. The
handle it returns (pid, container id, port) is plain JSON, recorded in the deployment state, so a later
task (a retry, a rollback) can find the same gateway again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_mlops.core.errors import MlopsInputError, MlopsServiceError
from airflow_mlops.core.net import free_port
from airflow_mlops.deploy.state import this_host
from airflow_mlops.serving.client import ADMIN_TOKEN_ENV, FEEDBACK_TOKEN_ENV, GatewayClient
from airflow_mlops.serving.config import DeploymentConfig

_CRED_VARS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


@dataclass
class GatewaySpec:
    """What a gateway needs to start.

    :param name: deployment name (process/container naming, labels).
    :param config: the deployment config it starts with.
    :param tracking_uri: MLflow tracking URI, as seen from the gateway.
    :param registry_uri: MLflow registry URI when it differs.
    :param admin_token: the admin bearer token (passed by environment, never on a command line).
    :param feedback_token: the bearer token ``/feedback`` requires (None: the gateway's default), passed
        as ``MLOPS_GATEWAY_FEEDBACK_TOKEN``; never logged.
    :param workdir: a host folder for the config file and the gateway's own log.
    :param log_dir: the prediction-log folder (host path).
    :param port: the port on 127.0.0.1 (None: pick a free one).
    :param credentials: MLflow credentials (``MLFLOW_TRACKING_*`` variables) for the gateway.
    :param labels: extra labels (Docker) / facts recorded in the handle.
    """

    name: str
    config: DeploymentConfig
    tracking_uri: str
    registry_uri: str | None = None
    admin_token: str = field(default="", repr=False)
    feedback_token: str | None = field(default=None, repr=False)
    workdir: Path = field(default_factory=lambda: Path("."))
    log_dir: Path | None = None
    port: int | None = None
    credentials: dict[str, str] = field(default_factory=dict, repr=False)
    labels: dict[str, str] = field(default_factory=dict)

    def secret_env(self) -> dict[str, str]:
        """The gateway's secrets as environment variables (never on a command line)."""
        env = {ADMIN_TOKEN_ENV: self.admin_token}
        if self.feedback_token:
            env[FEEDBACK_TOKEN_ENV] = self.feedback_token
        return env

    def write_config(self, folder: Path) -> Path:
        """Write the config where the gateway reads it; return the file path."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "deployment.json"
        path.write_text(json.dumps(self.config.to_dict(), indent=1))
        os.chmod(folder, 0o755)  # a container's non-root user must read it
        os.chmod(path, 0o644)
        return path


class GatewayBackend(ABC):
    """Starts, finds and stops gateways."""

    kind: str = ""

    @abstractmethod
    def start(self, spec: GatewaySpec, ready_timeout: float = 180.0) -> dict[str, Any]:
        """Start a gateway and wait until it is ready; return its JSON handle (``port``, ``endpoint``...).

        :raises MlopsServiceError: it did not become ready (the message carries its log tail).
        """

    @abstractmethod
    def alive(self, handle: dict[str, Any]) -> bool:
        """Whether the gateway behind ``handle`` still runs (does not call its HTTP API)."""

    @abstractmethod
    def stop(self, handle: dict[str, Any]) -> None:
        """Stop the gateway behind ``handle``; a gateway that is already gone is fine."""

    def logs(self, handle: dict[str, Any], lines: int = 40) -> str:
        """The last lines of the gateway's own log (for error messages)."""
        return ""

    def validation_backend(self) -> GatewayBackend:
        """Where infra validation starts its throwaway gateway (the same kind, by default)."""
        return self

    @staticmethod
    def endpoint(port: int) -> str:
        """The base URL of a gateway on ``port``."""
        return f"http://127.0.0.1:{port}"

    def _wait(self, spec: GatewaySpec, handle: dict[str, Any], timeout: float) -> None:
        try:
            with GatewayClient(handle["endpoint"], spec.admin_token) as api:
                api.wait_ready(timeout, alive=lambda: self.alive(handle))
        except MlopsServiceError as e:
            tail = self.logs(handle)
            self.stop(handle)
            raise MlopsServiceError(f"{e} Gateway log tail:\n{tail}") from None


class LocalBackend(GatewayBackend):
    """The gateway as a subprocess of this machine, in its own session so it outlives the task.

    :param python: the interpreter that runs ``-m airflow_mlops.serving`` (default: this one).
    :param extra_env: more environment variables for the gateway.
    """

    kind = "local"

    def __init__(self, python: str | None = None, extra_env: dict[str, str] | None = None) -> None:
        self.python = python or sys.executable
        self.extra_env = dict(extra_env or {})

    def start(self, spec: GatewaySpec, ready_timeout: float = 180.0) -> dict[str, Any]:
        port = spec.port or free_port()
        folder = spec.workdir / f"gateway-{port}"
        config_path = spec.write_config(folder)
        log_dir = spec.log_dir or (spec.workdir / "predictions")
        log_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            self.python, "-m", "airflow_mlops.serving",
            "--host", "127.0.0.1", "--port", str(port),
            "--tracking-uri", spec.tracking_uri,
            "--config", str(config_path), "--log-dir", str(log_dir),
        ]  # fmt: skip
        if spec.registry_uri:
            cmd += ["--registry-uri", spec.registry_uri]
        env = {
            k: v for k, v in os.environ.items() if k not in (*_CRED_VARS, ADMIN_TOKEN_ENV, FEEDBACK_TOKEN_ENV)
        }
        env.update(self.extra_env)
        env.update(spec.credentials)
        env.update(spec.secret_env())
        log_path = folder / "gateway.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True, cwd=str(folder),
            )  # fmt: skip
        handle = {
            "backend": self.kind,
            "host": this_host(),
            "pid": proc.pid,
            "port": port,
            "endpoint": self.endpoint(port),
            "log": str(log_path),
            "config_path": str(config_path),
            "log_dir": str(log_dir),
        }
        self._wait(spec, handle, ready_timeout)
        return handle

    def alive(self, handle: dict[str, Any]) -> bool:
        pid = handle.get("pid")
        if not pid:
            return False
        _reap(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        # A zombie is dead; a pid reused by another program is not our gateway.
        state = stat.rsplit(")", 1)[-1].split()[0]
        return state not in ("Z", "X") and b"airflow_mlops.serving" in cmdline

    def stop(self, handle: dict[str, Any]) -> None:
        pid = handle.get("pid")
        if not pid or not self.alive(handle):
            return
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and self.alive(handle):
            time.sleep(0.1)
        if self.alive(handle):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _reap(pid)

    def logs(self, handle: dict[str, Any], lines: int = 40) -> str:
        try:
            return "\n".join(Path(handle["log"]).read_text(errors="replace").splitlines()[-lines:])
        except (OSError, KeyError):
            return ""


def _reap(pid: int) -> None:
    """Collect a dead child's exit status so it stops being a zombie (no-op for non-children)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


class ExternalBackend(GatewayBackend):
    """A gateway this code does not run (e.g. the ``gateway`` service of docker-compose): only its
    routing changes, through ``PUT /admin/deployment``. It is never started or stopped here; a gateway
    that restarted empty gets its routing back on the next check. Infra validation runs in a local
    throwaway gateway (:meth:`validation_backend`).

    :param endpoint: the gateway's base URL (``http://gateway:8080``).
    """

    kind = "external"

    def __init__(self, endpoint: str) -> None:
        if not endpoint or not endpoint.startswith(("http://", "https://")):
            raise MlopsInputError(
                f"gateway_url {endpoint!r} is not an http(s) URL: give the gateway's base URL, such as "
                "http://gateway:8080."
            )
        self.url = endpoint.rstrip("/")

    def start(self, spec: GatewaySpec, ready_timeout: float = 180.0) -> dict[str, Any]:
        with GatewayClient(self.url, spec.admin_token) as api:
            deadline = time.monotonic() + min(ready_timeout, 30.0)
            while not api.ok("/health"):
                if time.monotonic() > deadline:
                    raise MlopsServiceError(
                        f"The gateway at {self.url} does not answer /health: start it first."
                    )
                time.sleep(0.5)
            api.put_deployment(spec.config, timeout=ready_timeout)
            api.wait_ready(ready_timeout)
        from urllib.parse import urlsplit

        parts = urlsplit(self.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return {"backend": self.kind, "endpoint": self.url, "port": port}

    def alive(self, handle: dict[str, Any]) -> bool:
        with GatewayClient(self.url, timeout=5.0) as api:
            return api.ok("/health")

    def stop(self, handle: dict[str, Any]) -> None:
        """Nothing: the gateway belongs to whoever started it."""

    def validation_backend(self) -> GatewayBackend:
        return LocalBackend()

"""The gateway in a Docker container (docker SDK); its image is built by :mod:`.gateway_image`.

Containers run hardened: a non-root user, a read-only root filesystem with a tmpfs for ``/tmp``, all
capabilities dropped, no privilege escalation, CPU/memory/pid limits, a healthcheck, labels naming the
deployment, and the port published on 127.0.0.1 only.

Networking: with ``network_mode="bridge"`` (default) the gateway listens on 0.0.0.0:8080 inside the
container and the port is published as ``127.0.0.1:<port>``; the tracking URI must then be reachable
from the container (a service name on a shared network, or the host's address). With
``network_mode="host"`` the gateway shares the host's network and listens on ``127.0.0.1:<port>``
itself: that is how a container reaches an MLflow server that listens on the host's loopback (tests).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from airflow_mlops.core.errors import MlopsInputError
from airflow_mlops.core.net import free_port
from airflow_mlops.deploy.backends import GatewayBackend, GatewaySpec
from airflow_mlops.deploy.gateway_image import GATEWAY_IMAGE, docker_client
from airflow_mlops.deploy.state import this_host

GATEWAY_UID = 10001
CONTAINER_PORT = 8080
LABEL_PREFIX = "org.airflow-mlops"
_NS = 1_000_000_000


class DockerBackend(GatewayBackend):
    """Gateways as Docker containers.

    :param image: the gateway image (see :func:`build_gateway_image`).
    :param network_mode: ``bridge`` (publish on 127.0.0.1) or ``host`` (share the host network).
    :param cpus: CPU limit (cores).
    :param memory: memory limit (``"1g"``, ``"512m"``).
    :param tmp_size: size of the ``/tmp`` tmpfs (models are downloaded there).
    :param docker_url: engine URL (default: ``DOCKER_HOST`` or the local socket).
    :param extra_env: more environment variables for the gateway.
    """

    kind = "docker"

    def __init__(
        self,
        image: str = f"{GATEWAY_IMAGE}:latest",
        network_mode: str = "bridge",
        cpus: float = 1.0,
        memory: str = "1g",
        tmp_size: str = "512m",
        docker_url: str | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        if network_mode not in ("bridge", "host"):
            raise MlopsInputError(f"network_mode {network_mode!r} is not supported: use 'bridge' or 'host'.")
        if not cpus or cpus <= 0:
            raise MlopsInputError(f"cpus={cpus!r}: give a positive number of cores, such as 1 or 0.5.")
        self.image = image
        self.network_mode = network_mode
        self.cpus = float(cpus)
        self.memory = memory
        self.tmp_size = tmp_size
        self.docker_url = docker_url
        self.extra_env = dict(extra_env or {})
        self._client: Any = None

    @property
    def client(self) -> Any:
        """The docker SDK client (created on first use)."""
        if self._client is None:
            self._client = docker_client(self.docker_url)
        return self._client

    def start(self, spec: GatewaySpec, ready_timeout: float = 180.0) -> dict[str, Any]:
        import docker

        try:
            self.client.images.get(self.image)
        except docker.errors.ImageNotFound:
            raise MlopsInputError(
                f"Docker image {self.image!r} does not exist: build it (build_gateway_image or "
                "`docker build -f docker/gateway.Dockerfile .`) or give an existing image."
            ) from None
        port = spec.port or free_port()
        folder = spec.workdir / f"gateway-{port}"
        spec.write_config(folder)
        log_dir = spec.log_dir or (spec.workdir / "predictions")
        log_group = _writable_by_container(log_dir)
        host_mode = self.network_mode == "host"
        listen_port = port if host_mode else CONTAINER_PORT
        command = [
            "--host", "127.0.0.1" if host_mode else "0.0.0.0",
            "--port", str(listen_port),
            "--tracking-uri", spec.tracking_uri,
            "--config", "/etc/mlops/deployment.json",
            "--log-dir", "/var/log/mlops",
        ]  # fmt: skip
        if spec.registry_uri:
            command += ["--registry-uri", spec.registry_uri]
        env = {**self.extra_env, **spec.credentials, **spec.secret_env(), "HOME": "/tmp"}
        env["GATEWAY_PORT"] = str(listen_port)
        labels = {
            f"{LABEL_PREFIX}.managed-by": "airflow-mlops",
            f"{LABEL_PREFIX}.deployment": spec.name,
            f"{LABEL_PREFIX}.model": spec.config.model_name,
            f"{LABEL_PREFIX}.port": str(port),
            **spec.labels,
        }
        health_url = f"http://127.0.0.1:{listen_port}/health"
        name = f"mlops-gw-{spec.name}-{port}"
        self._remove_stale(name)
        container = self.client.containers.run(
            self.image,
            command=command,
            name=name,
            detach=True,
            user=f"{GATEWAY_UID}:{GATEWAY_UID}",
            group_add=[str(log_group)] if log_group is not None else None,
            read_only=True,
            tmpfs={"/tmp": f"rw,size={self.tmp_size},mode=1777"},
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            nano_cpus=int(self.cpus * _NS),
            mem_limit=self.memory,
            pids_limit=512,
            environment=env,
            labels=labels,
            volumes={
                str(folder): {"bind": "/etc/mlops", "mode": "ro"},
                str(log_dir): {"bind": "/var/log/mlops", "mode": "rw"},
            },
            network_mode=self.network_mode,
            ports=None if host_mode else {f"{CONTAINER_PORT}/tcp": ("127.0.0.1", port)},
            healthcheck={
                "test": [
                    "CMD", "python", "-c",
                    f"import urllib.request; urllib.request.urlopen('{health_url}', timeout=2)",
                ],
                "interval": 5 * _NS, "timeout": 3 * _NS, "retries": 3, "start_period": 60 * _NS,
            },
        )  # fmt: skip
        handle = {
            "backend": self.kind,
            "host": self.docker_url or this_host(),
            "container_id": container.id,
            "container_name": name,
            "image": self.image,
            "port": port,
            "endpoint": self.endpoint(port),
            "log_dir": str(log_dir),
        }
        self._wait(spec, handle, ready_timeout)
        return handle

    def _container(self, handle: dict[str, Any]) -> Any:
        import docker

        cid = handle.get("container_id")
        if not cid:
            return None
        try:
            return self.client.containers.get(cid)
        except docker.errors.NotFound:
            return None

    def _remove_stale(self, name: str) -> None:
        """A container left by a crashed attempt holds the name: remove it (it serves nothing)."""
        import docker

        try:
            self.client.containers.get(name).remove(force=True)
        except docker.errors.NotFound:
            pass

    def alive(self, handle: dict[str, Any]) -> bool:
        c = self._container(handle)
        if c is None:
            return False
        c.reload()
        health = ((c.attrs.get("State") or {}).get("Health") or {}).get("Status")
        return c.status == "running" and health != "unhealthy"

    def stop(self, handle: dict[str, Any]) -> None:
        import docker

        c = self._container(handle)
        if c is None:
            return
        try:
            c.stop(timeout=10)
        except docker.errors.APIError:
            pass
        try:
            c.remove(force=True)
        except docker.errors.NotFound:
            pass

    def logs(self, handle: dict[str, Any], lines: int = 40) -> str:
        c = self._container(handle)
        if c is None:
            return ""
        return c.logs(tail=lines).decode(errors="replace")


def _writable_by_container(folder: Path) -> int | None:
    """Let the container's fixed non-root user write the prediction log to a host folder, and nobody
    else: never a world-writable folder (the log feeds drift checks and retraining).

    As root, the folder is owned by the container's uid and this worker's group, mode 0770. Otherwise it
    stays ours, mode 0770, and the container runs with our group as a supplementary group
    (``group_add``), so the group bits let it write.

    :return: the group id the container must join (None when the uid owns the folder).
    """
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        os.chown(folder, GATEWAY_UID, os.getegid())
        os.chmod(folder, 0o770)
        return None
    os.chmod(folder, 0o770)
    return os.getegid()

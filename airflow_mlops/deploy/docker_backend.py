"""The gateway in a Docker container (docker SDK), and building its image.

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

import hashlib
import io
import os
import tarfile
import time
from pathlib import Path
from typing import Any

from airflow_mlops.core.errors import MlopsInputError, MlopsServiceError
from airflow_mlops.deploy.backends import GatewayBackend, GatewaySpec, free_port
from airflow_mlops.deploy.state import this_host

GATEWAY_IMAGE = "airflow-mlops-gateway"
DEFAULT_BASE_IMAGE = "python:3.11-slim"
GATEWAY_UID = 10001
CONTAINER_PORT = 8080
LABEL_PREFIX = "org.airflow-mlops"
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")
_NS = 1_000_000_000


def docker_client(base_url: str | None = None, timeout: int = 900) -> Any:
    """A docker SDK client (``DOCKER_HOST`` or the local socket), checked with a ping.

    :raises MlopsServiceError: no engine answers.
    """
    import docker

    try:
        client = (
            docker.DockerClient(base_url=base_url, timeout=timeout)
            if base_url
            else docker.from_env(timeout=timeout)
        )
        client.ping()
    except docker.errors.DockerException as e:
        raise MlopsServiceError(
            f"No Docker engine answers ({e}): start one (scripts/start_dockerd.sh) or set DOCKER_HOST."
        ) from e
    return client


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
            f"{LABEL_PREFIX}.model": str(spec.config.get("model_name", "")),
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


def _context_files(repo_root: Path) -> dict[str, bytes]:
    """The build context: the Dockerfile, the package, pyproject.toml and README.md, and CA certs."""
    files: dict[str, bytes] = {}
    files["docker/gateway.Dockerfile"] = (repo_root / "docker" / "gateway.Dockerfile").read_bytes()
    files["pyproject.toml"] = (repo_root / "pyproject.toml").read_bytes()
    readme = repo_root / "README.md"
    files["README.md"] = readme.read_bytes() if readme.exists() else b"airflow-provider-mlops\n"
    for path in sorted((repo_root / "airflow_mlops").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            files[path.relative_to(repo_root).as_posix()] = path.read_bytes()
    # Extra CA certificates (a TLS-intercepting proxy): in the build context only, never in git.
    certs = [*sorted(HOST_CA_DIR.glob("*.crt")), *sorted((repo_root / "docker" / "certs").glob("*.crt"))]
    for cert in certs:
        files[f"docker/certs/{cert.name}"] = cert.read_bytes()
    files.setdefault("docker/certs/.keep", b"")
    return files


def _tar(files: dict[str, bytes]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0  # fixed mtime: reproducible cache keys
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def build_gateway_image(
    repo_root: str | os.PathLike[str],
    *,
    repository: str = GATEWAY_IMAGE,
    base_image: str = DEFAULT_BASE_IMAGE,
    client: Any = None,
    network_mode: str = "host",
    extra_build_args: dict[str, str] | None = None,
) -> tuple[str, bool, float]:
    """Build the gateway image, or reuse it when one was built from the same inputs.

    The tag is a digest of the build context and arguments, so a rerun with unchanged code is free and
    a code change builds again (Docker's layer cache keeps the pip layer). The image is also tagged
    ``<repository>:latest``.

    :param repo_root: the repository (holds ``docker/gateway.Dockerfile``).
    :param repository: image repository name.
    :param base_image: ``BASE_IMAGE`` build argument.
    :param client: a docker SDK client (default: :func:`docker_client`).
    :param network_mode: network of the build's RUN steps (``host``: pip reaches what the host reaches).
    :param extra_build_args: more build arguments.
    :return: ``(image tag, built now?, seconds)``.
    :raises MlopsServiceError: the build failed (the message holds the build log tail).
    """
    import mlflow
    import sklearn

    import docker

    client = client or docker_client()
    root = Path(repo_root)
    build_args = {
        "BASE_IMAGE": base_image,
        # Pickled models load only with the scikit-learn that wrote them.
        "SKLEARN_VERSION": sklearn.__version__,
        "MLFLOW_VERSION": mlflow.__version__,
        **{k: os.environ[k] for k in _PROXY_VARS if os.environ.get(k)},
        **(extra_build_args or {}),
    }
    files = _context_files(root)
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + files[name] + b"\0")
    for k in sorted(build_args):
        if k not in _PROXY_VARS:
            digest.update(f"{k}={build_args[k]}\0".encode())
    tag = f"{repository}:{digest.hexdigest()[:12]}"
    started = time.monotonic()
    try:
        client.images.get(tag)
        client.images.get(tag).tag(repository, "latest")
        return tag, False, time.monotonic() - started
    except docker.errors.ImageNotFound:
        pass
    log: list[str] = []
    error = None
    for chunk in client.api.build(
        fileobj=_tar(files),
        custom_context=True,
        dockerfile="docker/gateway.Dockerfile",
        tag=tag,
        buildargs=build_args,
        network_mode=network_mode,
        rm=True,
        forcerm=True,
        decode=True,
    ):
        if "stream" in chunk:
            log.append(chunk["stream"])
        if "error" in chunk:
            error = chunk["error"]
    if error is not None:
        tail = "".join(log)[-4000:]
        raise MlopsServiceError(f"Building {tag} failed: {error}\n{tail}")
    client.images.get(tag).tag(repository, "latest")
    return tag, True, time.monotonic() - started

"""Building the gateway's Docker image (docker SDK), reproducibly: the tag is a digest of the inputs."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import time
from pathlib import Path
from typing import Any

from airflow_mlops.core.errors import MlopsServiceError

GATEWAY_IMAGE = "airflow-mlops-gateway"
DEFAULT_BASE_IMAGE = "python:3.11-slim"
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")


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

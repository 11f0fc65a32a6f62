"""Deploy test fixtures: real model versions on the session's MLflow server, and a deployer factory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from airflow_mlops.core.tracking import MlflowTarget
from tests.models import register_versions


@pytest.fixture
def two_versions(mlflow_server: str, model_name: str) -> list[str]:
    """Two registered versions (``["1", "2"]``) of ``model_name``."""
    return register_versions(mlflow_server, model_name, [{"C": 1.0}, {"C": 0.1}])


@pytest.fixture
def records() -> list[dict]:
    """Ten breast_cancer feature records."""
    from sklearn.datasets import load_breast_cancer

    X = load_breast_cancer(as_frame=True).data
    return X.head(10).to_dict(orient="records")


@pytest.fixture
def deployers(tmp_path: Path, mlflow_server: str) -> Iterator[Callable]:
    """Make Deployers on the local backend in a private state folder; their gateways stop after the test."""
    from airflow_mlops.deploy.backends import LocalBackend
    from airflow_mlops.deploy.rollout import Deployer
    from airflow_mlops.deploy.state import StateStore

    made: list[Deployer] = []

    def make(name: str, backend=None, **kw) -> Deployer:
        d = Deployer(
            name, backend or LocalBackend(), MlflowTarget(mlflow_server), StateStore(tmp_path / "state"), **kw
        )
        made.append(d)
        return d

    yield make
    for d in made:
        try:
            d.teardown()
        except Exception:  # noqa: BLE001 - best effort cleanup
            pass


@pytest.fixture(scope="session")
def gateway_image() -> str:
    """The gateway image, built once per session from a locally bootstrapped Debian base.

    Starts dockerd (scripts/start_dockerd.sh) when no engine answers; skips only when none can start.
    Reruns are fast: both images are cached by tag (the gateway's tag is a digest of its inputs).
    """
    import shutil
    import subprocess
    import time

    from tests.conftest import REPO_ROOT

    if shutil.which("docker") is None:
        pytest.skip("no docker CLI: install Debian's docker.io to run the Docker deploy tests")
    start = subprocess.run(
        [str(REPO_ROOT / "scripts" / "start_dockerd.sh")], capture_output=True, text=True, timeout=120
    )
    if start.returncode != 0:
        pytest.skip(f"no Docker engine can start here: {start.stderr.strip()[-500:]}")
    from airflow_mlops.deploy.gateway_image import build_gateway_image, docker_client

    base = "airflow-mlops-base:bookworm"
    t0 = time.monotonic()
    subprocess.run([str(REPO_ROOT / "docker" / "build_base_image.sh"), base], check=True, timeout=900)
    base_seconds = time.monotonic() - t0
    tag, built, seconds = build_gateway_image(REPO_ROOT, base_image=base, client=docker_client())
    print(
        f"\nbase image: {base_seconds:.1f}s; gateway image {tag}: {'built' if built else 'cached'} {seconds:.1f}s"
    )
    return tag

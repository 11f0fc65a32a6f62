"""The gateway image's build context: small, reproducible, with the proxy's CA certs but no secrets."""

from __future__ import annotations

import tarfile
from pathlib import Path

from airflow_mlops.deploy import gateway_image
from tests.conftest import REPO_ROOT


def test_context_holds_the_package_and_certs_only(monkeypatch, tmp_path: Path):
    certs = tmp_path / "ca"
    certs.mkdir()
    (certs / "proxy.crt").write_text("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n")
    monkeypatch.setattr(gateway_image, "HOST_CA_DIR", certs)
    files = gateway_image._context_files(REPO_ROOT)
    assert "docker/gateway.Dockerfile" in files and "pyproject.toml" in files and "README.md" in files
    assert "airflow_mlops/serving/__main__.py" in files and "airflow_mlops/deploy/rollout.py" in files
    assert "docker/certs/proxy.crt" in files
    assert not [n for n in files if "__pycache__" in n or n.startswith((".venv", "tests/", ".git"))]
    a, b = gateway_image._tar(files).getvalue(), gateway_image._tar(files).getvalue()
    assert a == b  # same inputs, same bytes: the image tag (a digest) is stable
    with tarfile.open(fileobj=gateway_image._tar(files)) as tar:
        assert sorted(tar.getnames()) == sorted(files)


def test_dockerfile_runs_as_non_root_without_airflow():
    text = (REPO_ROOT / "docker" / "gateway.Dockerfile").read_text()
    assert "ARG BASE_IMAGE=python:3.11-slim" in text
    assert "USER ${GATEWAY_UID}" in text
    # The package goes in as a wheel built in the image, without pulling its dependencies (Airflow) in.
    assert "--no-deps /tmp/wheels/" in text
    assert "apache-airflow" not in text

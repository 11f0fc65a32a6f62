"""The stack's Dockerfiles, checked statically (no image registry is reachable here to build them).

Each takes its base image as a build argument, copies only files that exist in the repository (or
optional ones through a wildcard next to a real file, valid for the legacy builder and BuildKit), and
ends as a non-root user; the Airflow image installs this provider from the build context.
"""

from __future__ import annotations

import fnmatch
import glob
import re

import pytest
from packaging.requirements import Requirement

from tests.integration.stack.stack_files import DOCKER, REPO_ROOT, load_yaml

STACK_DOCKERFILES = ["airflow.Dockerfile", "mlflow.Dockerfile"]


def _instructions(name: str) -> list[tuple[str, str]]:
    text = (DOCKER / name).read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("name", STACK_DOCKERFILES)
def test_base_image_is_a_build_argument(name: str) -> None:
    steps = _instructions(name)
    assert steps[0][0] == "ARG" and steps[0][1].startswith("BASE_IMAGE="), steps[0]
    assert steps[1] == ("FROM", "${BASE_IMAGE}")


@pytest.mark.parametrize("name", STACK_DOCKERFILES)
def test_copy_sources_exist(name: str) -> None:
    for word, rest in _instructions(name):
        if word != "COPY":
            continue
        args = [a for a in rest.split() if not a.startswith("--")]
        sources = args[:-1]
        assert any(not any(c in s for c in "*?[") for s in sources), f"{rest}: no source that always exists"
        for source in sources:
            if any(c in source for c in "*?["):
                continue  # optional (certificates, readme)
            assert (REPO_ROOT / source).exists(), f"{name}: COPY source {source} is not in the repository"


@pytest.mark.parametrize("name", STACK_DOCKERFILES)
def test_ends_as_non_root(name: str) -> None:
    users = [rest for word, rest in _instructions(name) if word == "USER"]
    assert users and users[-1] not in {"root", "0", "0:0"}, users


def test_airflow_image_installs_the_provider_from_the_context() -> None:
    steps = _instructions("airflow.Dockerfile")
    assert steps[0][1] == "BASE_IMAGE=apache/airflow:3.3.2"
    copies = " ".join(rest for word, rest in steps if word == "COPY")
    assert "pyproject.toml" in copies and "airflow_mlops /opt/mlops/src/airflow_mlops" in copies
    run = " ".join(rest for word, rest in steps if word == "RUN")
    assert re.search(r'pip install .*"/opt/mlops/src\[dvc,serving\]"', run)
    # Airflow itself stays at the image's version.
    assert '"apache-airflow==${AIRFLOW_VERSION}"' in run
    assert "_PIP_ADDITIONAL_REQUIREMENTS" not in (DOCKER / "airflow.Dockerfile").read_text().split("\n", 2)[2]


def test_mlflow_server_version_is_one_the_provider_supports() -> None:
    import tomllib

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    supported = next(Requirement(d) for d in project["dependencies"] if Requirement(d).name == "mlflow")
    lines = (DOCKER / "mlflow" / "requirements.txt").read_text().splitlines()
    reqs = {r.name: r for r in (Requirement(x) for x in lines if x.strip() and not x.startswith("#"))}
    (pinned,) = [s.version for s in reqs["mlflow"].specifier if s.operator == "=="]
    assert supported.specifier.contains(pinned), (pinned, str(supported))
    assert "psycopg2-binary" in reqs  # the backend store is Postgres


def test_compose_builds_every_stack_dockerfile() -> None:
    services = load_yaml(REPO_ROOT / "docker-compose.yaml")["services"]
    built = {(s.get("build") or {}).get("dockerfile") for s in services.values()}
    for name in glob.glob(str(DOCKER / "*.Dockerfile")):
        assert f"docker/{name.rsplit('/', 1)[1]}" in built, f"{name} is built by no service"


def test_build_context_keeps_only_what_the_dockerfiles_copy() -> None:
    """.dockerignore excludes everything (the .venv alone is gigabytes) but the COPY sources."""
    lines = [x.strip() for x in (REPO_ROOT / ".dockerignore").read_text().splitlines()]
    rules = [x for x in lines if x and not x.startswith("#")]
    assert rules[0] == "*"
    kept = {x[1:].rstrip("/") for x in rules if x.startswith("!")}
    for name in [*STACK_DOCKERFILES, "gateway.Dockerfile"]:
        for word, rest in _instructions(name):
            if word == "COPY" and "--from" not in rest:
                for source in [a for a in rest.split() if not a.startswith("--")][:-1]:
                    top = source.split("/")[0]
                    assert any(fnmatch.fnmatch(k, top) for k in kept), (
                        f"{name}: {source} is outside the build context"
                    )

"""Provider registration: schema-valid metadata, and the real Airflow CLI sees the package."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import import_module
from importlib.metadata import entry_points
from pathlib import Path

import jsonschema

from airflow_mlops.get_provider_info import get_provider_info


def test_provider_info_matches_airflow_schema():
    import airflow

    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)


def test_entry_point_and_package_name():
    (ep,) = [e for e in entry_points(group="apache_airflow_provider") if e.value.startswith("airflow_mlops")]
    assert ep.load() is get_provider_info
    assert ep.dist.name == get_provider_info()["package-name"] == "airflow-provider-mlops"


def test_every_listed_module_and_class_imports():
    info = get_provider_info()
    for section in ("hooks", "operators", "sensors", "triggers"):
        for entry in info.get(section, []):
            for module in entry["python-modules"]:
                import_module(module)
    for item in [c["hook-class-name"] for c in info["connection-types"]] + info.get("extra-links", []):
        module, _, cls = item.rpartition(".")
        assert getattr(import_module(module), cls)
    types = [c["connection-type"] for c in info["connection-types"]]
    assert len(types) == len(set(types)) and "http" not in types


def _airflow_cli(*args: str) -> list[dict]:
    out = subprocess.run(
        [sys.executable, "-m", "airflow", *args, "--output", "json"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    # Airflow may log a line before the JSON document.
    return json.loads(next(line for line in out.stdout.splitlines() if line.startswith("[")))


def test_airflow_providers_cli_lists_package_and_connection_types():
    providers = _airflow_cli("providers", "list")
    assert any(p["package_name"] == "airflow-provider-mlops" for p in providers)
    hooks = _airflow_cli("providers", "hooks")
    by_type = {h["connection_type"]: h for h in hooks}
    for conn in get_provider_info()["connection-types"]:
        assert by_type[conn["connection-type"]]["class"] == conn["hook-class-name"]


def _request(url: str, data: dict | None = None, token: str | None = None) -> object:
    import urllib.request

    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    body = json.dumps(data).encode() if data is not None else None
    with urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers), timeout=60) as r:
        return json.loads(r.read())


def test_connection_forms_through_a_real_api_server(tmp_path):
    """A real ``airflow api-server`` (isolated AIRFLOW_HOME, simple auth manager, a real token) serves
    the connection-form metadata of the four connection types from the provider info."""
    import os

    from tests.servers import free_port, start_process, stop

    home = tmp_path / "airflow-home"
    home.mkdir()
    (home / "passwords.json").write_text(json.dumps({"admin": "form-test-password"}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_"))}
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
    })  # fmt: skip
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True,
                   capture_output=True, timeout=300)  # fmt: skip
    port = free_port()
    proc, url = start_process(
        [sys.executable, "-m", "airflow", "api-server", "--host", "127.0.0.1", "--port", str(port)],
        home, "api-server", "/api/v2/monitor/health", port, timeout=240, env=env,
    )  # fmt: skip
    try:
        token = _request(f"{url}/auth/token", {"username": "admin", "password": "form-test-password"})
        meta = _request(f"{url}/ui/connections/hook_meta", token=token["access_token"])  # type: ignore[index]
    finally:
        stop(proc)
    forms = {m["connection_type"]: m for m in meta}  # type: ignore[union-attr]
    expected = {
        "mlflow": ("Tracking URI", {"registry_uri": "Registry URI", "artifact_location": "Artifact location",
                                    "ui_url": "UI URL"}),
        "dvc": ("Repository (path or git URL)", {"rev": "Default revision", "remote": "DVC remote"}),
        "prometheus": ("Base URL", {"timeout": "Timeout (seconds)", "verify": "Verify TLS certificates"}),
        "pushgateway": ("Pushgateway URL", None),
        "dask": ("Scheduler address", None),
    }  # fmt: skip
    for conn_type, (host_label, extras) in expected.items():
        form = forms[conn_type]
        assert form["standard_fields"] is not None, conn_type
        assert form["standard_fields"]["host"]["title"] == host_label
        if extras is None:
            assert not form["extra_fields"]
        else:
            assert {k: v["schema"]["title"] for k, v in form["extra_fields"].items()} == extras
    assert forms["mlflow"]["standard_fields"]["password"]["title"] == "Password or token"
    assert forms["mlflow"]["standard_fields"]["host"]["placeholder"].startswith("http://mlflow:5000")
    assert forms["dvc"]["standard_fields"]["login"]["hidden"] is True
    assert forms["prometheus"]["extra_fields"]["timeout"]["value"] == 10

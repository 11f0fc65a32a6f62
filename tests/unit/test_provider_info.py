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

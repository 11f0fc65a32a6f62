"""The provider installed the way users install it, on every Airflow and Python it claims
(``scripts/matrix.py``): its pieces, fast, and the whole matrix (slow: a clean virtualenv per leg).

The matrix test runs for real: ``python -m build``, a virtualenv per leg from PyPI with the leg's
constraints, the provider's checks and pytest inside each leg. Its table is printed in the test output.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

try:  # Python 3.11+; pytest brings tomli on 3.10, the lowest Python the package claims
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from tests.conftest import REPO_ROOT


def _matrix():
    spec = importlib.util.spec_from_file_location("matrix", REPO_ROOT / "scripts" / "matrix.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["matrix"] = module
    spec.loader.exec_module(module)
    return module


matrix = _matrix()


def _wheel(path: Path, files: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return path


GOOD = {
    "airflow_mlops/__init__.py": "",
    "airflow_mlops/py.typed": "",
    "airflow_provider_mlops-0.1.0.dist-info/METADATA": "Name: airflow-provider-mlops\nLicense-Expression: Apache-2.0\n",
    "airflow_provider_mlops-0.1.0.dist-info/entry_points.txt": "[apache_airflow_provider]\nprovider_info = x:y\n",
}


def test_the_wheel_check_finds_what_users_rely_on(tmp_path):
    matrix.check_wheel(_wheel(tmp_path / "good.whl", GOOD))
    broken = {k: v for k, v in GOOD.items() if not k.endswith("py.typed")}
    broken["airflow_provider_mlops-0.1.0.dist-info/METADATA"] = "License: Apache-2.0\n"
    with pytest.raises(RuntimeError, match="py.typed is not in the wheel.*License-Expression"):
        matrix.check_wheel(_wheel(tmp_path / "bad.whl", broken))


def test_the_claims_are_what_the_matrix_tests():
    """pyproject claims exactly the Airflow minors and the Python range that the legs cover."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"  # an SPDX expression, not a table
    assert "apache-airflow>=3.3,<4" in project["dependencies"]
    assert project["requires-python"] == ">=3.10,<3.14"
    legs = matrix.LEGS
    assert {leg.airflow.rsplit(".", 1)[0] for leg in legs} == {"3.3"}
    assert {leg.python for leg in legs} == {"3.10", "3.13"}  # the lowest and the highest claimed
    for leg in legs:
        pins = leg.constraints.read_text().splitlines()
        assert f"apache-airflow=={leg.airflow}" in pins
        assert not [p for p in pins if p.lower().startswith("airflow-provider-mlops")]


def test_constraints_leave_out_the_package_under_test(tmp_path, monkeypatch):
    monkeypatch.setattr(matrix, "ROOT", tmp_path)
    leg = matrix.Leg("3.3.2", "3.10")
    matrix.write_constraints(
        leg,
        "pydantic==2.14.4\n-e /src\nairflow-provider-mlops==0.1.0\nApache-Airflow==3.3.2\nFlask-WTF @ file:///tmp/f.whl\n",
    )
    assert leg.constraints.read_text().splitlines()[2:] == ["Apache-Airflow==3.3.2", "pydantic==2.14.4"]


def test_junit_counts_and_json_tail(tmp_path):
    report = tmp_path / "r.xml"
    report.write_text('<testsuites><testsuite tests="10" failures="1" errors="1" skipped="2"/></testsuites>')
    assert matrix.junit_counts(report) == "6 passed, 2 failed, 2 skipped"
    assert matrix.junit_counts(tmp_path / "none.xml") == "no report"
    assert matrix._json_tail('WARNING something\n[{"a": 1}]') == '[{"a": 1}]'
    # Airflow's structured log line in unit-test mode starts with a timestamp and holds brackets.
    logged = (
        '2026-12-02T01:38:24Z [info     ] Unit test configuration loaded [airflow]\n[info] x\n[{"a": 1}]\n'
    )
    assert matrix._json_tail(logged) == '[{"a": 1}]'


def test_a_missing_interpreter_is_reported_with_the_fix():
    with pytest.raises(SystemExit, match=r"no Python 2\.1 .*pyenv install 2\.1"):
        matrix.find_python("2.1")


@pytest.mark.slow
@pytest.mark.timeout(4200)
def test_every_claimed_airflow_and_python_passes_from_the_wheel(capsys):
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "matrix.py")], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=4100)  # fmt: skip
    with capsys.disabled():  # the legs, their timings and their counts, in CI's output
        print("\n" + proc.stdout.strip())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for leg in matrix.LEGS:
        (row,) = [line for line in proc.stdout.splitlines() if line.strip().startswith(leg.name)]
        assert (
            " ok " in row
            and " 0 failed" in row
            and not row.rstrip().endswith(" 0 passed, 0 failed, 0 skipped")
        )

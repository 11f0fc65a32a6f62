"""The provider installed the way users install it, on every Airflow and Python it claims.

1. ``python -m build``: the sdist and the wheel (the licence is an SPDX expression; ``py.typed`` ships).
2. For each leg (an Airflow release and a Python), in parallel: a clean virtualenv holding only
   ``apache-airflow==X`` and the WHEEL with its extras, installed with the leg's constraints file
   (``constraints/``, the pins this matrix tested, as Airflow's own constraints files pin its releases);
   then the checks a user would make: ``airflow providers list`` shows the provider, ``airflow providers
   hooks`` shows its connection types, the example DAGs parse with no import error (a DagBag over
   ``dags/``), ``airflow-mlops gate --help`` works. Then the ``dev`` extra, and pytest over
   ``tests/unit`` and ``tests/dags`` (the example DAGs and the closed loop) from a copy of the tree
   WITHOUT the package source, so every test imports the installed wheel.
3. A table of the legs, their timings and their pytest counts; the exit code is 1 when any leg failed.

The full suite runs once, on the main combination (``.venv``, ``scripts/test.sh``).

Run: ``python3 scripts/matrix.py`` (any Python 3.10+; only the standard library). ``--refresh-constraints``
resolves each leg afresh and rewrites its constraints file from the result (``pip freeze``).
Work files: ``build/matrix/`` (git-ignored); a log per leg there.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "matrix"
UV = WORK / "tools" / "bin" / "uv"
DIST = "airflow-provider-mlops"
CONNECTION_TYPES = {"mlflow", "dvc", "prometheus", "pushgateway", "dask"}
LOOP_DAGS = {"mlops_train_gate_deploy", "mlops_drift_monitor", "mlops_retrain"}
# Tests of the source tree itself (the Docker build context is made from it), not of the installed wheel:
# the main combination runs them. By name (``-k``), so that moving the test does not bring it back here.
SOURCE_TREE_TESTS = ["test_context_holds_the_package_and_certs_only"]


@dataclass(frozen=True)
class Leg:
    """One combination: an Airflow release on a Python."""

    airflow: str
    python: str

    @property
    def name(self) -> str:
        return f"airflow-{self.airflow}-python{self.python}"

    @property
    def constraints(self) -> Path:
        return ROOT / "constraints" / f"{self.name}.txt"


# Every Airflow minor and the lowest and highest Python that pyproject.toml claims (apache-airflow>=3.3,
# Python 3.10-3.13). The main combination (Python 3.11, .venv) runs the full suite elsewhere.
LEGS = (Leg("3.3.2", "3.10"), Leg("3.3.2", "3.13"))


@dataclass
class Outcome:
    leg: Leg
    ok: bool = False
    steps: dict[str, float] = field(default_factory=dict)
    tests: str = "not run"
    failure: str = ""
    log: Path | None = None


def find_python(version: str) -> str:
    """An interpreter of ``version`` that runs: under pyenv (``~/.pyenv/versions/X.Y.*``) or on PATH (a
    pyenv shim on PATH may name a version that is not selected, so each candidate is tried)."""
    pyenv = sorted(
        glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python{version}")),
        key=lambda p: [int(x) for x in re.findall(r"\d+", Path(p).parts[-3])],
    )
    for candidate in [*reversed(pyenv), shutil.which(f"python{version}")]:
        if (
            candidate
            and subprocess.run([candidate, "-c", "import venv"], capture_output=True).returncode == 0
        ):
            return candidate
    raise SystemExit(
        f"matrix: no Python {version} (looked in ~/.pyenv/versions and on PATH); install it "
        f"(e.g. `pyenv install {version}`) or run fewer legs with --legs."
    )


def sh(cmd: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None,
       timeout: float = 1800) -> str:  # fmt: skip
    """Run ``cmd``, appending its output to ``log``; raise with the command's tail on failure."""
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=timeout)  # fmt: skip
        f.write(proc.stdout)
    if proc.returncode:
        tail = "\n".join(proc.stdout.strip().splitlines()[-15:])
        raise RuntimeError(f"`{' '.join(cmd[:4])} ...` exited {proc.returncode}:\n{tail}")
    return proc.stdout


def build(log: Path) -> Path:
    """The sdist and the wheel, with ``python -m build``; the wheel's path. Checks what users rely on."""
    tools = WORK / "tools"
    if not (tools / "bin" / "python").exists():
        sh([sys.executable, "-m", "venv", str(tools)], log)
    # build makes the sdist and wheel; uv makes the legs' virtualenvs (from PyPI, with the same constraints
    # as pip; it resolves and installs in seconds where pip takes minutes).
    sh([str(tools / "bin" / "pip"), "install", "-q", "build", "uv"], log)
    dist = WORK / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    # --installer uv: build's isolated environment (setuptools) made with uv, as fast as the legs'.
    py = str(tools / "bin" / "python")
    cmd = [py, "-m", "build", "--installer", "uv", "--outdir", str(dist), str(ROOT)]
    out = sh(cmd, log, {**os.environ, "PATH": f"{tools / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"})
    if "SetuptoolsDeprecationWarning" in out:
        raise RuntimeError("the build warns (SetuptoolsDeprecationWarning): see " + str(log))
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")
    check_wheel(wheel)
    return wheel


def check_wheel(wheel: Path) -> None:
    """``py.typed`` ships, the licence is an SPDX expression, the provider's entry point is declared."""
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        entry_points = z.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    problems = []
    if "airflow_mlops/py.typed" not in names:
        problems.append("airflow_mlops/py.typed is not in the wheel")
    if "License-Expression: Apache-2.0" not in meta:
        problems.append("the METADATA has no 'License-Expression: Apache-2.0'")
    if "[apache_airflow_provider]" not in entry_points:
        problems.append("no apache_airflow_provider entry point")
    if any(n.startswith(("tests/", "dags/")) for n in names):
        problems.append("tests/ or dags/ are in the wheel")
    if problems:
        raise RuntimeError(f"{wheel.name}: " + "; ".join(problems))


def test_tree(dest: Path) -> Path:
    """A copy of the tree without the package source (tests, dags, scripts, docker, pyproject)."""
    shutil.rmtree(dest, ignore_errors=True)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", ".mlops", "*.egg-info")
    dest.mkdir(parents=True)
    for name in ("tests", "dags", "scripts", "docker", "constraints"):
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, dest / name, ignore=skip)
    for name in ("pyproject.toml", "README.md", "docker-compose.yaml", ".env.example"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, dest / name)
    return dest


def run_leg(leg: Leg, wheel: Path, refresh: bool, reuse: bool = False) -> Outcome:
    out = Outcome(leg, log=WORK / f"{leg.name}.log")
    out.log.write_text(f"leg {leg.name}\n")
    venv, home = WORK / leg.name, WORK / f"{leg.name}-home"
    py = venv / "bin" / "python"

    def pip(command: str, *args: str) -> list[str]:
        """uv's pip interface on the leg's virtualenv: the same requirements and pins as pip."""
        return [str(UV), "pip", command, "--quiet", "--python", str(py), *args]

    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    # A user's clean shell: none of the caller's Airflow settings (pytest's conftest sets unit-test mode,
    # whose log line then comes before the CLI's JSON), connections or virtualenv.
    for key in [k for k in env if k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "VIRTUAL_ENV"))]:
        env.pop(key)
    env.update({"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"})
    pins = [] if refresh else ["-c", str(leg.constraints)]
    step = time.monotonic()

    def done(name: str) -> None:
        nonlocal step
        out.steps[name] = time.monotonic() - step
        step = time.monotonic()

    try:
        if not refresh and not leg.constraints.exists():
            raise RuntimeError(
                f"no constraints file {leg.constraints}: run scripts/matrix.py --refresh-constraints"
            )
        shutil.rmtree(home, ignore_errors=True)
        if reuse and py.exists():
            # A developer's re-run: the leg's virtualenv as the last run left it, with this wheel put in.
            sh(pip("install", "--no-deps", "--reinstall", str(wheel)), out.log, env)
        else:
            shutil.rmtree(venv, ignore_errors=True)
            sh([str(UV), "venv", "--quiet", "--python", find_python(leg.python), str(venv)], out.log, env)
            # A clean virtualenv with only Airflow and the wheel with its extras, as a user installs them.
            sh(pip("install", f"apache-airflow=={leg.airflow}", f"{DIST}[all] @ {wheel.as_uri()}", *pins),
               out.log, env)  # fmt: skip
        done("install")
        check_install(py, venv, env, out.log)
        done("checks")
        sh(pip("install", f"{DIST}[dev] @ {wheel.as_uri()}", *pins), out.log, env)
        freeze = sh(pip("freeze", "--exclude-editable"), out.log, env)
        (WORK / f"{leg.name}.freeze.txt").write_text(freeze)  # what this leg ran with
        if refresh:
            write_constraints(leg, freeze)
        done("test deps")
        tree = test_tree(WORK / f"{leg.name}-tree")
        junit = WORK / f"{leg.name}.xml"
        cmd = [str(py), "-m", "pytest", "tests/unit", "tests/dags", "-q", "-p", "no:cacheprovider",
               f"--junitxml={junit}", "-k", " and ".join(f"not {t}" for t in SOURCE_TREE_TESTS)]  # fmt: skip
        try:
            sh(cmd, out.log, env, cwd=tree, timeout=3600)  # 30 min seen beside four other sessions on 2 cores
        finally:
            out.tests = junit_counts(junit)
            done("pytest")  # timed whether the tests pass or not
        out.ok = True
    # A failed check (a JSON the CLI did not print, a missing key) is the leg's failure, in the table.
    except (RuntimeError, ValueError, KeyError, OSError, subprocess.TimeoutExpired, SystemExit) as e:
        done("failed step")
        out.failure = str(e)
    return out


def check_install(py: Path, venv: Path, env: dict[str, str], log: Path) -> None:
    """What a user checks after installing: the provider, its connection types, the DAGs, the CLI."""
    airflow, cli = str(venv / "bin" / "airflow"), str(venv / "bin" / "airflow-mlops")
    providers = json.loads(_json_tail(sh([airflow, "providers", "list", "--output", "json"], log, env)))
    mine = [p for p in providers if p["package_name"] == DIST]
    if not mine:
        raise RuntimeError(f"`airflow providers list` does not show {DIST}")
    hooks = json.loads(_json_tail(sh([airflow, "providers", "hooks", "--output", "json"], log, env)))
    types = {h["connection_type"] for h in hooks if h.get("package_name") == DIST}
    if types != CONNECTION_TYPES:
        raise RuntimeError(f"`airflow providers hooks` shows {sorted(types)}, not {sorted(CONNECTION_TYPES)}")
    probe = (
        "import sys, airflow_mlops\n"
        "assert 'site-packages' in airflow_mlops.__file__, airflow_mlops.__file__\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "bag = DagBag(dag_folder=sys.argv[1])\n"
        "assert not bag.import_errors, bag.import_errors\n"
        "print('DAGS:' + ','.join(sorted(bag.dags)))\n"
    )
    with tempfile.TemporaryDirectory() as cwd:  # not the repository: the package comes from the wheel
        dags = sh([str(py), "-c", probe, str(ROOT / "dags")], log, env, cwd=Path(cwd))
        sh([cli, "gate", "--help"], log, env, cwd=Path(cwd))
    # The closed loop's three at least (dags/ gains examples); the probe already failed on any import error.
    loaded = {d for line in dags.splitlines() if line.startswith("DAGS:") for d in line[5:].split(",")}
    if missing := LOOP_DAGS - loaded:
        raise RuntimeError(f"the example DAGs {sorted(missing)} did not load: see {log}")


def _json_tail(text: str) -> str:
    """The JSON document at the end of a command's output: Airflow may log lines before it, and a log
    line may hold brackets too (``[info     ] ...``), so it is the first line from which the rest parses."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(("[", "{")):
            rest = "\n".join(lines[i:])
            try:
                json.loads(rest)
            except ValueError:
                continue
            return rest
    return text


def write_constraints(leg: Leg, freeze: str) -> None:
    """The leg's resolved pins, minus this package (it is what is being tested)."""
    # Not this package, and no direct references (``name @ file://...``): a constraint names a release.
    lines = [
        ln
        for ln in freeze.splitlines()
        if "==" in ln and " @ " not in ln and not ln.lower().startswith(("airflow-provider-mlops", "-e "))
    ]
    leg.constraints.parent.mkdir(exist_ok=True)
    header = (
        f"# Pins tested by scripts/matrix.py for Airflow {leg.airflow} on Python {leg.python}\n"
        "# (regenerate: python3 scripts/matrix.py --refresh-constraints).\n"
    )
    leg.constraints.write_text(header + "\n".join(sorted(lines, key=str.lower)) + "\n")


def junit_counts(path: Path) -> str:
    """``N passed, M failed, K skipped`` from a pytest JUnit report."""
    import xml.etree.ElementTree as ET

    if not path.exists():
        return "no report"
    suite = ET.parse(path).getroot()
    suite = suite.find("testsuite") if suite.tag == "testsuites" else suite
    total, failed = int(suite.get("tests", 0)), int(suite.get("failures", 0)) + int(suite.get("errors", 0))
    skipped = int(suite.get("skipped", 0))
    return f"{total - failed - skipped} passed, {failed} failed, {skipped} skipped"


def table(outcomes: list[Outcome], build_s: float, wall: float) -> str:
    lines = [f"matrix: build (sdist + wheel) {build_s:.0f}s; legs in parallel, wall time {wall:.0f}s",
             f"  {'leg':<28} {'result':<6} {'install':>7} {'checks':>6} {'pytest':>6}  tests (unit + dags)"]  # fmt: skip
    for o in outcomes:
        s = o.steps
        lines.append(f"  {o.leg.name:<28} {'ok' if o.ok else 'FAIL':<6} {s.get('install', 0):>6.0f}s "
                     f"{s.get('checks', 0):>5.0f}s {s.get('pytest', 0):>5.0f}s  {o.tests}")  # fmt: skip
        if not o.ok:
            lines.append(f"    {o.failure.splitlines()[0] if o.failure else ''}  (log: {o.log})")
            lines.extend(f"      {ln}" for ln in o.failure.splitlines()[1:])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--legs", nargs="*", help=f"leg names (default: all of {[leg.name for leg in LEGS]})")
    p.add_argument("--refresh-constraints", action="store_true", help="resolve afresh, rewrite constraints/")
    p.add_argument("--parallel", type=int, default=2, help="legs at once (default 2: one per core here)")
    p.add_argument("--reuse-venvs", action="store_true",
                   help="keep the legs' virtualenvs from the last run and put only the new wheel in (not clean: "
                   "for iterating; CI makes them afresh)")  # fmt: skip
    args = p.parse_args(argv)
    legs = [leg for leg in LEGS if not args.legs or leg.name in args.legs]
    if not legs:
        raise SystemExit(f"matrix: no leg named {args.legs}; pick from {[leg.name for leg in LEGS]}")
    for leg in legs:
        find_python(leg.python)  # a missing interpreter says so before anything is built
    WORK.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    build_log = WORK / "build.log"
    build_log.write_text("")
    try:
        wheel = build(build_log)
    except (RuntimeError, ValueError) as e:
        print(f"matrix: FAIL building the wheel: {e} (log: {build_log})")
        return 1
    build_s = time.monotonic() - started
    print(
        f"matrix: built {wheel.name} in {build_s:.0f}s; legs: {', '.join(leg.name for leg in legs)}",
        flush=True,
    )
    with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
        outcomes = list(
            pool.map(lambda leg: run_leg(leg, wheel, args.refresh_constraints, args.reuse_venvs), legs)
        )
    print(table(outcomes, build_s, time.monotonic() - started), flush=True)
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main())

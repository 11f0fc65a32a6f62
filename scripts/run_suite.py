"""Run the whole test suite as a few pytest sessions side by side, then print one pytest summary line.

Most of the suite waits on real servers (MLflow, Airflow's components, Docker builds, Prometheus), not on
the CPU, so several sessions on two cores finish far sooner than one. Each session owns the tests that
share its heavy resources: the live compose stack (its cold image builds are the longest chain, so it
starts with the others at t=0 and owns nothing else), the wheel matrix (clean virtualenvs per Airflow and
Python), Docker (images and containers), the real Airflow deployment, and everything else. Logs go to
``build/suite/<session>.log``; the end of the run prints each session's wall time and counts.

Usage: ``python scripts/run_suite.py [pytest options]`` (``scripts/test.sh`` calls it when no test path
is given).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "build" / "suite"

# Sessions and the test paths they own, longest chain first (each starts at t=0; the order is the order of
# their logs and of the timing table). "main" takes everything the others do not; a session also leaves out
# the paths of another session that lie inside its own (the live stack test inside tests/integration/stack).
OWN = {
    # The live compose stack: cold image builds (~20 min) and then the closed loop through the compose file.
    "stack": ["tests/integration/stack/test_stack_up.py"],
    # The wheel on every claimed Airflow and Python: one build, the legs in parallel (scripts/matrix.py).
    "matrix": ["tests/packaging"],
    "docker": ["tests/integration/stack", "tests/integration/deploy"],
    # Real Airflow deployments: Celery (two workers, one triggerer) in one session, LocalExecutor and the
    # release-control tiers in another. Each mostly waits on its scheduler and workers, so the two overlap
    # instead of adding up (together they were the longest session).
    "celery": ["tests/deployment/test_celery_executor.py"],
    "airflow": ["tests/deployment"],
    # Tests against real servers (MLflow, gateways, Prometheus, DVC) and the bad-input corpus: mostly waiting
    # on those servers, so they run beside the unit and DAG tests instead of after them.
    "integration": ["tests/integration", "tests/corpus"],
}


def _inside(path: str, parent: str) -> bool:
    return path != parent and (path + "/").startswith(parent.rstrip("/") + "/")


def _sessions() -> dict[str, list[str]]:
    taken = [p for paths in OWN.values() for p in paths]
    sessions = {}
    for name, paths in OWN.items():
        others = [t for t in taken if t not in paths and any(_inside(t, p) for p in paths)]
        sessions[name] = [*paths, *(f"--ignore={t}" for t in others)]
    main = ["tests", *(f"--ignore={p}" for p in taken if not any(_inside(p, q) for q in taken))]
    return {**sessions, "main": main}


def _counts(xml: Path) -> dict[str, int]:
    """passed / failed / errors / skipped from a JUnit XML report (zeros when there is none)."""
    out = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    if not xml.exists():
        return out
    try:
        root = ET.parse(xml).getroot()
    except ET.ParseError:
        return out
    for suite in root.iter("testsuite"):
        tests, failed = int(suite.get("tests", 0)), int(suite.get("failures", 0))
        errors, skipped = int(suite.get("errors", 0)), int(suite.get("skipped", 0))
        out["failed"] += failed
        out["errors"] += errors
        out["skipped"] += skipped
        out["passed"] += tests - failed - errors - skipped
    return out


def _problems(xml: Path) -> list[str]:
    """One line per failed or erroring test of a JUnit XML report: its id and the first line of why."""
    if not xml.exists():
        return []
    try:
        root = ET.parse(xml).getroot()
    except ET.ParseError:
        return []
    out = []
    for case in root.iter("testcase"):
        for kind, word in (("failure", "FAILED"), ("error", "ERROR")):
            for node in case.findall(kind):
                path = (case.get("classname") or "").replace(".", "/")
                why = (node.get("message") or "").strip().splitlines() or [""]
                out.append(f"{word} {path}.py::{case.get('name')} - {why[0][:300]}")
    return out


def main(argv: list[str]) -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    procs: dict[str, tuple[subprocess.Popen[bytes], Path, float]] = {}
    for name, paths in _sessions().items():
        log = OUT / f"{name}.log"
        xml = OUT / f"{name}.xml"
        xml.unlink(missing_ok=True)
        # The slowest tests of each session in its log: where CI's time goes, read after every run.
        cmd = [sys.executable, "-m", "pytest", *paths, *argv, "--durations=30", f"--junitxml={xml}"]
        print(f"suite: {name}: {' '.join(paths)} (log: {log.relative_to(ROOT)})", flush=True)
        with log.open("wb") as f:
            procs[name] = (
                subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT),
                log,
                time.monotonic(),
            )
    codes: dict[str, int] = {}
    ended: dict[str, float] = {}
    cpu: dict[str, float] = {}
    while len(codes) < len(procs):
        for name, (proc, log, began) in procs.items():
            if name in codes:
                continue
            # wait4, not poll: the session's CPU time (its own and that of every descendant it waited for;
            # containers and daemons that outlive their parent are not in it) shows where CI's cores went.
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid == 0:
                continue
            proc.returncode = codes[name] = os.waitstatus_to_exitcode(status)
            cpu[name] = usage.ru_utime + usage.ru_stime
            ended[name] = time.monotonic() - start
            lines = log.read_text(errors="replace").splitlines()
            # A failed session shows its failures in full; a passed one its summary.
            shown = lines[-400:] if proc.returncode not in (0, 5) else lines[-12:]
            print(
                f"\n===== suite: {name} exited {proc.returncode} after {time.monotonic() - began:.0f} s ====="
            )
            print("\n".join(shown), flush=True)
        time.sleep(1)
    total = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    print(
        "\nsuite: sessions (wall time from the start of the run; CPU time of the session and its processes)"
    )
    for name in procs:
        counts = _counts(OUT / f"{name}.xml")
        for k, v in counts.items():
            total[k] += v
        shown = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
        print(
            f"  {name:<11} exit {codes[name]:>3} {ended[name]:>6.0f} s  cpu {cpu[name]:>6.0f} s  "
            f"{shown or 'no report'}"
        )
    # Every failure and error again, one line each, where a reader of the end of the output sees it.
    for name in procs:
        for line in _problems(OUT / f"{name}.xml"):
            print(f"  [{name}] {line}")
    # A session that crashed before writing its report still fails the run.
    crashed = [n for n, c in codes.items() if c not in (0, 5) and not any(_counts(OUT / f"{n}.xml").values())]
    for name in crashed:
        print(f"suite: session {name} exited {codes[name]} without a report: see build/suite/{name}.log")
    # pytest's own wording and order, so that readers of pytest's summary line read this one too.
    parts = [f"{total['failed']} failed"] if total["failed"] else []
    parts.append(f"{total['passed']} passed")
    parts += [f"{total['skipped']} skipped"] if total["skipped"] else []
    parts += [f"{total['errors']} error{'s' if total['errors'] > 1 else ''}"] if total["errors"] else []
    print(f"============ {', '.join(parts)} in {time.monotonic() - start:.2f}s ============")
    ok = all(c in (0, 5) for c in codes.values()) and total["passed"] > 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

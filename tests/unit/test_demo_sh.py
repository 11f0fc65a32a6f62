"""``scripts/demo.sh`` keeps the set-up's noise off the terminal: only its ``setup:`` progress lines show,
everything goes to the log it names first, and a failing set-up shows its last lines and fails.

The real ``demo.sh`` runs in a copy of the tree whose ``scripts/setup.sh`` and ``.venv/bin/python`` are
stand-ins (the real set-up installs system packages and stops services, and the real demo is run by
``tests/dags/test_example_dags.py``); they print what pip and apt print.
"""

from __future__ import annotations

import shutil
import subprocess

from tests.conftest import REPO_ROOT

NOISE = "\n".join(f"Collecting package-{i}\n  Downloading package_{i}.whl (1.0 MB)" for i in range(300))


def _tree(tmp_path, setup_rc: int):
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO_ROOT / "scripts" / "demo.sh", tmp_path / "scripts" / "demo.sh")
    (tmp_path / "scripts" / "setup.sh").write_text(
        f"cat <<'X'\nsetup: installing the package\n{NOISE}\nX\necho 'pip warning' >&2\n"
        + ("echo 'setup: ready'\n" if setup_rc == 0 else f"echo 'E: broken apt'; exit {setup_rc}\n")
    )
    venv = tmp_path / ".venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").write_text('#!/bin/sh\necho "demo ran: $MLOPS_DEMO_LOG"\n')
    (venv / "python").chmod(0o755)
    return tmp_path


def test_the_terminal_shows_progress_and_the_log_holds_the_rest(tmp_path):
    tree = _tree(tmp_path, 0)
    out = subprocess.run(["bash", "scripts/demo.sh"], cwd=tree, capture_output=True, text=True, timeout=60)
    log = tree / ".mlops" / "demo.log"
    assert out.returncode == 0, out.stderr
    lines = (out.stdout + out.stderr).splitlines()
    assert lines == [f"Demo log (every detail): {log}", "setup: installing the package", "setup: ready",
                     f"demo ran: {log}"]  # fmt: skip
    text = log.read_text()
    assert "Downloading package_299.whl" in text and "pip warning" in text


def test_a_failing_setup_fails_and_shows_its_last_lines(tmp_path):
    tree = _tree(tmp_path, 3)
    out = subprocess.run(["bash", "scripts/demo.sh"], cwd=tree, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "setup failed" in out.stderr and "E: broken apt" in out.stderr
    assert "demo ran" not in out.stdout and len((out.stdout + out.stderr).splitlines()) < 30

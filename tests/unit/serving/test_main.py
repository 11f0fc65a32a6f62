"""The gateway's command line refuses bad arguments before starting anything."""

from __future__ import annotations

import json

from airflow_mlops.serving.__main__ import build_parser, main


def test_defaults_bind_loopback():
    args = build_parser().parse_args(["--tracking-uri", "sqlite:///x.db"])
    assert args.host == "127.0.0.1" and args.port == 8080 and args.config is None


def test_missing_tracking_uri_is_refused(monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main([]) == 2
    assert "--tracking-uri" in capsys.readouterr().err


def test_bad_limits_and_configs_are_refused(tmp_path, capsys):
    assert main(["--tracking-uri", "sqlite:///x.db", "--max-rows", "0"]) == 2
    assert "--max-rows must be positive" in capsys.readouterr().err
    assert main(["--tracking-uri", "sqlite:///x.db", "--config", str(tmp_path / "none.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps({"model_name": "bc", "strategy": "canary", "routes": [{"version": "1", "weight": 0.3}]})
    )
    assert main(["--tracking-uri", "sqlite:///x.db", "--config", str(bad)]) == 2
    assert "sum to 1" in capsys.readouterr().err


def test_the_gateway_never_imports_airflow():
    import subprocess
    import sys

    code = (
        "import sys, airflow_mlops.serving, airflow_mlops.serving.app, airflow_mlops.serving.__main__; "
        "print(sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

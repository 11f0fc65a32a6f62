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


GOOD = {"model_name": "bc", "strategy": "single", "routes": [{"version": "1"}]}


def test_a_truncated_state_file_is_named_kept_aside_and_the_config_serves(tmp_path, caplog):
    """A state file cut short by a crash hides nothing: it is reported by its own path, kept as
    ``<name>.corrupt``, and the gateway starts from --config (before: it refused to start, blaming --config)."""
    from airflow_mlops.serving.__main__ import startup_config

    state, config = tmp_path / "deployment.json", tmp_path / "config.json"
    state.write_text(json.dumps(GOOD)[:25])
    config.write_text(json.dumps({**GOOD, "routes": [{"version": "7"}]}))
    with caplog.at_level("ERROR", logger="airflow_mlops.serving"):
        loaded = startup_config(str(state), str(config))
    assert loaded.versions == ["7"]
    assert not state.exists() and (tmp_path / "deployment.json.corrupt").read_text() == json.dumps(GOOD)[:25]
    assert (
        str(state) in caplog.text and "deployment.json.corrupt" in caplog.text and str(config) in caplog.text
    )


def test_a_corrupt_state_file_without_a_config_is_a_clear_error(tmp_path, capsys):
    state = tmp_path / "deployment.json"
    state.write_bytes(b"\xff\xfe binary")
    assert main(["--tracking-uri", "sqlite:///x.db", "--state-file", str(state)]) == 2
    err = capsys.readouterr().err
    assert f"The state file {state}" in err and "give --config" in err and state.exists()


def test_a_bad_config_file_is_named(tmp_path, capsys):
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    assert main(["--tracking-uri", "sqlite:///x.db", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"Deployment config {bad}" in err and "not valid JSON" in err


def test_the_feedback_token_comes_from_a_file_or_the_environment(tmp_path, monkeypatch, capsys):
    from airflow_mlops.serving.__main__ import read_feedback_token

    monkeypatch.setenv("MLOPS_GATEWAY_FEEDBACK_TOKEN", "from-env")
    assert read_feedback_token(None) == "from-env"
    f = tmp_path / "token"
    f.write_text("from-file\n")
    assert read_feedback_token(str(f)) == "from-file"
    empty = tmp_path / "empty"
    empty.write_text("  \n")
    assert main(["--tracking-uri", "sqlite:///x.db", "--feedback-token-file", str(empty)]) == 2
    assert "is empty" in capsys.readouterr().err
    assert main(["--tracking-uri", "sqlite:///x.db", "--feedback-token-file", str(tmp_path / "nope")]) == 2
    assert "Cannot read --feedback-token-file" in capsys.readouterr().err
    monkeypatch.setenv("MLOPS_GATEWAY_ADMIN_TOKEN", "from-env")
    assert main(["--tracking-uri", "sqlite:///x.db"]) == 2
    assert "equals MLOPS_GATEWAY_ADMIN_TOKEN" in capsys.readouterr().err

"""The CLI's parser and error handling without services, and PromClient's input checks."""

from __future__ import annotations

import pytest

from airflow_mlops import cli
from airflow_mlops.core.errors import MlopsInputError
from airflow_mlops.core.promql import PromClient


def test_gate_subcommand_is_registered_with_its_options():
    args = cli.build_parser().parse_args(
        ["gate", "--spec", "g.yaml", "--model", "bc", "--version", "3", "--tracking-uri", "http://m:5000"]
    )
    assert args.command == "gate" and args.func is cli.run_gate_command
    assert (args.spec, args.model, args.version, args.tracking_uri) == ("g.yaml", "bc", "3", "http://m:5000")
    assert args.wait == 0 and not args.dry_run


def test_missing_spec_file_exits_2_with_a_message(tmp_path, capsys):
    code = cli.main(["gate", "--spec", str(tmp_path / "no.yaml"), "--model", "bc", "--version", "1",
                     "--tracking-uri", "http://127.0.0.1:9"])  # fmt: skip
    assert code == cli.EXIT_ERROR
    assert "does not exist" in capsys.readouterr().err


def test_subcommand_is_required():
    with pytest.raises(SystemExit) as e:
        cli.build_parser().parse_args([])
    assert e.value.code == 2


def test_prom_client_checks_its_url_and_builds_auth_headers():
    with pytest.raises(MlopsInputError, match="not an http"):
        PromClient("prometheus:9090")
    basic = PromClient("http://p:9090", username="u", password="p")._headers()
    assert basic["Authorization"] == "Basic dTpw"
    assert PromClient("http://p:9090", token="t")._headers()["Authorization"] == "Bearer t"
    assert "Authorization" not in PromClient("http://p:9090")._headers()
    assert "secret" not in repr(PromClient("http://p:9090", token="secret"))
    with pytest.raises(MlopsInputError, match="empty"):
        PromClient("http://p:9090").query("  ")


def test_an_unexpected_error_exits_2_with_one_line_and_no_traceback(monkeypatch, capsys):
    """A bug (simulated by a subcommand that raises) must never look like a failed gate (exit 1) nor print
    a traceback; credentials in the text are masked. The raising subcommand is a stand-in: no real input
    reaches an unexpected exception on purpose."""

    def boom(args):
        raise RuntimeError("lost connection to http://ci:hunter2@mlflow:5000\nsecond line")

    monkeypatch.setattr(cli, "run_gate_command", boom)
    code = cli.main(["gate", "--spec", "g.yaml", "--model", "bc", "--version", "1"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_ERROR
    assert err.count("\n") == 1 and err.startswith("error: RuntimeError: lost connection")
    assert "hunter2" not in err and "Traceback" not in err


def test_prometheus_down_is_a_service_error_in_seconds():
    import time

    from airflow_mlops.core.errors import MlopsServiceError
    from tests.servers import free_port

    start = time.monotonic()
    with pytest.raises(MlopsServiceError, match=r"Prometheus at http://127\.0\.0\.1:\d+ cannot be reached"):
        PromClient(f"http://u:pw@127.0.0.1:{free_port()}", timeout=3).query("up")
    assert time.monotonic() - start < 5
    # Credentials in the URL become an Authorization header (urllib would read "u:pw@host" as the host).
    client = PromClient("http://u:pw@127.0.0.1:9090/prefix")
    assert client.base_url == "http://127.0.0.1:9090/prefix" and client.where == client.base_url
    assert client._headers()["Authorization"] == "Basic dTpwdw=="
    assert PromClient("https://tok@p:9090")._headers()["Authorization"] == "Bearer tok"
    with pytest.raises(MlopsInputError, match="in \\(0, 600\\]"):
        PromClient("http://p:9090", timeout=0)

"""MlflowHook: connection parsing and scoped settings (no server needed: nothing is called)."""

from __future__ import annotations

import os

import pytest

from airflow_mlops.hooks.mlflow import MlflowHook
from tests.conftest import conn_env


@pytest.mark.parametrize(
    ("conn", "uri"),
    [
        ({"host": "http://mlflow:5000"}, "http://mlflow:5000"),
        ({"host": "mlflow", "port": 5000}, "http://mlflow:5000"),
        ({"host": "mlflow.example.com", "schema": "https"}, "https://mlflow.example.com"),
        ({"host": "sqlite:////data/mlflow.db"}, "sqlite:////data/mlflow.db"),
        ({"host": "file:/data/mlruns"}, "file:/data/mlruns"),
    ],
)
def test_tracking_uri_from_connection(monkeypatch, conn, uri):
    monkeypatch.setenv(*conn_env("mlflow_x", {"conn_type": "mlflow", **conn}))
    assert MlflowHook("mlflow_x").target.tracking_uri == uri


def test_basic_auth_token_and_extras(monkeypatch):
    monkeypatch.setenv(
        *conn_env("basic", {"conn_type": "mlflow", "host": "http://m:5000", "login": "u", "password": "p"})
    )
    monkeypatch.setenv(*conn_env("token", {"conn_type": "mlflow", "host": "http://m:5000", "password": "tok",
                                           "extra": {"registry_uri": "http://reg:5000", "ui_url": "http://ui"}}))  # fmt: skip
    basic, token = MlflowHook("basic").target, MlflowHook("token").target
    assert (basic.username, basic.password, basic.token) == ("u", "p", None)
    assert (token.username, token.password, token.token) == (None, None, "tok")
    assert token.registry_uri == "http://reg:5000"
    assert token.run_url("1", "abc") == "http://ui/#/experiments/1/runs/abc"
    assert "tok" not in repr(token) and "p'" not in repr(basic)


def test_settings_apply_only_inside_activate(monkeypatch):
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv(*conn_env("a", {"conn_type": "mlflow", "host": "http://a:1", "password": "secret"}))
    monkeypatch.setenv(*conn_env("b", {"conn_type": "mlflow", "host": "sqlite:////tmp/b.db"}))
    before = mlflow.get_tracking_uri()
    with MlflowHook("a").activate():
        assert mlflow.get_tracking_uri() == "http://a:1"
        assert os.environ["MLFLOW_TRACKING_TOKEN"] == "secret"
        with MlflowHook("b").activate():
            assert mlflow.get_tracking_uri() == "sqlite:////tmp/b.db"
            assert "MLFLOW_TRACKING_TOKEN" not in os.environ  # a's secret does not leak into b
        assert os.environ["MLFLOW_TRACKING_TOKEN"] == "secret"
    assert "MLFLOW_TRACKING_TOKEN" not in os.environ
    assert mlflow.get_tracking_uri() == before


def test_missing_host_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(*conn_env("empty", {"conn_type": "mlflow"}))
    with pytest.raises(ValueError, match="no host"):
        _ = MlflowHook("empty").target

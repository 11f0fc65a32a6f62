"""The traffic simulator against a real gateway process serving a real model from a real MLflow server."""

from __future__ import annotations

import pytest
from sklearn.datasets import load_breast_cancer

from airflow_mlops.core.errors import MlopsInputError
from airflow_mlops.serving.client import GatewayClient, parse_metrics
from airflow_mlops.simulator import Shift, apply_shifts, simulate
from tests.models import register_versions
from tests.servers import FEEDBACK_TOKEN, start_gateway, stop


@pytest.fixture
def served_model(mlflow_server, model_name, tmp_path):
    frame = load_breast_cancer(as_frame=True).frame
    (version,) = register_versions(mlflow_server, model_name, [{"C": 1.0}])
    config = {"model_name": model_name, "strategy": "single", "routes": [{"version": version, "weight": 1.0}],
              "champion": version}  # fmt: skip
    proc, url = start_gateway(tmp_path / "gw", mlflow_server, config=config)
    yield url, frame, model_name
    stop(proc)


def test_feedback_arrives_and_a_shift_hurts_live_accuracy(served_model):
    url, frame, name = served_model
    clean = simulate(
        url,
        frame,
        "target",
        requests=120,
        feedback_delay=0.2,
        concurrency=3,
        seed=1,
        feedback_token=FEEDBACK_TOKEN,
    )
    assert clean.failed == 0 and clean.feedback_sent == 120 and clean.feedback_failed == 0
    (version,) = clean.served
    assert clean.accuracy()[version] > 0.9
    shifted = simulate(url, frame, "target", requests=120, feedback_delay=0.2, concurrency=3, seed=2, feedback_token=FEEDBACK_TOKEN,
                       shifts=[Shift.parse("mean radius*1.8"), Shift.parse("worst area*2.5"), Shift.parse("worst radius*1.8")])  # fmt: skip
    assert shifted.failed == 0 and shifted.feedback_sent == 120
    assert shifted.accuracy()[version] < clean.accuracy()[version] - 0.1
    # The gateway joined every feedback event to its request: 240 labelled samples counted.
    with GatewayClient(url) as client:
        metrics = parse_metrics(client.metrics_text())
    fed = sum(
        v
        for (n, labels), v in metrics.items()
        if n == "mlops_gateway_feedback_total" and ("model", name) in labels
    )
    assert fed == 240


def test_shift_parsing_and_errors():
    frame = load_breast_cancer(as_frame=True).frame.head(3)
    out = apply_shifts(frame, [Shift.parse("mean radius * 2"), Shift.parse("mean texture+-1.5")])
    assert (out["mean radius"] == frame["mean radius"] * 2).all()
    assert (out["mean texture"] == frame["mean texture"] - 1.5).all()
    with pytest.raises(MlopsInputError, match="not understood"):
        Shift.parse("mean radius ** 2")
    with pytest.raises(MlopsInputError, match="not in the data"):
        apply_shifts(frame, [Shift.parse("nope*2")])


def test_feedback_with_a_wrong_token_is_refused_and_never_counted(served_model):
    """The gateway takes labels only from holders of its feedback token: a simulator without it sees each
    label refused (401, the message names the variable to set) and the gateway counts none."""
    url, frame, name = served_model
    stats = simulate(url, frame, "target", requests=6, feedback_delay=0.0, concurrency=1, seed=3,
                     feedback_token="not-the-token")  # fmt: skip
    assert stats.failed == 0 and stats.feedback_sent == 0 and stats.feedback_failed == 6
    assert "401" in stats.errors[0] and "MLOPS_GATEWAY_FEEDBACK_TOKEN" in stats.errors[0]
    with GatewayClient(url) as client:
        metrics = parse_metrics(client.metrics_text())
    # The counter's series are born at 0 (so that increase() misses no first feedback): none counted.
    assert [v for (n, _), v in metrics.items() if n == "mlops_gateway_feedback_total"] in ([], [0.0])


def test_the_feedback_token_comes_from_the_environment(served_model, monkeypatch):
    """Without an explicit token the simulator (its GatewayClient) sends ``$MLOPS_GATEWAY_FEEDBACK_TOKEN``."""
    url, frame, name = served_model
    monkeypatch.setenv("MLOPS_GATEWAY_FEEDBACK_TOKEN", FEEDBACK_TOKEN)
    stats = simulate(url, frame, "target", requests=4, feedback_delay=0.0, concurrency=1, seed=4)
    assert stats.feedback_sent == 4 and stats.feedback_failed == 0, stats.errors

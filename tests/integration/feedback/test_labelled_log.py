"""Ground truth sent to a real gateway is logged and joins back to the logged features for retraining."""

from __future__ import annotations

import pandas as pd
from sklearn.datasets import load_breast_cancer

from airflow_mlops.core.prediction_log import read_labelled
from airflow_mlops.serving.client import GatewayClient
from tests.models import register_versions
from tests.servers import FEEDBACK_TOKEN, start_gateway, stop


def test_labelled_requests_join_their_features(mlflow_server, model_name, tmp_path):
    frame = load_breast_cancer(as_frame=True).frame
    (v,) = register_versions(mlflow_server, model_name, [{}])
    config = {
        "model_name": model_name,
        "strategy": "single",
        "routes": [{"version": v, "weight": 1.0}],
        "champion": v,
    }
    proc, url = start_gateway(tmp_path / "gw", mlflow_server, config=config)
    X, y = frame.drop(columns="target"), frame["target"]
    try:
        with GatewayClient(url, feedback_token=FEEDBACK_TOKEN) as client:
            one = client.predict(X.iloc[0].to_dict())
            batch = client.predict(X.iloc[1:4].to_dict(orient="records"))
            unlabelled = client.predict(X.iloc[4].to_dict())
            client.feedback(one["request_id"], label=int(y.iloc[0]))
            client.feedback(batch["request_id"], labels=[int(t) for t in y.iloc[1:4]])
    finally:
        stop(proc)  # a clean shutdown writes what the gateway held
    labelled = read_labelled(tmp_path / "gw" / "predictions", model_name, target="label")
    assert unlabelled["request_id"]  # served, but no ground truth came back: not in the result
    assert len(labelled) == 4 and list(labelled.columns) == [*X.columns, "label"]
    expected = X.iloc[:4].assign(label=y.iloc[:4].to_numpy())
    pd.testing.assert_frame_equal(
        labelled.sort_values("mean radius").reset_index(drop=True),
        expected.sort_values("mean radius").reset_index(drop=True),
        check_dtype=False,
    )


def test_nothing_logged_reads_as_empty(tmp_path):
    assert read_labelled(tmp_path, "nope", target="label").empty

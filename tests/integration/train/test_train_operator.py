"""TrainOperator end to end: real MLflow server, real git+DVC repo, real scikit-learn, dag.test()."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.conftest import conn_env, run_dag


def _versions(client, name: str) -> list:
    return client.search_model_versions(f"name='{name}'")


def _task_result(dr, task_id: str = "train"):
    ti = next(t for t in dr.get_task_instances() if t.task_id == task_id)
    return ti


def test_trains_from_dvc_with_full_lineage(airflow_db, mlflow_conn, mlflow_client, dvc_repo, model_name):
    dr = run_dag("test_train_model", model_name=model_name, dvc_path=dvc_repo["data_path"],
                 estimator="sklearn.linear_model.LogisticRegression", estimator_params={"max_iter": 500})  # fmt: skip
    assert dr.state == "success"
    (mv,) = _versions(mlflow_client, model_name)
    run = mlflow_client.get_run(mv.run_id)
    tags = run.data.tags
    # DVC lineage: the commit the revision resolved to, and the content hash DVC recorded.
    assert tags["mlops.dvc.commit"] == dvc_repo["rev"]
    dvc_meta = (dvc_repo["path"] / "data" / "breast_cancer.csv.dvc").read_text()
    assert tags["mlops.dvc.md5"] in dvc_meta
    assert tags["mlops.airflow.dag_id"] == "test_train_model"
    assert tags["mlops.airflow.task_id"] == "train"
    assert tags["mlops.airflow.run_id"] == dr.run_id
    assert mv.tags["mlops.dvc.commit"] == dvc_repo["rev"]
    # Metrics of a real fit: logistic regression separates breast_cancer well.
    assert run.data.metrics["f1"] > 0.9
    assert {"accuracy", "precision", "recall", "roc_auc"} <= set(run.data.metrics)
    assert run.data.params["estimator.max_iter"] == "500"
    # The training dataset is logged as an input, with its digest and DVC source.
    (ds_input,) = run.inputs.dataset_inputs
    assert ds_input.dataset.digest
    assert dvc_repo["rev"] in ds_input.dataset.source
    # The model has a signature over raw feature columns and an input example; it loads and predicts.
    import mlflow

    from airflow_mlops.core.tracking import MlflowTarget

    with MlflowTarget(mlflow_conn).activate():
        model = mlflow.sklearn.load_model(f"models:/{model_name}/{mv.version}")
        info = mlflow.models.get_model_info(f"models:/{model_name}/{mv.version}")
        # The drift reference sample of training features is an artifact of the run.
        sample_path = mlflow.artifacts.download_artifacts(
            run_id=mv.run_id, artifact_path="reference/train_sample.parquet"
        )
    frame = dvc_repo["frame"]
    assert (model.predict(frame.drop(columns="target").head(20)) == frame["target"].head(20)).mean() > 0.8
    assert [c["name"] for c in info.signature.inputs.to_dict()][:2] == ["mean radius", "mean texture"]
    sample = pd.read_parquet(sample_path)
    assert "target" not in sample.columns and len(sample) > 100
    # XCom result and the run link.
    ti = _task_result(dr)
    result = ti.xcom_pull(task_ids="train")
    assert result["version"] == str(mv.version) and result["run_id"] == mv.run_id
    assert result["model_uri"] == f"models:/{model_name}/{mv.version}"
    assert result["metrics"]["f1"] == pytest.approx(run.data.metrics["f1"])
    assert ti.xcom_pull(task_ids="train", key="mlflow_run_url").startswith(mlflow_conn)
    # The MLflow 3 LoggedModel: the version's source, with the test metrics linked to it and the dataset.
    assert mv.source == f"models:/{result['model_id']}"
    logged = {m.key: m for m in mlflow_client.get_logged_model(result["model_id"]).metrics}
    assert logged["f1"].value == pytest.approx(result["metrics"]["f1"])
    assert logged["f1"].dataset_digest == run.inputs.dataset_inputs[0].dataset.digest


def test_asset_event_carries_the_model_facts(airflow_db, mlflow_conn, mlflow_client, dvc_repo, model_name):
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    run_dag("test_train_model", model_name=model_name, dvc_path=dvc_repo["data_path"])
    with create_session() as session:
        events = [
            e for e in session.query(AssetEvent).all() if (e.extra or {}).get("model_name") == model_name
        ]
    assert len(events) == 1
    assert events[0].extra["version"] == "1"
    assert events[0].extra["metrics"]["f1"] > 0.8


def test_model_selection_keeps_the_best_candidate(
    airflow_db, mlflow_conn, mlflow_client, tmp_path, model_name
):
    from sklearn.datasets import load_wine

    data = tmp_path / "wine.csv"
    load_wine(as_frame=True).frame.to_csv(data, index=False)
    candidates = [
        {"estimator": "sklearn.dummy.DummyClassifier", "params": {"strategy": "most_frequent"}},
        {"estimator": "sklearn.linear_model.LogisticRegression", "params": {"max_iter": 1000}},
    ]
    dr = run_dag("test_train_model", model_name=model_name, data=str(data), candidates=candidates)
    assert dr.state == "success"
    (mv,) = _versions(mlflow_client, model_name)
    run = mlflow_client.get_run(mv.run_id)
    assert run.data.params["estimator"] == "sklearn.linear_model.LogisticRegression"
    selection = json.loads(open(mlflow_client.download_artifacts(mv.run_id, "model_selection.json")).read())
    assert len(selection["candidates"]) == 2
    assert run.data.metrics["f1"] > 0.85  # weighted F1 on three classes


@pytest.mark.parametrize(
    ("case", "conf", "message"),
    [
        ("missing_file", {"data": "/nonexistent/train.csv"}, "does not exist"),
        ("missing_target", {"target": "nope"}, "Target column 'nope'"),
        ("single_class", {"data": "single_class"}, "single class"),
        ("empty", {"data": "empty"}, "no rows"),
        ("unencodable", {"data": "unencodable"}, "cannot be encoded"),
        ("unknown_estimator", {"estimator": "sklearn.nope.Model"}, "cannot be imported"),
        (
            "bad_params",
            {"estimator": "sklearn.linear_model.LogisticRegression", "estimator_params": {"C": -1}},
            "rejects params",
        ),
    ],
)
def test_bad_input_fails_clearly_and_registers_nothing(
    airflow_db, mlflow_conn, mlflow_client, tmp_path, model_name, capfd, case, conf, message
):
    frame = pd.DataFrame({"x": range(40), "c": ["a", "b", "c", "d"] * 10, "target": ([0] * 3 + [1] * 2) * 8})
    variants = {
        "single_class": frame.assign(target=1),
        "empty": frame.head(0),
        "unencodable": frame.assign(when=pd.Timestamp("2024-01-01")),
    }
    path = tmp_path / "train.csv"
    (variants.get(conf.get("data"), frame)).to_csv(path, index=False)
    if case == "unencodable":
        path = tmp_path / "train.parquet"
        variants["unencodable"].to_parquet(path)
    if conf.get("data") in variants or "data" not in conf:
        conf = {**conf, "data": str(path)}
    dr = run_dag("test_train_model", model_name=model_name, **conf)
    assert dr.state == "failed"
    assert message in "".join(capfd.readouterr())
    assert _versions(mlflow_client, model_name) == []


def test_unreachable_mlflow_fails_fast(airflow_db, monkeypatch, tmp_path, capfd, model_name):
    from tests.servers import free_port

    monkeypatch.setenv(
        *conn_env("mlflow_default", {"conn_type": "mlflow", "host": f"http://127.0.0.1:{free_port()}"})
    )
    path = tmp_path / "train.csv"
    pd.DataFrame({"x": range(20), "target": [0, 1] * 10}).to_csv(path, index=False)
    dr = run_dag("test_train_model", model_name=model_name, data=str(path))
    assert dr.state == "failed"
    assert "unreachable" in "".join(capfd.readouterr())


def test_retry_reuses_the_finished_run(airflow_db, mlflow_conn, mlflow_client, dvc_repo, model_name):
    """A worker that dies after registering (simulated by a task that raises on its first try after
    TrainOperator.execute returned) must not register a second version on retry."""
    dr = run_dag("test_train_retry", model_name=model_name)
    assert dr.state == "success"
    versions = _versions(mlflow_client, model_name)
    assert len(versions) == 1
    result = _task_result(dr).xcom_pull(task_ids="train")
    assert result["reused"] is True and result["version"] == "1"

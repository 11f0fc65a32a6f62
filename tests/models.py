"""Real model versions for tests: scikit-learn models trained on breast_cancer and registered in MLflow."""

from __future__ import annotations

from airflow_mlops.core.tracking import MlflowTarget


def register_versions(
    tracking_uri: str,
    name: str,
    params: list[dict],
    experiment: str | None = None,
    auth: tuple[str, str] | None = None,
) -> list[str]:
    """Train one LogisticRegression on breast_cancer per ``params`` and register each as a version of ``name``.

    :param tracking_uri: the MLflow store.
    :param name: registered model name.
    :param params: constructor parameters of each version's LogisticRegression.
    :param experiment: experiment of the runs (default: one named after the model).
    :param auth: (username, password) for a basic-auth server.
    :return: the version numbers, in order.
    """
    from sklearn.datasets import load_breast_cancer

    from airflow_mlops.core.model_logging import DatasetInfo, ensure_experiment, log_model_run
    from airflow_mlops.core.training import Candidate, train_model

    frame = load_breast_cancer(as_frame=True).frame
    versions = []
    username, password = auth or (None, None)
    with MlflowTarget(tracking_uri, username=username, password=password).activate():
        eid = ensure_experiment(experiment or f"tests-{name}")
        for p in params:
            outcome = train_model(
                frame,
                "target",
                [Candidate("sklearn.linear_model.LogisticRegression", {"max_iter": 500, **p})],
            )
            info = log_model_run(
                outcome,
                model_name=name,
                experiment_id=eid,
                dataset=DatasetInfo(frame, "/data/breast_cancer.csv"),
            )
            versions.append(info["version"])
    return versions

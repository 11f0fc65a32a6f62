"""Logging a trained model to MLflow with its lineage, and registering a model version."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_mlops.core import skops_trust
from airflow_mlops.core.lineage import frame_digest
from airflow_mlops.core.redact import redact

if TYPE_CHECKING:
    import pandas as pd

    from airflow_mlops.core.training import TrainOutcome

MODEL_ARTIFACT = "model"
REFERENCE_SAMPLE_ARTIFACT = "reference/train_sample.parquet"
SERIALIZATIONS = ("cloudpickle", "skops")


@dataclass
class DatasetInfo:
    """Where the training data came from.

    :param frame: the training data as read.
    :param source: a URI or path naming where it came from.
    :param name: a short name.
    :param tags: extra lineage tags (e.g. the DVC revision and hash).
    """

    frame: pd.DataFrame
    source: str
    name: str = "training"
    tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_path(cls, path: str | os.PathLike[str]) -> DatasetInfo:
        """Read a CSV/Parquet file or folder (see :func:`airflow_mlops.core.data.read_table`).

        :param path: the file or folder.
        """
        from airflow_mlops.core.data import read_table

        return cls(read_table(path), redact(path), name=str(path).rstrip("/").rsplit("/", 1)[-1])

    @classmethod
    def from_dvc(cls, repo: str, path: str, rev: str | None = None, remote: str | None = None) -> DatasetInfo:
        """Read a DVC-tracked file at a revision, with its lineage as tags (credentials masked).

        :param repo: the repository (local path or git URL).
        :param path: the tracked file inside it.
        :param rev: git revision (default: HEAD).
        :param remote: DVC remote to read from (default: the repository's).
        """
        from airflow_mlops.core.dvc_data import read_dvc_frame

        frame, lineage = read_dvc_frame(repo, path, rev, remote)
        return cls.from_dvc_frame(frame, lineage)

    @classmethod
    def from_dvc_frame(cls, frame: pd.DataFrame, lineage: dict[str, Any]) -> DatasetInfo:
        """A DVC-read frame with its lineage (what ``read_dvc_frame`` returns) as a dataset.

        :param frame: the data.
        :param lineage: ``repo``, ``path``, ``rev``, ``commit`` and ``md5``.
        """
        repo = redact(lineage["repo"])
        tags = {
            "mlops.dvc.repo": repo,
            "mlops.dvc.path": lineage["path"],
            "mlops.dvc.rev": lineage["rev"],
            "mlops.dvc.commit": lineage["commit"],
            "mlops.dvc.md5": lineage["md5"],
        }
        source = f"dvc://{repo}::{lineage['path']}@{lineage['commit']}"
        return cls(frame, source, name=lineage["path"], tags=tags)


def ensure_experiment(name: str, artifact_location: str | None = None) -> str:
    """Return the id of experiment ``name``, creating it (with ``artifact_location``) if needed."""
    import mlflow

    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    return mlflow.create_experiment(name, artifact_location=artifact_location)


def log_model_run(
    outcome: TrainOutcome,
    *,
    model_name: str,
    experiment_id: str,
    dataset: DatasetInfo,
    tags: dict[str, str] | None = None,
    params: dict[str, Any] | None = None,
    serialization: str = "cloudpickle",
    sample_rows: int = 5000,
    run_name: str | None = None,
    extra_artifacts: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Log a training outcome as one MLflow run and register it as a version of ``model_name``.

    Must be called with MLflow pointed at the right store (see ``MlflowTarget.activate``). The run
    ends FAILED if anything raises inside it.

    :param outcome: what :func:`airflow_mlops.core.training.train_model` returned.
    :param model_name: registered model name.
    :param experiment_id: experiment of the run.
    :param dataset: the training data and its lineage.
    :param tags: tags for the run and the model version (lineage, Airflow ids).
    :param params: parameters to log besides the estimator's.
    :param serialization: ``cloudpickle`` or ``skops``.
    :param sample_rows: rows of training features logged as the drift reference sample.
    :param run_name: name of the run.
    :param extra_artifacts: ``{artifact_path: json-able dict}`` logged as JSON files.
    :return: ``model_name``, ``version``, ``run_id``, ``model_id`` (the MLflow 3 LoggedModel), ``model_uri``,
        ``metrics`` and more facts.
    """
    import mlflow
    import sklearn
    from mlflow.data.pandas_dataset import from_pandas
    from mlflow.models import infer_signature

    import airflow_mlops.core.dvc_source  # noqa: F401 - registers the dvc:// dataset source

    # Checked before the run starts: a model that cannot be loaded back changes nothing.
    skops_types = _skops_trusted(outcome.model) if serialization == "skops" else None
    digest = frame_digest(dataset.frame)
    source = redact(dataset.source)
    # Tag values may quote URLs (a DVC repo, a data path): none keeps its credentials.
    tags = {
        k: redact(v)
        for k, v in {
            **(tags or {}),
            "mlops.dataset.digest": digest,
            "mlops.dataset.source": source,
            **dataset.tags,
        }.items()
    }
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags) as run:
        mlflow.log_params(
            {
                "estimator": outcome.candidate.estimator,
                "task": outcome.task,
                "target": outcome.target,
                "n_features": len(outcome.features),
                "n_train_rows": len(outcome.X_train),
                "n_test_rows": len(outcome.X_test),
                "selection_metric": outcome.selection_metric,
                **{f"estimator.{k}": v for k, v in outcome.candidate.params.items()},
                **(params or {}),
            }
        )
        ds = from_pandas(  # a plain path or a dvc:// source (see core.dvc_source)
            dataset.frame, source=source, name=redact(dataset.name), targets=outcome.target
        )
        mlflow.log_input(ds, context="training")
        with tempfile.TemporaryDirectory() as tmp:
            sample = outcome.X_train.sample(min(sample_rows, len(outcome.X_train)), random_state=0)
            sample_path = Path(tmp) / Path(REFERENCE_SAMPLE_ARTIFACT).name
            sample.to_parquet(sample_path, index=False)
            mlflow.log_artifact(str(sample_path), artifact_path=str(Path(REFERENCE_SAMPLE_ARTIFACT).parent))
        # The DriftSensor's reference: a compact profile of every training row, not just the sample.
        from airflow_mlops.core.drift.profile import PROFILE_ARTIFACT, build_profile

        mlflow.log_dict(build_profile(outcome.X_train), PROFILE_ARTIFACT)
        if outcome.candidate_scores:
            mlflow.log_dict({"candidates": outcome.candidate_scores}, "model_selection.json")
        for path, payload in (extra_artifacts or {}).items():
            mlflow.log_dict(payload, path)
        example = outcome.X_train.head(5)
        signature = infer_signature(example, outcome.model.predict(example))
        info = mlflow.sklearn.log_model(
            outcome.model,
            name=MODEL_ARTIFACT,
            serialization_format=serialization,
            signature=signature,
            input_example=example,
            # Pinning what the model needs skips MLflow's slow requirement inference in a subprocess.
            pip_requirements=[
                f"scikit-learn=={sklearn.__version__}",
                f"mlflow=={mlflow.__version__}",
                "pandas",
            ],
            skops_trusted_types=skops_types,
        )
        # MLflow 3: the test metrics belong to the LoggedModel (model_id) and to the dataset's digest, so
        # gates compare the models themselves; they are the run's metrics too.
        mlflow.log_metrics(outcome.metrics, model_id=info.model_id, dataset=ds)
        client = mlflow.MlflowClient()
        try:
            client.create_registered_model(model_name)
        except mlflow.exceptions.MlflowException as e:
            if "RESOURCE_ALREADY_EXISTS" not in str(e.error_code):
                raise
        mv = client.create_model_version(
            model_name,
            source=info.model_uri,
            run_id=run.info.run_id,
            model_id=info.model_id,
            tags={k: str(v) for k, v in tags.items()},
            description=f"Trained by {outcome.candidate.estimator} on {source}",
        )
        mlflow.set_tag("mlops.registered_version", f"{model_name}/{mv.version}")
    return {
        "model_name": model_name,
        "version": str(mv.version),
        "run_id": run.info.run_id,
        "model_id": info.model_id,
        "experiment_id": experiment_id,
        "model_uri": f"models:/{model_name}/{mv.version}",
        "artifact_uri": info.model_uri,
        "metrics": outcome.metrics,
        "task": outcome.task,
        "features": outcome.features,
        "estimator": outcome.candidate.estimator,
        "dataset_digest": digest,
        "dataset_source": source,
    }


def _skops_trusted(model: Any) -> list[str]:
    """The types skops needs trusted to load this model back, each checked against the fixed allow-list
    (:mod:`airflow_mlops.core.skops_trust`): a model the gateway would refuse is refused here already."""
    import skops.io as sio

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.skops"
        sio.dump(model, path)
        return skops_trust.trusted_types(path, f"The trained {type(model).__name__}")

"""TrainOperator: train a scikit-learn model with full lineage and register a model version."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_mlops.core.errors import MlopsInputError
from airflow_mlops.hooks.mlflow import MlflowHook
from airflow_mlops.links.mlflow import (
    XCOM_MODEL_VERSION_URL,
    XCOM_RUN_URL,
    MlflowModelVersionLink,
    MlflowRunLink,
)

if TYPE_CHECKING:
    import pandas as pd
    from airflow.sdk import Context

# Tags that identify the Airflow task instance a run belongs to (used to make retries idempotent).
AIRFLOW_TAGS = (
    "mlops.airflow.dag_id",
    "mlops.airflow.run_id",
    "mlops.airflow.task_id",
    "mlops.airflow.map_index",
)


class TrainOperator(BaseOperator):
    """Train a scikit-learn model, log it to MLflow with its lineage, and register a model version.

    Data comes from a CSV/Parquet ``data`` path or a DVC-tracked ``dvc_path`` at ``dvc_rev``. Numeric
    imputation/scaling and one-hot encoding live in one Pipeline with the estimator, so the logged model
    takes raw feature columns. A retry of the same task instance reuses the finished run and its version.

    Returns (XCom) ``model_name``, ``version``, ``run_id``, ``model_uri``, ``metrics`` and more; each
    Asset in ``outlets`` gets an event whose extra holds the same facts.

    :param registered_model_name: registered model to add a version to.
    :param target: target column.
    :param data: CSV/Parquet file or folder (give this or ``dvc_path``).
    :param dvc_path: path of a DVC-tracked file inside the ``dvc_conn_id`` repository.
    :param dvc_rev: git revision of ``dvc_path`` (default: the connection's, else HEAD).
    :param features: feature columns (default: every column but the target).
    :param estimator: import path of the estimator class (default: a random forest for the task).
    :param estimator_params: constructor parameters of ``estimator``.
    :param candidates: several ``{"estimator": ..., "params": ...}`` to choose from on a validation split.
    :param selection_metric: metric used to choose among candidates (default f1 / rmse).
    :param task: ``classification`` or ``regression`` (detected when None).
    :param test_size: share of rows held out for testing (stratified for classification).
    :param random_state: seed of the splits.
    :param holdout: CSV/Parquet file used as the test set instead of a split.
    :param experiment_name: MLflow experiment (default: the registered model name).
    :param serialization: ``cloudpickle`` or ``skops``.
    :param reference_sample_rows: rows of training features logged for drift reference.
    :param extra_tags: more tags for the run and the version.
    :param allow_perfect_predictors: features allowed to predict the target perfectly on their own (by
        default such a feature is refused as a leak of the target).
    :param mlflow_conn_id: MLflow connection.
    :param dvc_conn_id: DVC connection.
    """

    template_fields: Sequence[str] = (
        "registered_model_name",
        "target",
        "data",
        "dvc_path",
        "dvc_rev",
        "features",
        "estimator",
        "estimator_params",
        "candidates",
        "selection_metric",
        "task",
        "holdout",
        "experiment_name",
        "extra_tags",
        "allow_perfect_predictors",
    )
    template_fields_renderers = {"estimator_params": "json", "candidates": "json", "extra_tags": "json"}
    operator_extra_links = (MlflowRunLink(), MlflowModelVersionLink())
    ui_color = "#cce5ff"

    def __init__(
        self,
        *,
        registered_model_name: str,
        target: str,
        data: str | None = None,
        dvc_path: str | None = None,
        dvc_rev: str | None = None,
        features: list[str] | None = None,
        estimator: str | None = None,
        estimator_params: dict[str, Any] | None = None,
        candidates: list[dict[str, Any]] | None = None,
        selection_metric: str | None = None,
        task: str | None = None,
        test_size: float = 0.2,
        random_state: int = 42,
        holdout: str | None = None,
        experiment_name: str | None = None,
        serialization: str = "cloudpickle",
        reference_sample_rows: int = 5000,
        extra_tags: dict[str, str] | None = None,
        allow_perfect_predictors: list[str] | None = None,
        mlflow_conn_id: str = MlflowHook.default_conn_name,
        dvc_conn_id: str = "dvc_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if data is None and dvc_path is None:
            raise MlopsInputError("Give `data` (a file or folder) or `dvc_path` (a DVC-tracked file).")
        if serialization not in ("cloudpickle", "skops"):
            raise MlopsInputError(f"serialization={serialization!r}: use 'cloudpickle' or 'skops'.")
        self.registered_model_name = registered_model_name
        self.target = target
        self.data = data
        self.dvc_path = dvc_path
        self.dvc_rev = dvc_rev
        self.features = features
        self.estimator = estimator
        self.estimator_params = estimator_params
        self.candidates = candidates
        self.selection_metric = selection_metric
        self.task = task
        self.test_size = test_size
        self.random_state = random_state
        self.holdout = holdout
        self.experiment_name = experiment_name
        self.serialization = serialization
        self.reference_sample_rows = reference_sample_rows
        self.extra_tags = extra_tags
        self.allow_perfect_predictors = allow_perfect_predictors
        self.mlflow_conn_id = mlflow_conn_id
        self.dvc_conn_id = dvc_conn_id

    @cached_property
    def hook(self) -> MlflowHook:
        """The MLflow hook."""
        return MlflowHook(self.mlflow_conn_id)

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.errors_airflow import airflow_errors

        # Bad input fails at once (no retry reads better input); every message is redacted.
        with airflow_errors():
            return self._train(context)

    def _train(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.core.errors import MlopsInputError
        from airflow_mlops.core.lineage import git_commit
        from airflow_mlops.core.training import train_and_register
        from airflow_mlops.errors_airflow import mask_secrets

        # Checked again after rendering: templates may have turned either argument into None.
        if bool(self.data) == bool(self.dvc_path):
            raise MlopsInputError("Give exactly one of `data` and `dvc_path`: they name the training data.")
        if self.estimator and self.candidates:
            raise MlopsInputError("Give `estimator` or `candidates`, not both.")
        if self.estimator_params is not None and not isinstance(self.estimator_params, dict):
            raise MlopsInputError(
                f"`estimator_params` must be a mapping, not {type(self.estimator_params).__name__} "
                f"{self.estimator_params!r} (with Jinja, set render_template_as_native_obj=True on the DAG)."
            )
        if self.candidates is not None and not isinstance(self.candidates, (list, tuple)):
            raise MlopsInputError(
                f"`candidates` must be a list of {{'estimator': ..., 'params': ...}}, not "
                f"{type(self.candidates).__name__} (with Jinja, set render_template_as_native_obj=True)."
            )
        target = self.hook.target
        # Credentials inside URLs never reach the task log.
        mask_secrets(target.tracking_uri, getattr(target, "password", None), getattr(target, "token", None))
        if self.dvc_path:
            from airflow_mlops.hooks.dvc import DvcHook

            mask_secrets(DvcHook(self.dvc_conn_id).repo)
        ids = self._airflow_ids(context)
        if self.candidates:
            cands: list[Any] = list(self.candidates)
        elif self.estimator:
            cands = [{"estimator": self.estimator, "params": dict(self.estimator_params or {})}]
        else:
            cands = []
        tags = {**ids, **(self.extra_tags or {})}
        code = git_commit(context["dag"].fileloc) if context.get("dag") is not None else None
        if code:
            tags.update({"mlops.git.sha": code["sha"], "mlops.git.dirty": code["dirty"]})
        result = train_and_register(
            target,
            self.registered_model_name,
            self.target,
            self._load_dataset,
            cands,
            features=self.features,
            task=self.task,
            test_size=self.test_size,
            random_state=self.random_state,
            holdout=self._load_holdout,
            selection_metric=self.selection_metric,
            allow_perfect_predictors=self.allow_perfect_predictors,
            experiment_name=self.experiment_name,
            serialization=self.serialization,
            sample_rows=self.reference_sample_rows,
            tags=tags,
            run_name=f"{ids['mlops.airflow.dag_id']}.{ids['mlops.airflow.task_id']}",
            reuse_tags={k: ids[k] for k in AIRFLOW_TAGS},
        )
        if result.get("reused"):
            self.log.info(
                "Task instance already trained run %s (version %s): reusing it.",
                result["run_id"],
                result["version"],
            )
        else:
            self.log.info("Trained %s: %s", result["estimator"], _fmt(result["metrics"]))
            self.log.info(
                "Registered %s version %s (run %s)", result["model_name"], result["version"], result["run_id"]
            )
        return self._publish(context, result)

    def _airflow_ids(self, context: Context) -> dict[str, str]:
        ti = context["ti"]
        return {
            "mlops.airflow.dag_id": ti.dag_id,
            "mlops.airflow.run_id": ti.run_id,
            "mlops.airflow.task_id": ti.task_id,
            "mlops.airflow.map_index": str(getattr(ti, "map_index", -1)),
            "mlops.airflow.try_number": str(getattr(ti, "try_number", 1)),
        }

    def _load_dataset(self) -> Any:
        from airflow_mlops.core.model_logging import DatasetInfo

        if self.dvc_path:
            from airflow_mlops.hooks.dvc import DvcHook

            frame, lineage = DvcHook(self.dvc_conn_id).read_dataframe(self.dvc_path, self.dvc_rev)
            return DatasetInfo.from_dvc_frame(frame, lineage)
        return DatasetInfo.from_path(self.data)  # type: ignore[arg-type]

    def _load_holdout(self) -> pd.DataFrame | None:
        from airflow_mlops.core.data import read_table

        return read_table(self.holdout) if self.holdout else None

    def _publish(self, context: Context, result: dict[str, Any]) -> dict[str, Any]:
        # Pushed even when empty (no UI for a local store), so the link never looks up a missing XCom.
        from airflow_mlops.core.redact import redact
        from airflow_mlops.links.base import push_link

        url = redact(self.hook.target.run_url(result["experiment_id"], result["run_id"]) or "")
        context["ti"].xcom_push(key=XCOM_RUN_URL, value=url)
        push_link(
            XCOM_MODEL_VERSION_URL,
            self.hook.target.model_version_url(result["model_name"], result["version"]),
            context,
        )
        for outlet in self.outlets or []:
            if outlet.__class__.__name__ == "Asset":
                context["outlet_events"][outlet].extra = {k: v for k, v in result.items() if k != "features"}
        return result


def _fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))

"""DriftSensor: wait for data drift between a reference and current data; success triggers retraining."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue, conf
from airflow.sdk.exceptions import AirflowException, AirflowSensorTimeout, AirflowSkipException

from airflow_mlops.core.errors import MlopsInputError, MlopsServiceError
from airflow_mlops.triggers.drift import DriftTrigger, evaluate_drift

if TYPE_CHECKING:
    from airflow.sdk import Context

_REPORT_WHEN = ("on_drift", "always", "never")


class DriftSensor(BaseSensorOperator):
    """Succeed when the current data drifted from the reference; keep poking while it has not.

    Each check compares the current data with the reference column by column (Evidently 0.7's default
    test per column unless overridden; see :mod:`airflow_mlops.core.drift`) and applies the dataset
    rule (share of drifted columns >= ``drift_share``). On drift the task succeeds with the report
    summary as XCom, and each Asset in ``outlets`` gets an event whose extra is that summary, so a
    retraining DAG scheduled on the Asset starts by itself. Without drift it pokes again until
    ``timeout``; with ``soft_fail=True`` the timeout skips the downstream retraining instead of failing.

    Current data: exactly one of ``current_path`` (CSV/Parquet file or folder, read in chunks),
    ``current_dvc_path`` (+ ``current_dvc_rev``), or ``prediction_log_dir`` (the gateway's log; the
    last ``window`` before ``window_end``). An empty window keeps the sensor poking.
    Reference: ``reference_path`` (raw data, or a ``.json`` profile), or ``model_name`` with
    ``model_version`` or ``model_alias`` (the profile logged with that version's training run).

    :param model_name: registered model (reference lookup, prediction-log folder, metric label).
    :param model_version: reference version (wins over ``model_alias``).
    :param model_alias: reference alias when no version is given.
    :param reference_path: raw reference data or a profile JSON, instead of MLflow.
    :param current_path: current data file or folder.
    :param current_dvc_path: current data path in the DVC repository of ``dvc_conn_id``.
    :param current_dvc_rev: its git revision (default: the connection's).
    :param prediction_log_dir: the gateway's ``--log-dir``.
    :param window: prediction-log window (seconds or a timedelta).
    :param window_end: end of the window (ISO time, templated; default: now).
    :param columns: columns to test (default: every reference column).
    :param drift_share: dataset rule.
    :param method: test for every column; ``num_method``/``cat_method`` per kind;
        ``per_column_method`` per column (``ks``, ``wasserstein``, ``psi``, ``jensenshannon``,
        ``chisquare``, ``z``).
    :param threshold: threshold for every column; ``num_threshold``, ``cat_threshold``,
        ``per_column_threshold`` likewise.
    :param fdr: Benjamini-Hochberg control of the false-discovery rate over the p-value tests.
    :param on_schema_mismatch: ``fail`` (missing or retyped columns fail the task) or ``drift`` (they
        count as drifted columns).
    :param chunk_rows: rows read at a time.
    :param pushgateway_conn_id: push ``mlops_drift_*`` gauges there on every check (None: no push).
    :param mlflow_report: log the JSON and HTML report to MLflow ``on_drift``, ``always`` or ``never``.
    :param report_experiment: MLflow experiment of the report runs.
    :param mlflow_conn_id: MLflow connection.
    :param dvc_conn_id: DVC connection.
    :param deferrable: wait in the triggerer; default from ``[operators] default_deferrable``.
    """

    template_fields: Sequence[str] = (
        "model_name", "model_version", "model_alias", "reference_path", "current_path",
        "current_dvc_path", "current_dvc_rev", "prediction_log_dir", "window", "window_end", "columns",
        "pushgateway_conn_id", "mlflow_report",
    )  # fmt: skip
    ui_color = "#e8f4fd"

    def __init__(
        self,
        *,
        model_name: str | None = None,
        model_version: str | int | None = None,
        model_alias: str = "champion",
        reference_path: str | None = None,
        current_path: str | None = None,
        current_dvc_path: str | None = None,
        current_dvc_rev: str | None = None,
        prediction_log_dir: str | None = None,
        window: float | timedelta = 3600.0,
        window_end: str | None = None,
        columns: list[str] | None = None,
        drift_share: float = 0.5,
        method: str | None = None,
        num_method: str | None = None,
        cat_method: str | None = None,
        per_column_method: dict[str, str] | None = None,
        threshold: float | None = None,
        num_threshold: float | None = None,
        cat_threshold: float | None = None,
        per_column_threshold: dict[str, float] | None = None,
        fdr: bool = False,
        on_schema_mismatch: str = "fail",
        chunk_rows: int = 250_000,
        pushgateway_conn_id: str | None = None,
        mlflow_report: str = "on_drift",
        report_experiment: str = "mlops-drift",
        mlflow_conn_id: str = "mlflow_default",
        dvc_conn_id: str = "dvc_default",
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.model_version = model_version
        self.model_alias = model_alias
        self.reference_path = reference_path
        self.current_path = current_path
        self.current_dvc_path = current_dvc_path
        self.current_dvc_rev = current_dvc_rev
        self.prediction_log_dir = prediction_log_dir
        self.window = window.total_seconds() if isinstance(window, timedelta) else window
        self.window_end = window_end
        self.columns = columns
        self.config = {
            "drift_share": drift_share, "method": method, "num_method": num_method, "cat_method": cat_method,
            "per_column_method": dict(per_column_method or {}), "threshold": threshold,
            "num_threshold": num_threshold, "cat_threshold": cat_threshold,
            "per_column_threshold": dict(per_column_threshold or {}), "fdr": fdr,
            "on_schema_mismatch": on_schema_mismatch,
        }  # fmt: skip
        self.chunk_rows = chunk_rows
        self.pushgateway_conn_id = pushgateway_conn_id
        self.mlflow_report = mlflow_report
        self.report_experiment = report_experiment
        self.mlflow_conn_id = mlflow_conn_id
        self.dvc_conn_id = dvc_conn_id
        self.deferrable = deferrable

    def spec(self) -> dict[str, Any]:
        """The JSON-able evaluation spec that poke and the trigger both run (checked once rendered)."""
        sources = [s for s in (self.current_path, self.current_dvc_path, self.prediction_log_dir) if s]
        if len(sources) != 1:
            raise MlopsInputError(
                "DriftSensor needs exactly one current source: current_path, current_dvc_path or "
                f"prediction_log_dir (got {len(sources)})."
            )
        if not self.reference_path and not self.model_name:
            raise MlopsInputError(
                "DriftSensor needs a reference: reference_path, or model_name (+ version/alias)."
            )
        if self.mlflow_report not in _REPORT_WHEN:
            raise MlopsInputError(
                f"mlflow_report={self.mlflow_report!r} is unknown: use one of {_REPORT_WHEN}."
            )
        if self.reference_path:
            reference: dict[str, Any] = {"path": self.reference_path}
        else:
            reference = {"model_name": self.model_name, "alias": self.model_alias}
            if self.model_version not in (None, ""):
                reference["version"] = str(self.model_version)
        if self.current_path:
            current: dict[str, Any] = {"path": self.current_path}
        elif self.current_dvc_path:
            current = {"dvc_path": self.current_dvc_path, "rev": self.current_dvc_rev}
        else:
            current = {
                "prediction_log": self.prediction_log_dir,
                "window_seconds": float(self.window),
                "window_end": self.window_end,
            }
        columns = list(self.columns) if self.columns else None
        return {
            "reference": reference,
            "current": current,
            "model_name": self.model_name,
            "config": {**self.config, "columns": columns},
            "chunk_rows": self.chunk_rows,
            "pushgateway_conn_id": self.pushgateway_conn_id,
            "mlflow_report": self.mlflow_report,
            "report_experiment": self.report_experiment,
            "mlflow_conn_id": self.mlflow_conn_id,
            "dvc_conn_id": self.dvc_conn_id,
        }

    def _emit(self, context: Context, summary: dict[str, Any]) -> dict[str, Any]:
        """Attach the summary to every outlet Asset's event."""
        from airflow.sdk import Asset

        for outlet in self.outlets or []:
            if isinstance(outlet, Asset):
                context["outlet_events"][outlet].extra = summary
        return summary

    def poke(self, context: Context) -> bool | PokeReturnValue:
        """Check once: done (with the summary) on drift, False otherwise."""
        summary = evaluate_drift(self.spec(), self.log)
        if not summary.get("drift_detected"):
            return False
        return PokeReturnValue(is_done=True, xcom_value=self._emit(context, summary))

    def execute(self, context: Context) -> Any:
        """Poke in a loop, or (deferrable) hand the checks to :class:`DriftTrigger`."""
        if not self.deferrable:
            return super().execute(context)
        from airflow_mlops.core.drift import DriftConfig

        spec = self.spec()
        DriftConfig(**spec["config"])  # bad settings fail here, before any deferral
        self.defer(
            trigger=DriftTrigger(
                spec=spec, end_time=time.time() + self.timeout, poll_interval=self.poke_interval
            ),
            method_name="execute_complete",
            # A margin past end_time, so the trigger's own timeout event normally comes first.
            timeout=timedelta(seconds=self.timeout + max(60.0, self.poke_interval * 2)),
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Finish from the trigger's event: the summary on drift; a timeout fails, or skips with soft_fail."""
        if not isinstance(event, dict) or "status" not in event:
            raise AirflowException(f"The drift trigger sent an unexpected event: {event!r}.")
        status = event["status"]
        if status == "error":
            message = event.get("message", "drift check failed")
            if event.get("error_type") == "input":
                raise MlopsInputError(message)
            if event.get("error_type") == "service":
                raise MlopsServiceError(message)
            raise AirflowException(message)
        summary = event.get("summary") or {}
        if status == "drift":
            from airflow_mlops.core.drift.report import summary_table

            if "columns" in summary:
                self.log.info("Drift detected:\n%s", summary_table(summary))
            return self._emit(context, summary)
        if status == "timeout":
            message = f"No drift within {self.timeout}s (last check: {summary.get('status')})."
            if self.soft_fail:
                raise AirflowSkipException(message)
            raise AirflowSensorTimeout(message)
        raise AirflowException(f"The drift trigger sent an unknown status {status!r}.")

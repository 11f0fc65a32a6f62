"""DriftSensor: wait for data drift between a reference and current data; success triggers retraining."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import PokeReturnValue, conf
from airflow.sdk.exceptions import AirflowException

from airflow_mlops.core.errors import MlopsInputError
from airflow_mlops.links.drift import DriftReportLink
from airflow_mlops.links.mlflow import MlflowModelVersionLink
from airflow_mlops.sensors.base import MlopsSensor, raise_event_error

if TYPE_CHECKING:
    from airflow.sdk import Context


class DriftSensor(MlopsSensor):
    """Succeed when the current data drifted from the reference; keep poking while it has not.

    Each check compares the current data with the reference column by column (Evidently 0.7's default
    test per column unless overridden; see :mod:`airflow_mlops.core.drift`) and applies the dataset
    rule (share of drifted columns >= ``drift_share``). On drift the task succeeds with the report
    summary as XCom, and each Asset in ``outlets`` gets an event whose extra is that summary, so a
    retraining DAG scheduled on the Asset starts by itself. Without drift it pokes again until
    ``timeout``; with ``soft_fail=True`` the timeout skips the downstream retraining instead of failing.
    A skip means only "no drift before the timeout": errors (MLflow unreachable, a bad profile or
    column) fail the task either way.

    Deferrable, the statistics still run in the worker: the task checks once, then the triggerer
    only watches the current data's files (listing and Parquet row counts) and wakes the task when
    new data arrived, which checks again.

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
    :param engine: ``local`` (this worker reads the data) or ``dask`` (each file of ``current_path`` or
        of the prediction-log window is summarized on the Dask cluster of ``dask_conn_id``, and the
        summaries merged here: the same verdicts).
    :param dask_conn_id: the ``dask`` connection naming the scheduler (``engine="dask"``).
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
    operator_extra_links = (DriftReportLink(), MlflowModelVersionLink())

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
        engine: str = "local",
        dask_conn_id: str = "dask_default",
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
        self.engine = engine
        self.dask_conn_id = dask_conn_id
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
            "engine": self.engine,
            "dask_conn_id": self.dask_conn_id,
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

    def _evaluate(self, spec: dict[str, Any]) -> dict[str, Any]:
        """One drift check in this process, with the connections resolved as needed."""
        from airflow_mlops.core.drift.evaluate import evaluate_drift
        from airflow_mlops.hooks.mlflow import MlflowHook

        def dvc_loader(path: str, rev: str | None) -> tuple[Any, str]:
            from airflow_mlops.hooks.dvc import DvcHook

            frame, lineage = DvcHook(self.dvc_conn_id).read_dataframe(path, rev)
            return frame, f"dvc:{path}@{lineage.get('rev', rev)}"

        push = None
        if self.pushgateway_conn_id:
            from airflow_mlops.hooks.pushgateway import PushgatewayHook

            push = PushgatewayHook(self.pushgateway_conn_id).push_drift
        if spec.get("engine") == "dask":
            from airflow_mlops.hooks.dask import DaskHook

            spec = {**spec, "dask_address": DaskHook(self.dask_conn_id).address()}
        return evaluate_drift(
            spec,
            lambda: MlflowHook(self.mlflow_conn_id).target,
            dvc_loader=dvc_loader,
            push=push,
            log=self.log,
        )

    def _links(self, context: Context, summary: dict[str, Any]) -> None:
        """Push the extra links' URLs: the report logged by this check, the reference version."""
        from airflow_mlops.hooks.mlflow import MlflowHook
        from airflow_mlops.links.publish import drift_links

        drift_links(lambda: MlflowHook(self.mlflow_conn_id).target, summary, self.model_name, context)

    def check(self, context: Context) -> bool | PokeReturnValue:
        """Check once: done (with the summary) on drift, False otherwise."""
        summary = self._evaluate(self.spec())
        self._links(context, summary)
        if not summary.get("drift_detected"):
            return False
        return PokeReturnValue(is_done=True, xcom_value=self._emit(context, summary))

    def start_deferred(self, context: Context) -> Any:
        """Check once here; without drift, wait in the triggerer for new data."""
        return self._check_then_defer(context, time.time() + self.timeout)

    def _check_then_defer(self, context: Context, end_time: float) -> Any:
        from airflow_mlops.core.drift.evaluate import source_state
        from airflow_mlops.triggers.drift import DriftTrigger

        spec = self.spec()
        state = source_state(spec)  # before reading: data arriving during the check counts as new
        summary = self._evaluate(spec)
        self._links(context, summary)
        if summary.get("drift_detected"):
            return self._emit(context, summary)
        if time.time() >= end_time:
            self.not_met(
                f"No drift within {self.timeout}s (last check: {summary.get('status')}).", timeout=True
            )
        self.defer(
            trigger=DriftTrigger(
                spec=spec, end_time=end_time, poll_interval=self.poke_interval, last_state=state
            ),
            method_name="execute_complete",
            kwargs={"end_time": end_time, "last_status": summary.get("status")},
            # A margin past end_time, so the trigger's own timeout event normally comes first.
            timeout=timedelta(seconds=max(0.0, end_time - time.time()) + max(60.0, self.poke_interval * 2)),
        )

    def execute_complete(
        self,
        context: Context,
        event: dict[str, Any] | None = None,
        end_time: float | None = None,
        last_status: str | None = None,
    ) -> dict[str, Any]:
        """Resume from the trigger's event: new data is checked here (drift: the summary; none: wait
        again until ``end_time``); a timeout skips with soft_fail, else fails; errors fail."""
        if not isinstance(event, dict) or "status" not in event:
            raise AirflowException(f"The drift trigger sent an unexpected event: {event!r}.")
        status = event["status"]
        if status == "error":
            raise_event_error(event)
        if status == "timeout":
            self.not_met(f"No drift within {self.timeout}s (last check: {last_status}).", timeout=True)
        if status != "new_data":
            raise AirflowException(f"The drift trigger sent an unknown status {status!r}.")
        return self._check_then_defer(context, float(end_time if end_time is not None else time.time()))

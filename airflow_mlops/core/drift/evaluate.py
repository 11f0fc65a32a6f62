"""One drift check, end to end: load the reference and the current data, compare, report. No Airflow.

The evaluation spec is a JSON-able mapping (the sensor builds it, the trigger carries it):

``current``: ``{"path": file-or-folder}`` | ``{"dvc_path": path, "rev": rev}`` |
``{"prediction_log": log_dir, "window_seconds": 3600, "window_end": iso-or-None}``;
``reference``: ``{"path": file-or-folder}`` (raw data, or a ``.json`` profile) |
``{"model_name": name, "version": v}`` | ``{"model_name": name, "alias": "champion"}`` (the profile logged
with the version's run); ``model_name`` (metric label, prediction-log folder); ``config`` (the
:class:`~airflow_mlops.core.drift.DriftConfig` fields); ``chunk_rows``; ``mlflow_report`` (``on_drift`` |
``always`` | ``never``) and ``report_experiment``; ``engine`` (``local``, the default, or ``dask``: the
current summaries computed on the Dask cluster at ``dask_address``, one task per file).

Whatever needs a connection is injected, as :func:`airflow_mlops.core.gate.run_gate` does: the MLflow
store (an :class:`~airflow_mlops.core.tracking.MlflowTarget`), a loader of DVC data, a pusher of gauges.
:func:`source_state` is the cheap part a triggerer may poll: a fingerprint of the current data's files
and their row count from Parquet metadata, without reading any data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_mlops.core.errors import MlopsInputError, MlopsServiceError

if TYPE_CHECKING:
    import pandas as pd

    from airflow_mlops.core.drift.current import CurrentData
    from airflow_mlops.core.drift.engine import DriftReport
    from airflow_mlops.core.tracking import MlflowTarget

REPORT_JSON = "drift/report.json"
REPORT_HTML = "drift/report.html"
REPORT_WHEN = ("on_drift", "always", "never")
ENGINE_LOCAL = "local"
ENGINE_DASK = "dask"
ENGINES = (ENGINE_LOCAL, ENGINE_DASK)

#: ``(dvc_path, rev) -> (frame, description)``: reads current data kept in DVC.
DvcLoader = Callable[[str, "str | None"], "tuple[pd.DataFrame, str]"]
#: ``(summary, model_label) -> None``: publishes the drift gauges of a check.
Pusher = Callable[[dict[str, Any], str], None]


def _need_target(target: Any, what: str) -> MlflowTarget:
    if callable(target):
        target = target()
    if target is None:
        raise MlopsInputError(f"{what} needs an MLflow store: give a tracking URI (or an MLflow connection).")
    resolved: MlflowTarget = target
    return resolved


def load_reference(spec: dict[str, Any], target: Any = None) -> tuple[Any, dict[str, Any]]:
    """The reference (a DataFrame or a profile) and facts about where it came from.

    :param spec: the evaluation spec.
    :param target: the MLflow store (or a function resolving it), for a reference given as a model
        version or alias.
    """
    from airflow_mlops.core.drift.profile import load_profile

    ref = spec.get("reference") or {}
    if ref.get("path"):
        path = str(ref["path"])
        if path.endswith(".json"):
            try:
                with open(path, encoding="utf-8") as f:
                    return load_profile(f.read()), {"reference": path}
            except FileNotFoundError as e:
                raise MlopsInputError(
                    f"Reference profile {path} does not exist: check reference_path."
                ) from e
        from airflow_mlops.core.data import read_table

        return read_table(path), {"reference": path}
    name = ref.get("model_name")
    if not name:
        raise MlopsInputError("No reference: give reference_path, or model_name with a version or alias.")
    return _model_reference(_need_target(target, f"The reference {name}"), name, ref)


def _model_reference(target: MlflowTarget, name: str, ref: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    import tempfile

    from airflow_mlops.core import registry
    from airflow_mlops.core.redact import redact
    from airflow_mlops.core.tracking import check_reachable

    check_reachable(target.tracking_uri, timeout=5)  # MLflow's own client would retry for minutes
    # Artifacts are downloaded through MLflow's artifact repositories, which read the process-wide
    # credentials: this runs in a task's own process (never in a triggerer), inside activate().
    with target.activate():
        client = target.client()
        try:
            if ref.get("version"):
                mv = client.get_model_version(name, str(ref["version"]))
            else:
                alias = ref.get("alias") or registry.CHAMPION
                found = registry.get_version_by_alias(client, name, alias)
                if found is None:
                    raise MlopsInputError(
                        f"Model {name!r} has no version with alias @{alias}: set the alias, or give "
                        "model_version."
                    )
                mv = found
        except MlopsInputError:
            raise
        except Exception as e:  # MLflow's errors, reworded with the fix
            if "RESOURCE_DOES_NOT_EXIST" in str(e) or "not found" in str(e).lower():
                raise MlopsInputError(
                    f"Model version {name} {ref.get('version') or '@' + str(ref.get('alias'))} does not "
                    f"exist in MLflow ({redact(e)}): check model_name and model_version."
                ) from e
            raise MlopsServiceError(
                f"MLflow at {redact(target.tracking_uri)} could not be asked for model {name!r} "
                f"({redact(e)}): check that the server runs and the connection is right."
            ) from e
        facts = {
            "reference": f"models:/{name}/{mv.version}",
            "model_version": str(mv.version),
            "run_id": mv.run_id,
        }
        with tempfile.TemporaryDirectory() as tmp:
            return _run_profile(client, name, mv, tmp, facts), facts


def _run_profile(client: Any, name: str, mv: Any, tmp: str, facts: dict[str, Any]) -> Any:
    from airflow_mlops.core.drift.profile import PROFILE_ARTIFACT, build_profile, load_profile

    try:
        local = client.download_artifacts(mv.run_id, PROFILE_ARTIFACT, tmp)
        return load_profile(Path(local).read_text(encoding="utf-8"))
    except MlopsInputError:
        raise
    except Exception:  # noqa: BLE001 - older runs: fall back to the logged training sample
        pass
    try:
        import pandas as pd

        from airflow_mlops.core.model_logging import REFERENCE_SAMPLE_ARTIFACT

        local = client.download_artifacts(mv.run_id, REFERENCE_SAMPLE_ARTIFACT, tmp)
        facts["note"] = "no reference profile in the run: built from its training sample"
        return build_profile(pd.read_parquet(local))
    except Exception as e:
        raise MlopsInputError(
            f"The run {mv.run_id} of {name} v{mv.version} has neither {PROFILE_ARTIFACT} nor a training "
            "sample: retrain with TrainOperator (which logs the profile) or give reference_path."
        ) from e


def _model_label(spec: dict[str, Any]) -> str | None:
    return spec.get("model_name") or (spec.get("reference") or {}).get("model_name")


def log_window(spec: dict[str, Any]) -> tuple[datetime, datetime]:
    """``[start, end)`` of a prediction-log current source (end: ``window_end`` or now)."""
    cur = spec.get("current") or {}
    end = cur.get("window_end")
    end_t = datetime.fromisoformat(end) if end else datetime.now(timezone.utc)
    seconds = float(cur.get("window_seconds") or 3600)
    if seconds <= 0:
        raise MlopsInputError(f"window={seconds}s is not positive: give a window of at least a second.")
    return end_t - timedelta(seconds=seconds), end_t


def load_current(
    spec: dict[str, Any], kinds: dict[str, str], facts: dict[str, Any], dvc_loader: DvcLoader | None = None
) -> CurrentData:
    """Summarize the current data of the spec (read in chunks), recording where it came from in ``facts``.

    :param spec: the evaluation spec.
    :param kinds: ``{column: kind}`` of the reference.
    :param facts: filled with ``current``.
    :param dvc_loader: reads a ``dvc_path`` source.
    """
    from airflow_mlops.core.drift.current import summarize_frame, summarize_path, summarize_prediction_log

    cur = spec.get("current") or {}
    chunk_rows = int(spec.get("chunk_rows") or 250_000)
    engine = spec.get("engine") or ENGINE_LOCAL
    if engine not in ENGINES:
        raise MlopsInputError(f"engine={str(engine)[:40]!r} is unknown: use one of {ENGINES}.")
    if engine == ENGINE_DASK:
        return _dask_current(spec, cur, kinds, facts, chunk_rows)
    if cur.get("path"):
        facts["current"] = str(cur["path"])
        return summarize_path(cur["path"], kinds, chunk_rows=chunk_rows)
    if cur.get("dvc_path"):
        if dvc_loader is None:
            raise MlopsInputError("Current data in DVC needs a DVC repository: give a DVC connection.")
        frame, where = dvc_loader(cur["dvc_path"], cur.get("rev"))
        facts["current"] = where
        return summarize_frame(frame, kinds)
    if cur.get("prediction_log"):
        model, start_t, end_t = _log_source(spec, cur, facts)
        return summarize_prediction_log(
            cur["prediction_log"], model, kinds, start_t, end_t, chunk_rows=chunk_rows
        )
    raise MlopsInputError("No current data: give current_path, current_dvc_path or prediction_log_dir.")


def _log_source(
    spec: dict[str, Any], cur: dict[str, Any], facts: dict[str, Any], where: str = ""
) -> tuple[str, datetime, datetime]:
    """The model folder and time window of a prediction-log source, recorded in ``facts``."""
    start_t, end_t = log_window(spec)
    model = _model_label(spec)
    if not model:
        raise MlopsInputError("Reading the prediction log needs model_name (its folder in the log).")
    facts["current"] = (
        f"prediction log {cur['prediction_log']}/{model} [{start_t.isoformat()}, {end_t.isoformat()}){where}"
    )
    return model, start_t, end_t


def _dask_current(
    spec: dict[str, Any], cur: dict[str, Any], kinds: dict[str, str], facts: dict[str, Any], chunk_rows: int
) -> CurrentData:
    """The current summaries computed on the Dask cluster of ``spec["dask_address"]``, one task per file."""
    from airflow_mlops.core.drift.distributed import dataset_files, summarize_on_dask

    address = spec.get("dask_address") or ""
    if cur.get("path"):
        facts["current"] = f"{cur['path']} (on Dask)"
        files = dataset_files(cur["path"])
        return summarize_on_dask(address, files, kinds, chunk_rows=chunk_rows)
    if cur.get("prediction_log"):
        from airflow_mlops.core.prediction_log import window_files

        model, start_t, end_t = _log_source(spec, cur, facts, " (on Dask)")
        files = window_files(cur["prediction_log"], model, start_t, end_t)
        return summarize_on_dask(address, files, kinds, chunk_rows=chunk_rows, window=(start_t, end_t))
    raise MlopsInputError(
        "engine='dask' reads current_path (a file or a partitioned folder) or prediction_log_dir; data in DVC "
        "is read on one machine: use engine='local'."
    )


def evaluate_drift(
    spec: dict[str, Any],
    target: Any = None,
    *,
    dvc_loader: DvcLoader | None = None,
    push: Pusher | None = None,
    log: Any = None,
) -> dict[str, Any]:
    """Compare the current data with the reference once; push gauges and log the report as asked.

    :param spec: the evaluation spec (see the module docstring).
    :param target: the MLflow store, or a function resolving it when first needed (a model reference,
        the report); None: neither is used.
    :param dvc_loader: reads current data kept in DVC.
    :param push: publishes the gauges of the check (None: nothing is pushed). A failing push never
        changes the verdict: it is recorded as ``push_error``.
    :param log: a logger for the readable table (optional).
    :return: the report summary plus ``status`` (``drift`` | ``no_drift`` | ``empty``), the model
        facts, and ``report_run_id`` when a report was logged to MLflow.
    """
    from airflow_mlops.core.drift import DriftConfig, EmptyCurrentDataError, detect_drift
    from airflow_mlops.core.drift.columns import CATEGORICAL, column_kind
    from airflow_mlops.core.drift.report import summary_table

    when = spec.get("mlflow_report", "on_drift")
    if when not in REPORT_WHEN:
        raise MlopsInputError(f"mlflow_report={when!r} is unknown: use one of {REPORT_WHEN}.")
    config = DriftConfig(**(spec.get("config") or {}))
    reference, facts = load_reference(spec, target)
    if isinstance(reference, dict):
        kinds = {n: c["kind"] for n, c in reference["columns"].items()}
    else:
        kinds = {c: column_kind(reference[c]) for c in (config.columns or reference.columns)}
    if config.columns is not None:
        kinds = {c: kinds.get(c, CATEGORICAL) for c in config.columns}
    current = load_current(spec, kinds, facts, dvc_loader)
    try:
        report = detect_drift(reference, current, config)
    except EmptyCurrentDataError as e:
        if log:
            log.info("No drift check: %s", e)
        return {"status": "empty", "drift_detected": False, "message": str(e), **facts}
    summary = {**report.summary(), **facts, "status": "drift" if report.drift_detected else "no_drift"}
    if log:
        log.info(
            "Drift check of %s against %s:\n%s",
            facts.get("current"),
            facts.get("reference"),
            summary_table(summary),
        )
    model_label = _model_label(spec) or "unknown"
    if push is not None:
        try:
            push(summary, model_label)
        except MlopsServiceError as e:
            # Monitoring must not block retraining: the verdict stands, the failure is loud.
            summary["push_error"] = str(e)
            if log:
                log.error("%s", e)
    if when == "always" or (when == "on_drift" and report.drift_detected):
        if target is not None:
            summary["report_run_id"] = log_report(
                _need_target(target, "The drift report"),
                report,
                summary,
                model_label,
                spec.get("report_experiment") or "mlops-drift",
            )
    return summary


def log_report(
    target: MlflowTarget, report: DriftReport, summary: dict[str, Any], model: str, experiment: str
) -> str:
    """Log the JSON and HTML report of a check as an MLflow run of ``experiment``; returns its id."""
    import mlflow

    from airflow_mlops.core.drift.report import report_html, report_json
    from airflow_mlops.core.model_logging import ensure_experiment

    context = {k: summary.get(k) for k in ("reference", "current", "model_version", "run_id")}
    with target.activate():
        eid = ensure_experiment(experiment, target.artifact_location)
        tags = {"mlops.model_name": model, "mlops.drift_detected": str(report.drift_detected).lower()}
        if summary.get("model_version"):
            tags["mlops.model_version"] = str(summary["model_version"])
        with mlflow.start_run(experiment_id=eid, run_name=f"drift-{model}", tags=tags) as run:
            mlflow.log_metrics({"drift_share": report.share_drifted, "n_drifted": report.n_drifted})
            mlflow.log_text(report_json(report, context), REPORT_JSON)
            mlflow.log_text(report_html(report, f"Data drift: {model}"), REPORT_HTML)
        return str(run.info.run_id)


def source_state(spec: dict[str, Any]) -> dict[str, Any]:
    """What the current data is made of, cheaply: a fingerprint of its files (names, sizes, modification
    times) and the rows that Parquet metadata counts, without reading any data. Two equal fingerprints
    mean the same data; a triggerer polls this, a worker computes the statistics.

    :param spec: the evaluation spec.
    :return: ``{"fingerprint": str | None, "rows": int | None, "files": int}``; ``fingerprint`` None
        when it cannot be told cheaply (data in DVC: every poll counts as new).
    """
    cur = spec.get("current") or {}
    if cur.get("path"):
        p = Path(cur["path"])
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else ([p] if p.exists() else [])
    elif cur.get("prediction_log"):
        from airflow_mlops.core.prediction_log import window_files

        model = _model_label(spec)
        if not model:
            raise MlopsInputError("Reading the prediction log needs model_name (its folder in the log).")
        start_t, end_t = log_window(spec)
        files = window_files(cur["prediction_log"], model, start_t, end_t)
    else:
        return {"fingerprint": None, "rows": None, "files": 0}
    digest = hashlib.sha256()
    rows: int | None = 0
    for f in files:
        try:
            st = f.stat()
        except FileNotFoundError:  # rotated away since the listing
            continue
        digest.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        if f.suffix.lower() == ".parquet":
            rows = None if rows is None else rows + _parquet_rows(f)
        else:
            rows = None  # CSV: no row count without reading the file
    return {"fingerprint": digest.hexdigest(), "rows": rows, "files": len(files)}


def _parquet_rows(path: Path) -> int:
    """Rows of a Parquet file from its footer (a file still being written counts as empty)."""
    import pyarrow.parquet as pq

    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except Exception:  # noqa: BLE001 - half-written or foreign file: nothing to count yet
        return 0


def has_new_data(state: dict[str, Any], last: dict[str, Any] | None) -> bool:
    """Whether the current data changed since ``last`` and has rows to test.

    :param state: :func:`source_state` now.
    :param last: :func:`source_state` at the last check (None: never checked).
    """
    if state.get("fingerprint") is None:
        return True
    if last is not None and state["fingerprint"] == last.get("fingerprint"):
        return False
    return state.get("rows") is None or state["rows"] > 0

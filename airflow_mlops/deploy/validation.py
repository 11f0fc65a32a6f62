"""Infra validation: before any traffic reaches a model version, prove in a throwaway gateway that it
loads, predicts its own logged input example, and answers within a latency budget."""

from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_mlops.core.errors import MlopsInputError, MlopsServiceError
from airflow_mlops.deploy.plan import alone
from airflow_mlops.serving.client import GatewayClient

if TYPE_CHECKING:
    from airflow_mlops.deploy.backends import GatewayBackend, GatewaySpec


class InfraValidationError(MlopsServiceError):
    """The version failed infra validation: it must not serve. Nothing was changed."""


@dataclass
class ValidationReport:
    """What infra validation measured.

    :param version: the model version.
    :param requests: predict calls made (after one warm-up call).
    :param rows: rows in the input example.
    :param p50_ms: median latency.
    :param p95_ms: 95th percentile latency.
    :param budget_ms: the p95 budget.
    :param load_seconds: time for the throwaway gateway to start and load the model.
    """

    version: str
    requests: int
    rows: int
    p50_ms: float
    p95_ms: float
    budget_ms: float
    load_seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON form (for XCom and tags)."""
        return asdict(self)


def percentile(values: list[float], q: float) -> float:
    """The ``q`` percentile (0-100) by the nearest-rank method."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def input_example_records(model_name: str, version: str) -> list[dict[str, Any]]:
    """The input example logged with ``models:/model_name/version``, as a list of records.

    Must run with MLflow pointed at the registry (``MlflowTarget.activate``).

    :raises MlopsInputError: the version has no input example, or not a tabular one.
    """
    import mlflow
    from mlflow.artifacts import download_artifacts

    uri = f"models:/{model_name}/{version}"
    info = mlflow.models.get_model_info(uri)
    example = info.saved_input_example_info
    if not example or not example.get("artifact_path"):
        raise MlopsInputError(
            f"{uri} was logged without an input example, which infra validation predicts: log the model "
            "with input_example=... (TrainOperator does), or deploy with validate=False."
        )
    with tempfile.TemporaryDirectory() as tmp:
        path = download_artifacts(artifact_uri=f"{uri}/{example['artifact_path']}", dst_path=tmp)
        raw = json.loads(Path(path).read_text())
    if example.get("type") != "dataframe":
        raise MlopsInputError(
            f"{uri} has a {example.get('type')!r} input example; the gateway serves tabular records: log a "
            "pandas DataFrame as the input example."
        )
    if isinstance(raw, dict) and "columns" in raw and "data" in raw:  # pandas "split" orient
        return [dict(zip(raw["columns"], row, strict=True)) for row in raw["data"]]
    if isinstance(raw, list) and all(isinstance(r, dict) for r in raw):  # "records" orient
        return raw
    raise MlopsInputError(f"The input example of {uri} is not in a known layout: re-log the model.")


def validate_version(
    backend: GatewayBackend,
    spec: GatewaySpec,
    version: str,
    records: list[dict[str, Any]],
    *,
    latency_budget_ms: float = 500.0,
    requests: int = 20,
    ready_timeout: float = 180.0,
) -> ValidationReport:
    """Start a throwaway gateway serving only ``version``, predict ``records``, measure, stop it.

    :param backend: where to run the throwaway gateway (the same kind as the real one).
    :param spec: the gateway spec (its ``config`` is replaced by a single route to ``version``; its
        ``port`` is ignored: a free one is used).
    :param version: the model version to validate.
    :param records: the input example, one record per row.
    :param latency_budget_ms: the p95 latency budget of one predict call with the whole example.
    :param requests: measured predict calls.
    :param ready_timeout: seconds for the gateway to start and load the model.
    :raises InfraValidationError: it did not load, predicted wrongly shaped output, or was too slow.
    """
    from dataclasses import replace

    if requests < 1 or latency_budget_ms <= 0:
        raise MlopsInputError("Infra validation needs requests >= 1 and a positive latency budget (ms).")
    model_name = spec.config.model_name
    probe = replace(
        spec,
        config=alone(model_name, version),
        port=None,
        name=f"{spec.name}-validate",
        log_dir=spec.workdir / "validation-predictions",  # keeps probe rows out of the drift window
        labels={**spec.labels, "org.airflow-mlops.role": "validation"},
    )
    started = time.monotonic()
    try:
        handle = backend.start(probe, ready_timeout=ready_timeout)
    except MlopsServiceError as e:
        raise InfraValidationError(
            f"{model_name} version {version} failed infra validation: the gateway did not load it. {e}"
        ) from None
    load_seconds = time.monotonic() - started
    api = GatewayClient(handle["endpoint"], probe.admin_token, timeout=30)  # one pooled connection
    try:
        try:
            first = api.predict(records)  # warm-up: first-call costs are not the steady latency
        except MlopsServiceError as e:
            raise InfraValidationError(
                f"{model_name} version {version} failed infra validation: predicting its logged input "
                f"example failed: {e}"
            ) from None
        preds = first.get("predictions")
        if not isinstance(preds, list) or len(preds) != len(records):
            raise InfraValidationError(
                f"{model_name} version {version} failed infra validation: {len(records)} input rows gave "
                f"{len(preds) if isinstance(preds, list) else preds!r} predictions."
            )
        if str(first.get("model_version")) != str(version):
            raise InfraValidationError(
                f"Infra validation of {model_name} version {version} was answered by version "
                f"{first.get('model_version')}: the gateway routed wrongly."
            )
        latencies: list[float] = []
        for _ in range(requests):
            t0 = time.perf_counter()
            api.predict(records)
            latencies.append((time.perf_counter() - t0) * 1000)
    finally:
        api.close()
        backend.stop(handle)
    report = ValidationReport(
        version=str(version),
        requests=requests,
        rows=len(records),
        p50_ms=round(percentile(latencies, 50), 3),
        p95_ms=round(percentile(latencies, 95), 3),
        budget_ms=float(latency_budget_ms),
        load_seconds=round(load_seconds, 2),
    )
    if report.p95_ms > latency_budget_ms:
        raise InfraValidationError(
            f"{model_name} version {version} failed infra validation: p95 latency {report.p95_ms:.1f} ms "
            f"over {requests} calls of {len(records)} rows exceeds the budget of {latency_budget_ms:g} ms. "
            "Make the model faster or raise latency_budget_ms."
        )
    return report

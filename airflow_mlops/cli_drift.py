"""``airflow-mlops drift``: the drift check for any CI system or shell (no Airflow needed).

Exit codes like the gate's: 0 no drift, 1 drift, 2 bad input or an error (nothing decided).
"""

from __future__ import annotations

import argparse
import json
import os
import re
from typing import Any

# MLflow reserves aliases such as "v3": NAME@v3 names version 3.
_VERSION_ALIAS = re.compile(r"^v(\d+)$")


def add_drift_command(sub: Any) -> None:
    """Register ``airflow-mlops drift``."""
    p = sub.add_parser(
        "drift",
        help="Check current data for drift against a reference (exit 0: no drift, 1: drift, 2: bad input).",
        description=(
            "Compare current data with a reference column by column (the DriftSensor's tests and dataset "
            "rule) and print the table. The reference is a model version's training profile (NAME@ALIAS, "
            "or NAME@vN for version N, read from MLflow), a profile JSON, or raw data (CSV/Parquet file or "
            "folder). Exit code 0: no drift; 1: drift; 2: bad input, no current rows, or an unreachable "
            "service."
        ),
    )
    p.add_argument(
        "--reference", required=True, help="NAME@ALIAS | NAME@vN | profile.json | data file/folder"
    )
    p.add_argument(
        "--current", required=True, metavar="PATH", help="current data: CSV/Parquet file or folder"
    )
    p.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI"),
        help="MLflow tracking URI for a NAME@ALIAS reference or --report (default: $MLFLOW_TRACKING_URI); "
        "credentials from MLFLOW_TRACKING_USERNAME/PASSWORD or MLFLOW_TRACKING_TOKEN",
    )
    p.add_argument("--columns", help="comma-separated columns to test (default: every reference column)")
    p.add_argument(
        "--drift-share", type=float, default=0.5, help="dataset drift when this share of columns drifted"
    )
    p.add_argument(
        "--method", help="test for every column (ks, wasserstein, psi, jensenshannon, chisquare, z)"
    )
    p.add_argument("--threshold", type=float, help="threshold for every column's test")
    p.add_argument("--fdr", action="store_true", help="Benjamini-Hochberg control over the p-value tests")
    p.add_argument(
        "--report",
        choices=("never", "on_drift", "always"),
        default="never",
        help="log the JSON+HTML report to MLflow (experiment --report-experiment)",
    )
    p.add_argument("--report-experiment", default="mlops-drift", help="MLflow experiment of report runs")
    p.add_argument(
        "--engine",
        choices=("local", "dask"),
        default="local",
        help="dask: summarize each file of --current on the Dask cluster of --dask-address, merge here",
    )
    p.add_argument(
        "--dask-address",
        default=os.environ.get("DASK_SCHEDULER_ADDRESS"),
        help="Dask scheduler for --engine dask, e.g. tcp://scheduler:8786 (default: $DASK_SCHEDULER_ADDRESS)",
    )
    p.add_argument("--json", dest="json_out", metavar="FILE", help="also write the summary as JSON to FILE")
    p.set_defaults(func=run_drift_command)


def _reference(value: str) -> dict[str, Any]:
    from airflow_mlops.core.errors import MlopsInputError

    if os.path.exists(value) or value.lower().endswith((".json", ".csv", ".parquet")):
        return {"path": value}
    name, sep, alias = value.rpartition("@")
    if not sep or not name or not alias:
        raise MlopsInputError(
            f"--reference {value!r} is neither an existing file or folder nor NAME@ALIAS: give a profile "
            "JSON, a data file, or a registered model such as breast_cancer@champion."
        )
    version = _VERSION_ALIAS.match(alias)
    return (
        {"model_name": name, "version": version.group(1)} if version else {"model_name": name, "alias": alias}
    )


def run_drift_command(args: argparse.Namespace) -> int:
    """Run ``drift``: check once, print the table, write ``--json``; exit 0 (no drift) or 1 (drift)."""
    from airflow_mlops.cli import EXIT_FAIL, EXIT_PASS
    from airflow_mlops.core.drift.evaluate import evaluate_drift
    from airflow_mlops.core.drift.report import summary_table
    from airflow_mlops.core.errors import MlopsInputError
    from airflow_mlops.core.tracking import MlflowTarget, check_reachable

    reference = _reference(args.reference)
    if not os.path.exists(args.current):
        raise MlopsInputError(
            f"--current {args.current!r} does not exist: give a CSV/Parquet file or folder."
        )
    if args.json_out and os.path.isdir(args.json_out):
        raise MlopsInputError(f"--json {args.json_out!r} is a folder: give a file path such as drift.json.")
    target = None
    if "model_name" in reference or args.report != "never":
        if not args.tracking_uri:
            raise MlopsInputError(
                "A model reference or --report needs MLflow: pass --tracking-uri or set MLFLOW_TRACKING_URI."
            )
        check_reachable(args.tracking_uri, timeout=10)
        target = MlflowTarget(
            tracking_uri=args.tracking_uri,
            username=os.environ.get("MLFLOW_TRACKING_USERNAME"),
            password=os.environ.get("MLFLOW_TRACKING_PASSWORD"),
            token=os.environ.get("MLFLOW_TRACKING_TOKEN"),
        )
    spec = {
        "reference": reference,
        "current": {"path": args.current},
        "model_name": reference.get("model_name"),
        "config": {
            "drift_share": args.drift_share,
            "method": args.method,
            "threshold": args.threshold,
            "fdr": args.fdr,
            "columns": [c.strip() for c in args.columns.split(",") if c.strip()] if args.columns else None,
        },
        "mlflow_report": args.report,
        "report_experiment": args.report_experiment,
        "engine": args.engine,
        "dask_address": args.dask_address,
    }
    summary = evaluate_drift(spec, target)
    if summary["status"] == "empty":
        raise MlopsInputError(f"{summary.get('message')}: give current data with rows.")
    print(summary_table(summary))
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2, sort_keys=True, default=str)
    drifted = bool(summary.get("drift_detected"))
    print(
        f"Drift: {summary.get('n_drifted')} of {summary.get('n_columns')} columns drifted "
        f"(share {summary.get('share_drifted', 0):.0%}); dataset {'DRIFTED' if drifted else 'not drifted'}."
    )
    return EXIT_FAIL if drifted else EXIT_PASS

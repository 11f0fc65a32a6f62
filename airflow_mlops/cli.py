"""``airflow-mlops``: the provider's command line, for CI systems and shells (no Airflow needed).

Subcommands register themselves in :data:`SUBCOMMANDS`: a function that adds a subparser and sets
``func`` (called with the parsed arguments, returning the exit code).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from airflow_mlops import __version__
from airflow_mlops.core.errors import MlopsInputError, MlopsServiceError

EXIT_PASS, EXIT_FAIL, EXIT_ERROR = 0, 1, 2
# An analysed gate that was inconclusive: neither passed nor failed, a human decides.
EXIT_INCONCLUSIVE = 3

Subparsers = Any  # argparse's _SubParsersAction is private


def add_gate_command(sub: Subparsers) -> None:
    """``airflow-mlops gate``: evaluate a gate spec on a model version; exit 0 on pass, 1 on fail."""
    p = sub.add_parser(
        "gate",
        help="Evaluate a validation gate on a model version (exit 0: passed, 1: failed, 2: bad input, "
        "3: inconclusive).",
        description=(
            "Evaluate a gate spec (YAML/JSON) on a registered model version, print the verdict table, "
            "and tag the verdict on the version (mlops.gate.<name>). Exit code 0: passed; 1: failed, or "
            "still without enough live evidence after --wait; 2: bad input or an unreachable service "
            "(nothing tagged), or an analysis whose source kept failing (tagged 'error'); 3: an analysis "
            "that was inconclusive (tagged; a human decides). A gate whose rules have analysis settings "
            "(interval, count, ...) takes its measurements as they fall due, until decided or --wait."
        ),
    )
    p.add_argument("--spec", required=True, help="gate spec file (.yaml, .yml or .json)")
    p.add_argument("--model", required=True, help="registered model name")
    p.add_argument("--version", required=True, help="candidate model version")
    p.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI"),
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI); credentials from MLFLOW_TRACKING_USERNAME/"
        "PASSWORD or MLFLOW_TRACKING_TOKEN",
    )
    p.add_argument(
        "--registry-uri",
        default=os.environ.get("MLFLOW_REGISTRY_URI"),
        help="MLflow registry URI if different",
    )
    p.add_argument(
        "--prometheus-url",
        default=os.environ.get("PROMETHEUS_URL"),
        help="Prometheus base URL for a prometheus source without 'url' (default: $PROMETHEUS_URL); "
        "credentials from PROMETHEUS_USERNAME/PASSWORD or PROMETHEUS_TOKEN",
    )
    p.add_argument("--promote-alias", help="alias set on the version when it passes (overrides the spec's)")
    p.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="for live sources: keep evaluating while evidence is too thin, up to this long (analysed "
        "gates: 0, the default, waits until the analysis is decided)",
    )
    p.add_argument(
        "--poll-interval", type=float, default=15.0, metavar="SECONDS", help="pause between evaluations"
    )
    p.add_argument("--dry-run", action="store_true", help="evaluate only: tag nothing, move no alias")
    p.add_argument("--json", dest="json_out", metavar="FILE", help="also write the verdict as JSON to FILE")
    p.set_defaults(func=run_gate_command)


# MLflow's client retries a dead server for minutes by default; this process is the CLI's own, so it
# bounds them (a value the user exported wins).
_MLFLOW_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


def _bound_mlflow_http() -> None:
    for key, value in _MLFLOW_HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)


def _check_writable(path: str) -> None:
    """Fail before anything is evaluated or recorded when ``path`` cannot be written.

    Checked by opening it for appending (``os.access`` says yes to root even on a read-only disk); a file
    that did not exist is removed again.
    """
    target = os.path.abspath(path)
    if os.path.isdir(target):
        raise MlopsInputError(f"--json {path!r} is a folder: give a file path such as verdict.json.")
    existed = os.path.exists(target)
    try:
        with open(target, "a"):
            pass
    except OSError as e:
        raise MlopsInputError(
            f"--json {path!r} cannot be written ({e.strerror or e}): give a path in a writable folder that "
            "exists. Nothing was evaluated or tagged."
        ) from None
    if not existed:
        os.unlink(target)


def _write_json_atomically(path: str, data: dict[str, Any]) -> str:
    """Write ``data`` to a temporary file next to ``path``; return its name (moved into place later)."""
    import tempfile

    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".verdict-", suffix=".json", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def run_gate_command(args: argparse.Namespace) -> int:
    """Run ``gate``: evaluate (waiting up to ``--wait`` for live evidence), print, record, exit code.

    Every output is checked before anything is recorded: a ``--json`` path that cannot be written is an
    error (exit 2) before the gate is evaluated, and the JSON is written before the tag.
    """
    from airflow_mlops.core.gate import (
        ERROR,
        INCONCLUSIVE,
        is_analysed,
        load_spec,
        next_measurement,
        record_verdict,
        run_analysis,
        run_gate,
    )
    from airflow_mlops.core.promql import PromClient
    from airflow_mlops.core.tracking import MlflowTarget

    if not args.tracking_uri:
        raise MlopsInputError("No MLflow tracking URI: pass --tracking-uri or set MLFLOW_TRACKING_URI.")
    if not (args.wait >= 0 and args.poll_interval > 0):  # also false for NaN
        raise MlopsInputError("--wait must be >= 0 and --poll-interval > 0 (seconds).")
    spec = load_spec(args.spec)
    if args.json_out:
        _check_writable(args.json_out)
    _bound_mlflow_http()
    target = MlflowTarget(
        tracking_uri=args.tracking_uri,
        registry_uri=args.registry_uri,
        username=os.environ.get("MLFLOW_TRACKING_USERNAME"),
        password=os.environ.get("MLFLOW_TRACKING_PASSWORD"),
        token=os.environ.get("MLFLOW_TRACKING_TOKEN"),
    )
    prometheus = None
    if spec.source.kind == "prometheus" and not spec.source.url:
        if not args.prometheus_url:
            raise MlopsInputError(
                "The gate's prometheus source has no 'url': pass --prometheus-url or set PROMETHEUS_URL."
            )
        prometheus = PromClient(
            args.prometheus_url,
            username=os.environ.get("PROMETHEUS_USERNAME"),
            password=os.environ.get("PROMETHEUS_PASSWORD"),
            token=os.environ.get("PROMETHEUS_TOKEN"),
            timeout=spec.source.timeout,
        )
    analysed = is_analysed(spec)
    deadline = time.monotonic() + (args.wait if args.wait or not analysed else float("inf"))
    state = None
    while True:
        if analysed:
            verdict = run_analysis(spec, args.model, args.version, target, state=state, prometheus=prometheus)
            state = verdict.analysis
            due = next_measurement(spec, verdict)
            pause = args.poll_interval if due is None else max(0.0, due - time.time())
        else:
            verdict = run_gate(spec, args.model, args.version, target, prometheus=prometheus)
            pause = args.poll_interval
        if verdict.decided or time.monotonic() + pause > deadline:
            break
        print(f"{verdict.summary()} - evaluating again in {pause:g}s", file=sys.stderr)
        time.sleep(pause)
    print(verdict.table())
    tmp = _write_json_atomically(args.json_out, verdict.to_dict()) if args.json_out else None
    try:
        if verdict.decided and not args.dry_run:
            record_verdict(target, verdict, args.promote_alias or spec.promote_alias)
    except BaseException:
        if tmp:
            os.unlink(tmp)
        raise
    if tmp:
        os.replace(tmp, args.json_out)
    print(verdict.summary())
    if verdict.status == INCONCLUSIVE:
        return EXIT_INCONCLUSIVE
    if verdict.status == ERROR:
        return EXIT_ERROR
    return EXIT_PASS if verdict.passed else EXIT_FAIL


# Other subcommands (e.g. ``demo``) add their registration function here.
from airflow_mlops.cli_drift import add_drift_command  # noqa: E402 - after the exit codes it uses

SUBCOMMANDS: list[Callable[[Subparsers], None]] = [add_gate_command, add_drift_command]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(prog="airflow-mlops", description="Airflow MLOps provider tools.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in SUBCOMMANDS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``airflow-mlops`` console script; returns the exit code.

    :param argv: arguments (default: ``sys.argv[1:]``).
    """
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (MlopsInputError, MlopsServiceError) as e:
        # A clear one-line message, no traceback: the message names the problem and the fix.
        _error(str(e))
        return EXIT_ERROR
    except KeyboardInterrupt:
        _error("interrupted: nothing more was recorded.")
        return EXIT_ERROR
    except Exception as e:  # noqa: BLE001 - exit 2 means "error", never a traceback read as "failed"
        _error(f"{type(e).__name__}: {e}. This is unexpected: please report it with the command line.")
        return EXIT_ERROR


def _error(message: str) -> None:
    from airflow_mlops.core.redact import redact

    print(f"error: {redact(' '.join(message.split()))}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())

"""Run the gateway: ``python -m airflow_mlops.serving --port 8080 --tracking-uri URI --config d.json``.

The admin token comes from ``MLOPS_GATEWAY_ADMIN_TOKEN`` (never from the command line, which other
users of the machine can read); MLflow credentials from the usual ``MLFLOW_TRACKING_*`` variables.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
from collections.abc import Sequence

from airflow_mlops.core.errors import MlopsInputError


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of the gateway."""
    p = argparse.ArgumentParser(prog="python -m airflow_mlops.serving", description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    p.add_argument(
        "--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"), help="MLflow tracking URI"
    )
    p.add_argument(
        "--registry-uri", default=os.environ.get("MLFLOW_REGISTRY_URI"), help="MLflow registry URI"
    )
    p.add_argument("--config", help="deployment config (JSON) to load at startup")
    p.add_argument(
        "--state-file",
        help="file where every applied deployment is saved; at startup it wins over --config when it exists",
    )
    p.add_argument("--log-dir", help="folder of the prediction log (rolling Parquet files)")
    p.add_argument("--log-flush-seconds", type=float, default=10.0, help="prediction-log file interval")
    p.add_argument("--max-body-bytes", type=int, default=8 * 1024 * 1024, help="largest request body")
    p.add_argument("--max-rows", type=int, default=10_000, help="most rows in one predict request")
    p.add_argument("--window", type=int, default=1000, help="labelled rows per version for live metrics")
    p.add_argument("--feedback-capacity", type=int, default=200_000, help="requests kept for feedback")
    p.add_argument("--shadow-queue", type=int, default=10_000, help="shadow copies queued at most")
    p.add_argument("--log-level", default="info", help="log level (default info)")
    p.add_argument("--access-log", action="store_true", help="log every request (slower)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, build the app and serve it with uvicorn until SIGTERM/SIGINT."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not args.tracking_uri:
        print("error: give --tracking-uri (or set MLFLOW_TRACKING_URI)", file=sys.stderr)
        return 2
    for name in ("max_body_bytes", "max_rows", "window", "feedback_capacity", "shadow_queue"):
        if getattr(args, name) <= 0:
            print(f"error: --{name.replace('_', '-')} must be positive", file=sys.stderr)
            return 2
    # A progress bar per artifact download would flood the gateway's log.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import uvicorn

    from airflow_mlops.core.tracking import MlflowTarget
    from airflow_mlops.serving.app import ADMIN_TOKEN_ENV, GatewaySettings, create_app
    from airflow_mlops.serving.config import load_config
    from airflow_mlops.serving.models import ModelLoader

    try:
        # The last applied deployment (state file) is newer than the initial one (--config).
        startup = args.state_file if args.state_file and os.path.exists(args.state_file) else args.config
        config = load_config(startup) if startup else None
    except MlopsInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    target = MlflowTarget(
        args.tracking_uri,
        registry_uri=args.registry_uri,
        username=os.environ.get("MLFLOW_TRACKING_USERNAME"),
        password=os.environ.get("MLFLOW_TRACKING_PASSWORD"),
        token=os.environ.get("MLFLOW_TRACKING_TOKEN"),
    )
    loader = ModelLoader(target)
    settings = GatewaySettings(
        admin_token=os.environ.get(ADMIN_TOKEN_ENV) or None,
        log_dir=args.log_dir,
        max_body_bytes=args.max_body_bytes,
        max_rows=args.max_rows,
        feedback_capacity=args.feedback_capacity,
        window=args.window,
        shadow_queue=args.shadow_queue,
        log_flush_seconds=args.log_flush_seconds,
        state_file=args.state_file,
    )
    app = create_app(settings, config=config, load_model=loader.load, resolve=loader.resolve)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        # uvloop and httptools roughly halve the per-request overhead; fall back when absent.
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http="httptools" if importlib.util.find_spec("httptools") else "h11",
        log_level=args.log_level.lower(),
        access_log=args.access_log,
        timeout_graceful_shutdown=10,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

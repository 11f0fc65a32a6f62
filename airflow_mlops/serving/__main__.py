"""Run the gateway: ``python -m airflow_mlops.serving --port 8080 --tracking-uri URI --config d.json``.

The admin token comes from ``MLOPS_GATEWAY_ADMIN_TOKEN`` and the feedback token (a separate credential:
labels drive the online gate, the bandit and the retraining data) from ``MLOPS_GATEWAY_FEEDBACK_TOKEN`` or
``--feedback-token-file``; never from the command line, which other users of the machine can read. MLflow
credentials come from the usual ``MLFLOW_TRACKING_*`` variables.

Replicas: every replica gets the same ``MLOPS_GATEWAY_REQUEST_SECRET`` (signs request ids, so any replica
joins any feedback), optionally ``MLOPS_GATEWAY_DEDUP_URL`` (a Redis URL: feedback counted once across
replicas), and ``--peers`` / ``MLOPS_GATEWAY_PEERS`` (every replica's URL: the bandit adds up their rewards).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from airflow_mlops.core.errors import MlopsInputError
from airflow_mlops.serving.client import ADMIN_TOKEN_ENV, FEEDBACK_TOKEN_ENV
from airflow_mlops.serving.request_ids import DEDUP_URL_ENV, MIN_SECRET_BYTES, SECRET_ENV

log = logging.getLogger("airflow_mlops.serving")


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
        default=os.environ.get("MLOPS_GATEWAY_STATE_FILE") or None,
        help="file where every applied deployment is saved; at startup it wins over --config when it exists "
        "(default $MLOPS_GATEWAY_STATE_FILE)",
    )
    p.add_argument("--log-dir", help="folder of the prediction log (rolling Parquet files)")
    p.add_argument("--log-flush-seconds", type=float, default=10.0, help="prediction-log file interval")
    p.add_argument("--max-body-bytes", type=int, default=8 * 1024 * 1024, help="largest request body")
    p.add_argument("--max-rows", type=int, default=10_000, help="most rows in one predict request")
    p.add_argument("--window", type=int, default=1000, help="labelled rows per version for live metrics")
    p.add_argument(
        "--feedback-capacity",
        type=int,
        default=200_000,
        help="request ids whose feedback this process remembers, to refuse a repeat (without a dedup store)",
    )
    p.add_argument("--shadow-queue", type=int, default=10_000, help="shadow copies queued at most")
    p.add_argument(
        "--feedback-token-file",
        help=f"file holding the bearer token of /feedback (default: ${FEEDBACK_TOKEN_ENV}; none: feedback refused)",
    )
    p.add_argument(
        "--offload-rows", type=int, default=1000, help="predicts above this run in a worker thread"
    )
    p.add_argument(
        "--load-timeout",
        type=float,
        default=120.0,
        help="seconds a deployment change may take to load models",
    )
    p.add_argument(
        "--put-wait", type=float, default=5.0, help="seconds a deployment change waits for one in progress"
    )
    p.add_argument(
        "--header-timeout", type=float, default=10.0, help="seconds a client has to send a request's headers"
    )
    p.add_argument("--body-timeout", type=float, default=30.0, help="seconds a client has to send a body")
    p.add_argument(
        "--keep-alive-timeout", type=int, default=5, help="seconds an idle keep-alive connection stays open"
    )
    p.add_argument(
        "--limit-concurrency", type=int, default=2048, help="connections and requests at once (503 above)"
    )
    p.add_argument(
        "--log-max-held-rows", type=int, default=1_000_000, help="log rows kept in memory while writes fail"
    )
    p.add_argument(
        "--peers",
        default=os.environ.get("MLOPS_GATEWAY_PEERS", ""),
        help="comma-separated base URLs of every replica (default $MLOPS_GATEWAY_PEERS): the bandit adds up "
        "their rewards",
    )
    p.add_argument(
        "--peer-sync-seconds", type=float, default=2.0, help="how often the peers' bandit rewards are read"
    )
    p.add_argument(
        "--counter-file",
        default=os.environ.get("MLOPS_GATEWAY_COUNTER_FILE") or None,
        help="file where the feedback counters are saved at shutdown and restored at start (a restarted "
        "replica goes on counting instead of resetting; default $MLOPS_GATEWAY_COUNTER_FILE)",
    )
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
    positive = (
        "max_body_bytes", "max_rows", "window", "feedback_capacity", "shadow_queue", "offload_rows",
        "load_timeout", "put_wait", "header_timeout", "body_timeout", "keep_alive_timeout",
        "limit_concurrency", "log_max_held_rows", "peer_sync_seconds",
    )  # fmt: skip
    for name in positive:
        if getattr(args, name) <= 0:
            print(f"error: --{name.replace('_', '-')} must be positive", file=sys.stderr)
            return 2
    try:
        feedback_token = read_feedback_token(args.feedback_token_file)
    except MlopsInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    admin_token = os.environ.get(ADMIN_TOKEN_ENV) or None
    if feedback_token and feedback_token == admin_token:
        print(
            f"error: {FEEDBACK_TOKEN_ENV} equals {ADMIN_TOKEN_ENV}: give feedback senders a token of their own "
            "(whoever sends labels must not be able to change the deployment).",
            file=sys.stderr,
        )
        return 2
    secret = os.environ.get(SECRET_ENV) or ""
    if secret and len(secret.encode()) < MIN_SECRET_BYTES:
        print(
            f"error: {SECRET_ENV} is shorter than {MIN_SECRET_BYTES} bytes: give every replica the same random "
            "secret (e.g. python -c 'import secrets; print(secrets.token_hex(32))')",
            file=sys.stderr,
        )
        return 2
    try:
        config = startup_config(args.state_file, args.config)
    except MlopsInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # Set once at start, before MLflow is imported (never per request): a progress bar per artifact
    # download would flood the gateway's log, and MLflow's client would retry a dead server for minutes.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    # This process serves one MLflow store: parts of MLflow that take no URI argument use these.
    os.environ["MLFLOW_TRACKING_URI"] = args.tracking_uri
    os.environ["MLFLOW_REGISTRY_URI"] = args.registry_uri or args.tracking_uri
    import uvicorn

    from airflow_mlops.core.tracking import MlflowTarget
    from airflow_mlops.serving.app import GatewaySettings, create_app
    from airflow_mlops.serving.models import ModelLoader
    from airflow_mlops.serving.protocol import protocol_class

    target = MlflowTarget(
        args.tracking_uri,
        registry_uri=args.registry_uri,
        username=os.environ.get("MLFLOW_TRACKING_USERNAME"),
        password=os.environ.get("MLFLOW_TRACKING_PASSWORD"),
        token=os.environ.get("MLFLOW_TRACKING_TOKEN"),
    )
    # The credentials are this process's own variables: the loader never touches os.environ.
    loader = ModelLoader(target, process_env=True)
    settings = GatewaySettings(
        admin_token=admin_token,
        feedback_token=feedback_token,
        log_dir=args.log_dir,
        max_body_bytes=args.max_body_bytes,
        max_rows=args.max_rows,
        feedback_capacity=args.feedback_capacity,
        window=args.window,
        shadow_queue=args.shadow_queue,
        log_flush_seconds=args.log_flush_seconds,
        state_file=args.state_file,
        offload_rows=args.offload_rows,
        body_timeout=args.body_timeout,
        load_timeout=args.load_timeout,
        put_wait_seconds=args.put_wait,
        log_max_held_rows=args.log_max_held_rows,
        tracking_uri=args.registry_uri or args.tracking_uri,
        request_secret=os.environ.get(SECRET_ENV) or None,
        dedup_url=os.environ.get(DEDUP_URL_ENV) or None,
        peers=tuple(u.strip() for u in args.peers.split(",") if u.strip()),
        peer_sync_seconds=args.peer_sync_seconds,
        counter_file=args.counter_file,
    )
    if not feedback_token:
        log.warning(
            "No %s set: /feedback refuses every label (403) until the gateway has one", FEEDBACK_TOKEN_ENV
        )
    app = create_app(
        settings, config=config, load_model=loader.load, resolve=loader.resolve, probe=loader.check
    )
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        # uvloop and httptools roughly halve the per-request overhead; fall back when absent.
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        # httptools (or h11) with a deadline on request headers: a half-sent request is dropped.
        http=protocol_class(args.header_timeout),
        timeout_keep_alive=args.keep_alive_timeout,
        limit_concurrency=args.limit_concurrency,
        log_level=args.log_level.lower(),
        access_log=args.access_log,
        timeout_graceful_shutdown=10,
    )
    return 0


def read_feedback_token(path: str | None) -> str | None:
    """The feedback token: the file's content (stripped) when ``path`` is given, else the environment.

    :param path: ``--feedback-token-file``.
    :raises MlopsInputError: the file cannot be read or is empty.
    """
    if not path:
        return os.environ.get(FEEDBACK_TOKEN_ENV) or None
    try:
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise MlopsInputError(
            f"Cannot read --feedback-token-file {path} ({type(e).__name__}): give a readable text file."
        ) from None
    if not token:
        raise MlopsInputError(f"--feedback-token-file {path} is empty: write the token into it.")
    return token


def startup_config(state_file: str | None, config_file: str | None) -> Any:
    """The deployment to serve at start: the state file (the last one applied) when it exists, else
    ``--config``, else none (the gateway waits for ``PUT /admin/deployment``).

    A state file that cannot be read (truncated by a crash or a full disk, or not a deployment) is
    reported by its own path and moved aside as ``<name>.corrupt``; the gateway then starts from
    ``--config``. Without a ``--config`` to fall back on it refuses to start (the file is left as it is).

    :raises MlopsInputError: the config file is bad, or the state file is and no config is given.
    """
    from airflow_mlops.serving.config import load_config

    if state_file and os.path.exists(state_file):
        try:
            return load_config(state_file)
        except MlopsInputError as e:
            if not config_file:
                raise MlopsInputError(
                    f"The state file {state_file} is not a valid deployment ({e}) and no --config was "
                    f"given to start from: give --config, or move {state_file} away to start empty."
                ) from None
            corrupt = f"{state_file}.corrupt"
            try:
                os.replace(state_file, corrupt)
                kept = f"kept as {corrupt}"
            except OSError as moved:
                kept = f"could not be moved to {corrupt}: {moved}"
            log.error(
                "The state file %s is not a valid deployment (%s); it is %s, and the gateway starts from "
                "--config %s",
                state_file,
                e,
                kept,
                config_file,
            )
    return load_config(config_file) if config_file else None


if __name__ == "__main__":
    sys.exit(main())

"""N gateway replicas behind a load balancer, run by another backend (``local``: N processes, ``docker``:
N containers) with Debian's nginx in front (:mod:`airflow_mlops.deploy.load_balancer`).

Every replica gets the same request-id secret (any replica joins any feedback), the list of all the
replicas (the bandit adds up their rewards; a deployment change that reaches one replica is staged on
all, then committed on all: :mod:`airflow_mlops.serving.fanout`), and its own state and counter files
(a restarted replica serves the last committed deployment and goes on counting). The handle's
``endpoint`` is the balancer's, so the deployer talks to the set as to one gateway.
"""

from __future__ import annotations

import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from airflow_mlops.core.errors import MlopsInputError, MlopsServiceError
from airflow_mlops.core.net import free_port
from airflow_mlops.deploy.backends import GatewayBackend, GatewaySpec
from airflow_mlops.deploy.load_balancer import nginx_alive, start_nginx, stop_nginx
from airflow_mlops.deploy.state import this_host
from airflow_mlops.serving.request_ids import SECRET_ENV

MAX_REPLICAS = 64


class ReplicatedBackend(GatewayBackend):
    """``replicas`` gateways of ``inner`` behind nginx.

    :param inner: the backend that runs each replica (``local`` or ``docker`` with ``network_mode="host"``,
        so that replicas reach each other on the host's loopback).
    :param replicas: how many replicas (>= 1).
    :param lb_workers: nginx worker processes.
    :param request_secret: the shared request-id secret (default: ``MLOPS_GATEWAY_REQUEST_SECRET`` of the
        inner backend's ``extra_env``, else a new random one per start of the set).
    """

    kind = "replicated"

    def __init__(
        self, inner: GatewayBackend, replicas: int, lb_workers: int = 1, request_secret: str | None = None
    ) -> None:
        if isinstance(replicas, bool) or not isinstance(replicas, int) or not 1 <= replicas <= MAX_REPLICAS:
            raise MlopsInputError(f"replicas={replicas!r}: give a whole number from 1 to {MAX_REPLICAS}.")
        if inner.kind not in ("local", "docker"):
            raise MlopsInputError(
                f"replicas={replicas} needs the 'local' or 'docker' backend, not {inner.kind!r}: an external "
                "gateway's replicas are run (and balanced) by whoever runs it."
            )
        if inner.kind == "docker" and getattr(inner, "network_mode", "host") != "host":
            raise MlopsInputError(
                "Docker replicas need network_mode='host' (replicas reach each other and the load balancer "
                "on the host's loopback): pass network_mode='host' to the docker backend."
            )
        self.inner = inner
        self.replicas = replicas
        self.lb_workers = lb_workers
        extra = getattr(inner, "extra_env", {}) or {}
        self.request_secret = request_secret or extra.get(SECRET_ENV)

    def replica_spec(self, spec: GatewaySpec, index: int, ports: list[int], secret: str) -> GatewaySpec:
        """The spec of replica ``index``: its port, the shared secret, the peers, its own state files."""
        peers = ",".join(f"http://127.0.0.1:{p}" for p in ports)
        own = self._state_dir(spec, ports[index])
        env = {
            SECRET_ENV: secret,
            "MLOPS_GATEWAY_PEERS": peers,
            "MLOPS_GATEWAY_STATE_FILE": f"{own}/deployment.json",
            "MLOPS_GATEWAY_COUNTER_FILE": f"{own}/counters.json",
        }
        return replace(spec, port=ports[index], credentials={**spec.credentials, **env})

    def _state_dir(self, spec: GatewaySpec, port: int) -> str:
        if self.inner.kind == "docker":
            # The container's only writable mount besides /tmp is the log folder.
            (Path(spec.log_dir or spec.workdir / "predictions") / ".replicas" / str(port)).mkdir(
                parents=True, exist_ok=True
            )
            return f"/var/log/mlops/.replicas/{port}"
        folder = spec.workdir / "replicas" / str(port)
        folder.mkdir(parents=True, exist_ok=True)
        return str(folder)

    def start(self, spec: GatewaySpec, ready_timeout: float = 180.0) -> dict[str, Any]:
        """Start the replicas side by side, then the balancer; any failure stops what started.

        :raises MlopsServiceError: a replica or the balancer did not come up (with its log tail).
        """
        ports = [free_port() for _ in range(self.replicas)]
        secret = self.request_secret or secrets.token_hex(32)
        specs = [self.replica_spec(spec, i, ports, secret) for i in range(self.replicas)]
        handles: list[dict[str, Any] | None] = [None] * self.replicas
        errors: list[str] = []

        def one(i: int) -> None:
            try:
                handles[i] = self.inner.start(specs[i], ready_timeout=ready_timeout)
            except MlopsServiceError as e:
                errors.append(f"replica {i} (port {ports[i]}): {e}")

        with ThreadPoolExecutor(max_workers=self.replicas) as pool:
            list(pool.map(one, range(self.replicas)))
        started = [h for h in handles if h is not None]
        if errors:
            for h in started:
                self.inner.stop(h)
            raise MlopsServiceError(
                f"{len(errors)} of {self.replicas} replicas did not start: " + " ".join(errors)
            )
        lb_port = spec.port or free_port()
        try:
            lb = start_nginx(
                [f"127.0.0.1:{p}" for p in ports],
                spec.workdir / f"lb-{lb_port}",
                lb_port,
                workers=self.lb_workers,
            )
        except MlopsServiceError:
            for h in started:
                self.inner.stop(h)
            raise
        return {
            "backend": self.kind,
            "inner": self.inner.kind,
            "host": this_host(),
            "port": lb_port,
            "endpoint": lb["endpoint"],
            "replicas": started,
            "lb": lb,
        }

    def alive(self, handle: dict[str, Any]) -> bool:
        """The balancer and every replica run (one replica down: not alive, so the deployer restarts the set)."""
        reps = handle.get("replicas") or []
        return bool(reps) and nginx_alive(handle.get("lb", {})) and all(self.inner.alive(h) for h in reps)

    def stop(self, handle: dict[str, Any]) -> None:
        stop_nginx(handle.get("lb", {}))
        reps = handle.get("replicas") or []
        if reps:
            with ThreadPoolExecutor(max_workers=len(reps)) as pool:
                list(pool.map(self.inner.stop, reps))

    def logs(self, handle: dict[str, Any], lines: int = 40) -> str:
        per = max(5, lines // max(1, len(handle.get("replicas") or [1])))
        return "\n".join(
            f"[replica {i}] {self.inner.logs(h, per)}" for i, h in enumerate(handle.get("replicas") or [])
        )

    def validation_backend(self) -> GatewayBackend:
        """Infra validation starts one throwaway gateway of the inner kind."""
        return self.inner.validation_backend()

    def endpoints(self, handle: dict[str, Any]) -> list[str]:
        """Every replica's own base URL (for Prometheus scrape targets)."""
        return [h["endpoint"] for h in handle.get("replicas") or []]

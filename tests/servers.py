"""Real services for tests: started on free loopback ports, in their own process groups."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from airflow_mlops.core.net import free_port

__all__ = ["free_port"]


def wait_http(url: str, timeout: float = 90.0, proc: subprocess.Popen | None = None) -> None:
    """Wait until ``url`` answers 200, or fail (early, if ``proc`` died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


def stop(proc: subprocess.Popen) -> None:
    """Stop a process started with ``start_new_session=True`` and all of its children."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def start_process(
    args: list[str],
    root: Path,
    name: str,
    ready_path: str,
    port: int,
    timeout: float = 180.0,
    env: dict | None = None,
) -> tuple[subprocess.Popen, str]:
    """Start a server in its own process group, its output in ``root/<name>.log``, and wait until
    ``http://127.0.0.1:<port><ready_path>`` answers; on failure, stop it and raise with its log's tail.

    :param args: the command line.
    :param root: folder for the log.
    :param name: the log's name.
    :param ready_path: the path that answers 200 once the server is ready.
    :param port: the loopback port it listens on.
    :param timeout: seconds to wait (generous: only a slow start waits that long, and CI runs six
        sessions on two cores).
    :param env: the environment (default: this process's).
    """
    root.mkdir(parents=True, exist_ok=True)
    log_path = root / f"{name}.log"
    log = open(log_path, "wb")  # kept open for the process's life
    proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + ready_path, timeout=timeout, proc=proc)
    except Exception:  # noqa: BLE001 - whatever failed, the log tail says why
        stop(proc)
        raise RuntimeError(log_path.read_text()[-3000:]) from None
    return proc, url


def start_mlflow_server(root: Path) -> tuple[subprocess.Popen, str]:
    """A real ``mlflow server`` (SQLite backend, local artifacts served by it) on a free port."""
    port = free_port()
    args = [
        sys.executable, "-m", "mlflow", "server",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", str(root / "artifacts"),
    ]  # fmt: skip
    # MLflow 3.17's job runner starts about 8 polling Huey consumers per server; no test uses its jobs.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    # Its start (imports, migrations) took over 120 s on a 2-core machine running five test sessions.
    return start_process(args, root, "mlflow-server", "/health", port, timeout=300, env=env)


class PrometheusServer:
    """A running Prometheus: its URL, and scrape targets that can be added while it runs.

    Targets go to a ``file_sd`` file that Prometheus watches, so a test can start an exporter (or a
    gateway) on a free port and have it scraped every second without restarting the server.
    """

    def __init__(self, proc: subprocess.Popen, url: str, sd_dir: Path) -> None:
        self.proc, self.url, self.sd_dir = proc, url, sd_dir

    def add_target(self, address: str, labels: dict[str, str] | None = None) -> None:
        """Scrape ``host:port`` (its ``/metrics``) from now on."""
        import json
        import uuid

        entry = [{"targets": [address], "labels": labels or {}}]
        tmp = self.sd_dir / f".{uuid.uuid4().hex}.tmp"
        tmp.write_text(json.dumps(entry))
        tmp.rename(self.sd_dir / f"{uuid.uuid4().hex}.json")  # atomic: Prometheus never reads half a file

    def query(self, promql: str) -> list[dict]:
        """Instant query; the raw result list."""
        import json
        import urllib.parse

        with urllib.request.urlopen(
            f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        ) as r:
            return json.loads(r.read())["data"]["result"]

    def wait_for(self, promql: str, timeout: float = 30.0) -> list[dict]:
        """Wait until ``promql`` returns at least one series (e.g. a target's first scrape)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.query(promql)
            if result:
                return result
            time.sleep(0.3)
        raise TimeoutError(f"Prometheus at {self.url} returned nothing for {promql!r} within {timeout}s")


def start_prometheus(
    root: Path, scrape_targets: list[str] | None = None, scrape_interval: str = "1s"
) -> PrometheusServer:
    """A real Prometheus (Debian's ``prometheus`` binary) on a free loopback port.

    :param root: folder for its config, data and log.
    :param scrape_targets: ``host:port`` addresses scraped from the start (more via ``add_target``).
    :param scrape_interval: scrape interval; short so that tests see new samples quickly.
    """
    import json
    import shutil

    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not Path(binary).exists():
        raise RuntimeError("prometheus is not installed: apt-get install -y prometheus")
    root.mkdir(parents=True, exist_ok=True)
    sd_dir = root / "targets"
    sd_dir.mkdir(exist_ok=True)
    config = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": [
            {
                "job_name": "test",
                "scrape_interval": scrape_interval,
                "scrape_timeout": scrape_interval,
                "static_configs": [{"targets": list(scrape_targets or [])}],
                "file_sd_configs": [{"files": [str(sd_dir / "*.json")], "refresh_interval": "1s"}],
            }
        ],
    }
    (root / "prometheus.yml").write_text(json.dumps(config))  # JSON is valid YAML
    port = free_port()
    args = [
        binary, f"--config.file={root / 'prometheus.yml'}",
        f"--web.listen-address=127.0.0.1:{port}", f"--storage.tsdb.path={root / 'data'}",
        "--storage.tsdb.retention.time=1h",
    ]  # fmt: skip
    proc, url = start_process(args, root, "prometheus", "/-/ready", port)
    return PrometheusServer(proc, url, sd_dir)


def start_pushgateway(root: Path) -> tuple[subprocess.Popen, str]:
    """A real Prometheus Pushgateway (Debian's ``prometheus-pushgateway`` binary) on a free loopback port."""
    import shutil

    binary = shutil.which("prometheus-pushgateway") or "/usr/bin/prometheus-pushgateway"
    if not Path(binary).exists():
        raise RuntimeError(
            "prometheus-pushgateway is not installed: apt-get install -y prometheus-pushgateway"
        )
    port = free_port()
    return start_process(
        [binary, f"--web.listen-address=127.0.0.1:{port}"], root, "pushgateway", "/-/ready", port, 30
    )


# The feedback token of gateways started by start_gateway unless a test gives another (or None).
FEEDBACK_TOKEN = "tests-feedback-token-9d41"


def start_gateway(
    root: Path,
    tracking_uri: str,
    config: dict | None = None,
    admin_token: str | None = None,
    extra_args: tuple[str, ...] = (),
    wait_ready: bool = True,
    feedback_token: str | None = FEEDBACK_TOKEN,
) -> tuple[subprocess.Popen, str]:
    """A real model gateway (``python -m airflow_mlops.serving``) on a free loopback port.

    :param root: folder for its config, prediction log (``root/predictions``) and output (``gateway.log``).
    :param tracking_uri: the MLflow store it loads models from.
    :param config: deployment config written to ``root/deployment.json`` (None: start empty).
    :param admin_token: value of ``MLOPS_GATEWAY_ADMIN_TOKEN`` (None: admin API refused).
    :param feedback_token: value of ``MLOPS_GATEWAY_FEEDBACK_TOKEN`` (None: feedback refused).
    :param extra_args: more command-line arguments.
    :param wait_ready: wait for ``/ready`` (else only ``/health``).
    """
    import json

    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    args = [
        sys.executable, "-m", "airflow_mlops.serving", "--host", "127.0.0.1", "--port", str(port),
        "--tracking-uri", tracking_uri, "--log-dir", str(root / "predictions"), *extra_args,
    ]  # fmt: skip
    if config is not None:
        (root / "deployment.json").write_text(json.dumps(config))
        args += ["--config", str(root / "deployment.json")]
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MLOPS_GATEWAY_ADMIN_TOKEN", "MLOPS_GATEWAY_FEEDBACK_TOKEN")
    }
    if admin_token is not None:
        env["MLOPS_GATEWAY_ADMIN_TOKEN"] = admin_token
    if feedback_token is not None:
        env["MLOPS_GATEWAY_FEEDBACK_TOKEN"] = feedback_token
    path = "/ready" if wait_ready and config is not None else "/health"
    return start_process(args, root, "gateway", path, port, timeout=240, env=env)

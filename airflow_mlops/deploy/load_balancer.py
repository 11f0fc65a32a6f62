"""The load balancer in front of gateway replicas: Debian's nginx, configured and started here.

Round robin over the replicas with upstream keep-alive; a replica that refuses connections or
answers 502/503 is skipped for the request (``proxy_next_upstream``), so a replica that dies or
restarts costs only the requests it had in flight. A predict may be retried on another replica
(``non_idempotent``: the retry gets its own request id; the first answer never reached the
client); a feedback is retried only when it never reached a replica (counted once either way).
``/metrics`` through the balancer is every replica's counters summed by one of them (for the
deployer's error-rate watch); Prometheus scrapes each replica itself, and PromQL adds them up. Admin
calls pass (to one replica, which applies the change on all of them, two-phase).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from airflow_mlops.core.errors import MlopsServiceError
from airflow_mlops.core.net import free_port

NGINX_PACKAGE = "nginx-light"


def nginx_binary() -> str:
    """The nginx executable (``/usr/sbin`` is not on every user's PATH)."""
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if found is None:
        raise MlopsServiceError(
            f"nginx is not installed: `apt-get install {NGINX_PACKAGE}` (scripts/setup.sh does), or run "
            "with replicas=1."
        )
    return found


def nginx_config(
    upstreams: list[str], listen: str, root: Path, workers: int = 1, max_body_bytes: int = 8 * 1024 * 1024
) -> str:
    """The nginx configuration of a balancer over ``upstreams``.

    :param upstreams: ``host:port`` of every replica.
    :param listen: ``host:port`` the balancer listens on.
    :param root: folder for its pid file, error log and temporary files.
    :param workers: nginx worker processes.
    :param max_body_bytes: largest request body passed on (the gateway's own limit).
    """
    servers = "\n".join(f"    server {u} max_fails=1 fail_timeout=2s;" for u in upstreams)
    tmp = root / "tmp"
    proxy = """proxy_pass http://gateways;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_connect_timeout 1s;
      proxy_next_upstream_tries 3;"""
    return f"""# Written by airflow_mlops.deploy.load_balancer: edits are overwritten.
worker_processes {workers};
pid {root / "nginx.pid"};
error_log {root / "error.log"} warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  client_max_body_size {max_body_bytes};
  upstream gateways {{
{servers}
    keepalive 64;
  }}
  server {{
    listen {listen} reuseport backlog=4096;
    location = /lb/health {{ return 200 "ok\\n"; }}
    # A replica's own state: its 503 ("no deployment yet") is an answer, passed on and never counted as
    # a failure (with http_503 here, polling /ready before the first deployment took every replica out
    # for fail_timeout, and /health then answered 502).
    location ~ ^/(health|ready)$ {{
      {proxy}
      proxy_read_timeout 10s;
      proxy_next_upstream error timeout;
    }}
    # The counters of every replica, summed by one of them (for the deployer's error-rate watch).
    # Prometheus scrapes each replica's own /metrics instead: PromQL adds them up, over restarts too.
    location = /metrics {{
      {proxy}
      proxy_read_timeout 10s;
      proxy_next_upstream error timeout http_502 http_503;
      rewrite ^ /metrics/replicas break;
    }}
    location = /predict {{
      {proxy}
      proxy_read_timeout 120s;
      proxy_next_upstream error timeout http_502 http_503 non_idempotent;
    }}
    location /admin/ {{
      {proxy}
      proxy_read_timeout 600s;
      proxy_next_upstream error;
    }}
    location / {{
      {proxy}
      proxy_read_timeout 60s;
      proxy_next_upstream error timeout http_502 http_503;
    }}
  }}
}}
"""


def start_nginx(
    upstreams: list[str], root: Path, port: int | None = None, host: str = "127.0.0.1", workers: int = 1
) -> dict[str, Any]:
    """Write the config and start nginx in the foreground of its own session; wait until it answers.

    :returns: the JSON handle: ``pid``, ``port``, ``endpoint``, ``config``, ``log``.
    :raises MlopsServiceError: nginx is missing, rejects the config or does not answer within 10 s.
    """
    binary = nginx_binary()
    root.mkdir(parents=True, exist_ok=True)
    (root / "tmp").mkdir(exist_ok=True)
    port = port or free_port()
    conf = root / "nginx.conf"
    conf.write_text(nginx_config(upstreams, f"{host}:{port}", root, workers))
    log = root / "nginx.out"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [binary, "-c", str(conf), "-p", str(root), "-g", "daemon off;"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    handle = {
        "pid": proc.pid,
        "port": port,
        "endpoint": f"http://{host}:{port}",
        "config": str(conf),
        "log": str(root / "error.log"),
    }
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise MlopsServiceError(
                f"nginx exited with {proc.returncode} at start: {_tail(log)} {_tail(root / 'error.log')}"
            )
        try:
            with urllib.request.urlopen(f"{handle['endpoint']}/lb/health", timeout=1):
                return handle
        except OSError:
            time.sleep(0.1)
    stop_nginx(handle)
    raise MlopsServiceError(f"nginx did not answer on port {port} within 10 s: {_tail(root / 'error.log')}")


def nginx_alive(handle: dict[str, Any]) -> bool:
    """Whether the balancer's master process still runs."""
    pid = handle.get("pid")
    if not pid:
        return False
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
        return state not in ("Z", "X") and b"nginx" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def stop_nginx(handle: dict[str, Any]) -> None:
    """Stop the balancer (its master and workers); one already gone is fine."""
    pid = handle.get("pid")
    if not pid or not nginx_alive(handle):
        return
    try:
        os.killpg(pid, signal.SIGQUIT)  # graceful: finish the requests in flight
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and nginx_alive(handle):
        time.sleep(0.05)
    if nginx_alive(handle):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _tail(path: Path, lines: int = 10) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""

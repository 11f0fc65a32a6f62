"""The model gateway vs ``mlflow models serve --env-manager local``, same model, same load, one run.

Run: ``.venv/bin/python benchmarks/bench_gateway.py`` (add ``--duration 10`` for longer runs).

The model is a LogisticRegression pipeline trained on scikit-learn's breast_cancer data and registered
in a throwaway SQLite MLflow store. Both servers run as their own processes (one worker each) on
127.0.0.1; the gateway writes its prediction log as it would in production. The load generator is
``wrk`` (Debian package ``wrk``) when installed, else a threaded keep-alive Python client; both servers
always get the same one. Scenarios: single-row requests at concurrency 1 and 8, 1000-row batches at
concurrency 8, then the gateway in shadow mode (a second version scoring a copy of every request)
against the gateway in single mode, alternating rounds so that machine noise hits both alike.
Replicas: two gateway replicas behind Debian's nginx (:mod:`airflow_mlops.deploy.load_balancer`) against
one replica alone (and one behind nginx, for the balancer's own cost), single rows at concurrency 16,
alternating rounds; the load generator runs on the same machine and takes its share of the cores.

Last line: ``gateway_speedup_c8=<ratio> batch_speedup=<ratio> shadow_cost=<fraction>
replica_scaling=<ratio>`` where the speedups are throughput ratios (gateway / mlflow), the shadow cost
is ``1 - shadow / single`` and the replica scaling is (2 replicas behind nginx) / (1 replica alone).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from airflow_mlops.core.net import free_port

TOKEN = "bench-admin-token"
# Loopback only: never route these calls through a proxy from the environment.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode}")
        try:
            with _HTTP.open(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def register_models(root: Path) -> tuple[str, list[dict], list[dict]]:
    """Two LogisticRegression versions of ``bc`` in a SQLite store; returns the URI and input rows."""
    import logging
    import warnings

    import mlflow  # noqa: F401 - configures its loggers on import, so quieten them after

    warnings.filterwarnings("ignore")  # MLflow's schema and pickle hints are not what this run reports
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    from sklearn.datasets import load_breast_cancer

    from airflow_mlops.core.model_logging import DatasetInfo, ensure_experiment, log_model_run
    from airflow_mlops.core.tracking import MlflowTarget
    from airflow_mlops.core.training import Candidate, train_model

    frame = load_breast_cancer(as_frame=True).frame
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with MlflowTarget(uri, artifact_location=str(root / "artifacts")).activate():
        eid = ensure_experiment("bench-gateway", str(root / "artifacts"))
        for c in (1.0, 0.5):
            est = Candidate("sklearn.linear_model.LogisticRegression", {"C": c, "max_iter": 1000})
            outcome = train_model(frame, "target", [est])
            log_model_run(outcome, model_name="bc", experiment_id=eid, dataset=DatasetInfo(frame, "sklearn"))
    features = frame.drop(columns="target")
    one = [features.iloc[0].to_dict()]
    batch = features.sample(1000, replace=True, random_state=0).to_dict(orient="records")
    return uri, one, batch


# --- load generators ---------------------------------------------------------------------------------
_WRK_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open(os.getenv("BENCH_BODY"), "rb"); wrk.body = f:read("*a"); f:close()
"""


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"cannot parse wrk latency {text!r}")
    value, unit = float(m.group(1)), m.group(2)
    return value * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def run_wrk(url: str, body_file: Path, conc: int, duration: float, lua: Path) -> Result:
    out = subprocess.run(
        ["wrk", f"-t{min(conc, 2)}", f"-c{conc}", f"-d{int(duration)}s", "--latency", "--timeout", "10s",
         "-s", str(lua), url],
        env={**os.environ, "BENCH_BODY": str(body_file)}, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(bad.group(1)) if bad else 0) + (sum(int(g) for g in sock.groups()) if sock else 0)
    return Result(rps, p50, p99, errors)


def run_python(url: str, body_file: Path, conc: int, duration: float, lua: Path) -> Result:
    """Fallback generator: ``conc`` threads, each with one keep-alive connection."""
    body = body_file.read_bytes()
    host, port_path = url.removeprefix("http://").split(":", 1)
    port, path = port_path.split("/", 1)
    lat: list[float] = []
    errors = [0]
    lock = threading.Lock()
    deadline = time.perf_counter() + duration

    def worker() -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        mine: list[float] = []
        bad = 0
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/" + path, body, {"Content-Type": "application/json"})
                r = conn.getresponse()
                r.read()
                if r.status != 200:
                    bad += 1
            except OSError:
                bad += 1
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=10)
            mine.append(time.perf_counter() - t0)
        with lock:
            lat.extend(mine)
            errors[0] += bad

    threads = [threading.Thread(target=worker) for _ in range(conc)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    lat.sort()
    return Result(
        len(lat) / elapsed,
        lat[len(lat) // 2] * 1e3,
        lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3,
        errors[0],
    )


# --- servers -----------------------------------------------------------------------------------------
def start_gateway(uri: str, root: Path, port: int, env: dict[str, str] | None = None) -> subprocess.Popen:
    root.mkdir(parents=True, exist_ok=True)
    config = root / "deployment.json"
    config.write_text(json.dumps({"model_name": "bc", "strategy": "single", "routes": [{"version": "1"}]}))
    log = open(root / "gateway.log", "wb")  # kept open for the process's life
    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow_mlops.serving", "--host", "127.0.0.1", "--port", str(port),
         "--tracking-uri", uri, "--config", str(config), "--log-dir", str(root / "predictions")],
        env={**os.environ, "MLOPS_GATEWAY_ADMIN_TOKEN": TOKEN, **(env or {})}, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{port}/ready", proc)
    except Exception:  # noqa: BLE001 - whatever failed, the log tail says why
        stop(proc)
        raise RuntimeError((root / "gateway.log").read_text()[-3000:]) from None
    return proc


def start_mlflow_serve(uri: str, root: Path, port: int) -> subprocess.Popen:
    log = open(root / "mlflow-serve.log", "wb")  # kept open for the process's life
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/bc/1", "--env-manager", "local",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        # mlflow execs `uvicorn` by name: the interpreter's bin folder must be on PATH.
        env={**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", proc)
    except Exception:  # noqa: BLE001 - whatever failed, the log tail says why
        stop(proc)
        raise RuntimeError((root / "mlflow-serve.log").read_text()[-3000:]) from None
    return proc


def put_deployment(port: int, config: dict) -> None:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/admin/deployment",
        data=json.dumps(config).encode(),
        method="PUT",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    with _HTTP.open(req, timeout=300) as r:
        assert r.status == 200, r.read()


def metric_total(port: int, name: str) -> float:
    with _HTTP.open(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


def replica_scenario(
    uri: str, root: Path, body: Path, lua: Path, load, duration: float, rounds: int
) -> dict[str, list[Result]]:
    """Two replicas behind nginx vs one replica alone vs one behind nginx, ABC/CBA rounds."""
    from airflow_mlops.deploy.load_balancer import start_nginx, stop_nginx

    ports = [free_port(), free_port()]
    env = {
        "MLOPS_GATEWAY_REQUEST_SECRET": "bench-replica-secret-0123456789",
        "MLOPS_GATEWAY_PEERS": ",".join(f"http://127.0.0.1:{p}" for p in ports),
    }
    procs, balancers = [], []
    runs: dict[str, list[Result]] = {"2 replicas + nginx": [], "1 replica alone": [], "1 replica + nginx": []}
    try:
        for i, p in enumerate(ports):
            procs.append(start_gateway(uri, root / f"replica-{i}", p, env))
        two = start_nginx([f"127.0.0.1:{p}" for p in ports], root / "lb-2", workers=1)
        one = start_nginx([f"127.0.0.1:{ports[0]}"], root / "lb-1", workers=1)
        balancers += [two, one]
        urls = {
            "2 replicas + nginx": f"{two['endpoint']}/predict",
            "1 replica alone": f"http://127.0.0.1:{ports[0]}/predict",
            "1 replica + nginx": f"{one['endpoint']}/predict",
        }
        names = list(urls)
        for i in range(rounds):
            for name in names if i % 2 == 0 else names[::-1]:
                load(urls[name], body, 16, 1.0, lua)  # warm-up (and nginx's upstream connections)
                runs[name].append(load(urls[name], body, 16, duration, lua))
    finally:
        for b in balancers:
            stop_nginx(b)
        for p in procs:
            stop(p)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per measurement")
    parser.add_argument(
        "--shadow-rounds",
        type=int,
        default=6,
        help="alternating single/shadow rounds (ABBA; 2 swung by +-8%%)",
    )
    parser.add_argument("--python-client", action="store_true", help="use the Python load generator")
    parser.add_argument("--replica-rounds", type=int, default=4, help="alternating replica-scenario rounds")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    use_wrk = shutil.which("wrk") is not None and not args.python_client
    load = run_wrk if use_wrk else run_python
    print(f"load generator: {'wrk' if use_wrk else 'python threads (install wrk for a lighter one)'}")
    print(f"machine: {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f} at start")

    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        root = Path(tmp)
        uri, one, batch = register_models(root)
        lua = root / "post.lua"
        lua.write_text(_WRK_LUA)
        bodies = {
            ("gateway", "one"): {"inputs": one[0]},
            ("gateway", "batch"): {"inputs": batch},
            ("mlflow", "one"): {"dataframe_records": one},
            ("mlflow", "batch"): {"dataframe_records": batch},
        }
        files = {}
        for (server, kind), body in bodies.items():
            files[(server, kind)] = root / f"{server}-{kind}.json"
            files[(server, kind)].write_text(json.dumps(body))
        gw_port, ml_port = free_port(), free_port()
        procs = []
        try:
            procs.append(start_gateway(uri, root, gw_port))
            procs.append(start_mlflow_serve(uri, root, ml_port))
            urls = {
                "gateway": f"http://127.0.0.1:{gw_port}/predict",
                "mlflow": f"http://127.0.0.1:{ml_port}/invocations",
            }
            results: dict[tuple[str, str], Result] = {}
            scenarios = [
                ("single row, c=1", "one", 1),
                ("single row, c=8", "one", 8),
                ("1000 rows, c=8", "batch", 8),
            ]
            for label, kind, conc in scenarios:
                for server in ("gateway", "mlflow"):
                    load(urls[server], files[(server, kind)], conc, 1.0, lua)  # warm-up
                    results[(server, label)] = load(
                        urls[server], files[(server, kind)], conc, args.duration, lua
                    )
            # Shadow mode: v1 answers, v2 scores a copy; alternate with single mode to share the noise.
            single_cfg = {"model_name": "bc", "strategy": "single", "routes": [{"version": "1"}]}
            shadow_cfg = {
                "model_name": "bc", "strategy": "shadow", "champion": "1",
                "routes": [{"version": "1"}, {"version": "2"}],
            }  # fmt: skip
            single_runs, shadow_runs = [], []
            order = [(single_cfg, single_runs), (shadow_cfg, shadow_runs)]
            for i in range(args.shadow_rounds):
                # ABBA order: a drift in machine load during the run hits both modes alike.
                for cfg, runs in order if i % 2 == 0 else order[::-1]:
                    put_deployment(gw_port, cfg)
                    load(urls["gateway"], files[("gateway", "one")], 8, 1.0, lua)
                    runs.append(
                        load(urls["gateway"], files[("gateway", "one")], 8, args.duration * 0.75, lua)
                    )
            put_deployment(gw_port, single_cfg)  # the shadow worker drains its queue meanwhile
            time.sleep(0.5)
            shadow_scored = metric_total(gw_port, "mlops_gateway_shadow_requests_total")
            shadow_agreed = metric_total(gw_port, "mlops_gateway_shadow_agreement_total")
            shadow_dropped = metric_total(gw_port, "mlops_gateway_shadow_dropped_total")
        finally:
            for p in procs:
                stop(p)
        replica_runs = replica_scenario(
            uri, root, files[("gateway", "one")], lua, load, args.duration, args.replica_rounds
        )
        log_rows = 0
        if (root / "predictions").exists():
            import pyarrow.parquet as pq

            log_rows = sum(pq.read_metadata(f).num_rows for f in (root / "predictions").rglob("*.parquet"))

    print()
    print(
        f"{'scenario':<18} {'server':<8} {'req/s':>9} {'rows/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}"
    )
    for label, kind, _ in scenarios:
        rows = 1000 if kind == "batch" else 1
        for server in ("gateway", "mlflow"):
            r = results[(server, label)]
            print(
                f"{label:<18} {server:<8} {r.rps:9.1f} {r.rps * rows:10.0f} {r.p50_ms:8.2f} {r.p99_ms:8.2f} {r.errors:6d}"
            )
    single_rps = statistics.mean(r.rps for r in single_runs)
    shadow_rps = statistics.mean(r.rps for r in shadow_runs)
    print(f"{'single mode, c=8':<18} {'gateway':<8} {single_rps:9.1f} (mean of {len(single_runs)} rounds)")
    print(f"{'shadow mode, c=8':<18} {'gateway':<8} {shadow_rps:9.1f} (mean of {len(shadow_runs)} rounds)")
    print(
        f"shadow copies scored: {shadow_scored:.0f}, agreeing: {shadow_agreed:.0f}, dropped: {shadow_dropped:.0f}; "
        f"prediction-log rows written: {log_rows}"
    )
    for name, runs in replica_runs.items():
        mean = statistics.mean(r.rps for r in runs)
        p99 = statistics.mean(r.p99_ms for r in runs)
        print(f"{name + ', c=16':<26} {mean:9.1f} req/s, p99 {p99:.2f} ms (mean of {len(runs)} rounds)")
    scaling = statistics.mean(r.rps for r in replica_runs["2 replicas + nginx"]) / statistics.mean(
        r.rps for r in replica_runs["1 replica alone"]
    )
    c8 = "single row, c=8"
    gw, ml = results[("gateway", c8)], results[("mlflow", c8)]
    print(
        f"targets (issue 13): c8 speedup >= 15 (got {gw.rps / ml.rps:.1f}), p99 <= mlflow/5 "
        f"({gw.p99_ms:.1f} vs {ml.p99_ms / 5:.1f} ms), batch speedup >= 5, shadow cost <= 0.05, "
        f"replica scaling >= 1.5 on 2 cores (got {scaling:.2f}; the load generator and nginx share those cores)"
    )
    errors = sum(r.errors for r in results.values()) + sum(r.errors for r in single_runs + shadow_runs)
    errors += sum(r.errors for runs in replica_runs.values() for r in runs)
    if errors:
        print(f"WARNING: {errors} failed requests during the benchmark")
    speedup = gw.rps / ml.rps
    batch = results[("gateway", "1000 rows, c=8")].rps / results[("mlflow", "1000 rows, c=8")].rps
    cost = 1.0 - shadow_rps / single_rps  # noise can make it slightly negative
    print(
        f"gateway_speedup_c8={speedup:.2f} batch_speedup={batch:.2f} shadow_cost={cost:.3f} "
        f"replica_scaling={scaling:.2f}"
    )


if __name__ == "__main__":
    main()

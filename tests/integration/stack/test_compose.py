"""docker-compose.yaml: accepted by Debian's docker-compose 1.29, complete, and consistently wired.

No image can be pulled here, so the stack is never started: these tests check the file with the real
``docker-compose`` binary (``config`` parses, validates against the compose spec and interpolates) and
check the wiring the binary does not (healthchecks, volumes, dependencies, env defaults, connections).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.stack.stack_files import COMPOSE_FILE, ENV_EXAMPLE, REPO_ROOT, compose

AIRFLOW_COMMANDS = {
    "api-server": "the API server and UI",
    "scheduler": "the scheduler",
    "dag-processor": "the DAG processor",
    "triggerer": "the triggerer",
    "celery worker": "a Celery worker",
}
OTHER_SERVICES = {"postgres", "redis", "mlflow", "gateway", "gateway-1", "gateway-2", "prometheus", "pushgateway",
                  "grafana"}  # fmt: skip
# The gateway's replicas behind the balancer (the service "gateway" every client calls).
REPLICAS = ("gateway-1", "gateway-2")
NGINX_CONF = REPO_ROOT / "docker" / "gateway" / "nginx.conf"
CONNECTIONS = {"mlflow_default": "mlflow", "prometheus_default": "prometheus",
               "pushgateway_default": "pushgateway", "dvc_default": "dvc"}  # fmt: skip
# Top-level keys that both docker-compose 1.29 and Compose v2 read the same way (no name/include/version).
PORTABLE_TOP_LEVEL = {"services", "volumes", "networks", "configs", "secrets"}


def _docker_compose() -> str:
    path = shutil.which("docker-compose")
    if path is None:
        pytest.skip("the docker-compose binary is absent: apt-get install -y docker-compose (CI installs it)")
    return path


def _config(*args: str, env_file: Path | None = None) -> dict[str, Any]:
    cmd = [_docker_compose(), "-f", str(COMPOSE_FILE)]
    if env_file is not None:
        cmd += ["--env-file", str(env_file)]
    # A fresh environment: only the file's own defaults (and the env file) decide the result.
    env = {"PATH": "/usr/bin:/bin:/usr/local/bin", "HOME": str(REPO_ROOT)}
    proc = subprocess.run(
        [*cmd, "config", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, f"docker-compose config failed:\n{proc.stderr}"
    return yaml.safe_load(proc.stdout)


@pytest.fixture(scope="module")
def resolved() -> dict[str, Any]:
    """The stack as docker-compose 1.29 resolves it (anchors merged, variables interpolated)."""
    return _config()


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return compose()


def _depends(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {d: "service_started" for d in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def test_docker_compose_config_accepts_the_file(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    assert OTHER_SERVICES <= set(services), sorted(services)
    # Conditions are what 1.29 must keep (older formats silently dropped them).
    assert _depends(services["gateway-1"])["airflow-init"] == "service_completed_successfully"
    assert _depends(services["airflow-scheduler"])["postgres"] == "service_healthy"


def test_only_portable_top_level_keys(raw: dict[str, Any]) -> None:
    keys = {k for k in raw if not k.startswith("x-")}
    assert keys <= PORTABLE_TOP_LEVEL, (
        f"not portable to docker-compose 1.29 and v2: {keys - PORTABLE_TOP_LEVEL}"
    )
    assert "version" not in raw and "name" not in raw and "include" not in raw


def test_airflow_components_run_from_the_provider_image(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    commands = {}
    for name, svc in services.items():
        build = svc.get("build") or {}
        if build.get("dockerfile") == "docker/airflow.Dockerfile":
            cmd = svc.get("command")
            commands[" ".join(cmd) if isinstance(cmd, list) else (cmd or "")] = name
            assert build["args"]["BASE_IMAGE"].startswith("apache/airflow:3.3"), name
            env = svc.get("environment") or {}
            assert "_PIP_ADDITIONAL_REQUIREMENTS" not in env, f"{name}: install the provider in the image"
    for command, what in AIRFLOW_COMMANDS.items():
        assert command in commands, f"no service runs {what} (`airflow {command}`)"
    init = services["airflow-init"]
    assert init["environment"]["_AIRFLOW_DB_MIGRATE"] == "true"
    assert init["restart"] == "no"
    assert services["airflow-scheduler"]["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"


def test_connections_come_from_environment(resolved: dict[str, Any]) -> None:
    for name, svc in resolved["services"].items():
        if (svc.get("build") or {}).get("dockerfile") != "docker/airflow.Dockerfile":
            continue
        env = svc["environment"]
        for conn_id, conn_type in CONNECTIONS.items():
            value = env.get(f"AIRFLOW_CONN_{conn_id.upper()}")
            assert value, f"{name}: no AIRFLOW_CONN_{conn_id.upper()}"
            conn = json.loads(value)
            assert conn["conn_type"] == conn_type, (name, conn_id, conn)
            host = conn["host"]
            if host.startswith("http"):
                target = re.match(r"https?://([\w-]+):(\d+)", host)
                assert target, host
                assert target.group(1) in resolved["services"], f"{conn_id} points at unknown {host}"


def test_every_service_has_a_healthcheck(resolved: dict[str, Any]) -> None:
    for name, svc in resolved["services"].items():
        check = svc.get("healthcheck")
        assert check, f"service {name} has no healthcheck"
        assert not check.get("disable"), f"service {name} disables its healthcheck"
        test = check["test"]
        assert isinstance(test, list) and test[0] in {"CMD", "CMD-SHELL"} and len(test) > 1, (name, test)


def test_depends_on_targets_exist_and_have_no_cycle(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    graph = {name: _depends(svc) for name, svc in services.items()}
    for name, deps in graph.items():
        for dep, condition in deps.items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            if condition == "service_healthy":
                assert services[dep].get("healthcheck"), f"{name} waits for {dep} healthy: no healthcheck"
            if condition == "service_completed_successfully":
                assert services[dep].get("restart") == "no", f"{name} waits for {dep} to exit: it restarts"

    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        if state.get(node) == 1:
            raise AssertionError(f"depends_on cycle: {' -> '.join([*path, node])}")
        if state.get(node) == 2:
            return
        state[node] = 1
        for dep in graph[node]:
            visit(dep, [*path, node])
        state[node] = 2

    for node in graph:
        visit(node, [])


def test_named_volumes_declared_and_used(raw: dict[str, Any]) -> None:
    declared = set(raw.get("volumes") or {})
    used: set[str] = set()
    for name, svc in raw["services"].items():
        for mount in svc.get("volumes") or []:
            source = mount.split(":", 1)[0] if isinstance(mount, str) else mount.get("source", "")
            if source.startswith((".", "/", "$")):
                # A bind mount of the repo: the file or folder must be in it.
                rel = source.removeprefix("./")
                assert (REPO_ROOT / rel).exists(), f"{name} mounts {source}, absent from the repository"
                continue
            assert source in declared, f"{name} mounts undeclared volume {source!r}"
            used.add(source)
    assert declared == used, f"declared but unused volumes: {declared - used}"


def test_shared_volumes_reach_the_services_that_share_them(resolved: dict[str, Any]) -> None:
    def mounts(svc: str) -> dict[str, str]:
        out = {}
        for m in resolved["services"][svc].get("volumes") or []:
            if isinstance(m, str):
                source, target = m.split(":")[:2]
            else:
                source, target = m["source"], m["target"]
            out[source] = target
        return out

    # The DriftSensor (worker) reads the prediction log the replicas write (one folder for all of them),
    # at the path they write it.
    dirs = {_arg(resolved["services"][r], "--log-dir") for r in REPLICAS}
    assert len(dirs) == 1, dirs
    (log_dir,) = dirs
    for replica in REPLICAS:
        assert mounts(replica)["predictions"] == log_dir
    assert mounts("airflow-worker")["predictions"] == log_dir
    assert resolved["services"]["airflow-worker"]["environment"]["MLOPS_PREDICTION_LOG_DIR"] == log_dir
    # MLflow serves artifacts from the volume it stores them in.
    mlflow = resolved["services"]["mlflow"]
    command = mlflow["command"]
    assert "--serve-artifacts" in command
    assert mounts("mlflow")["mlflow-artifacts"] == command[command.index("--artifacts-destination") + 1]
    assert mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://mlflow:")
    assert mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"].endswith("@postgres/mlflow")
    # Prometheus and Grafana read the repo's files where their configs say.
    assert (
        mounts("prometheus")[str(REPO_ROOT / "docker/prometheus/alerts.yml")] == "/etc/prometheus/alerts.yml"
    )


def _arg(service: dict[str, Any], flag: str) -> str:
    args = service["command"]
    assert flag in args, f"{flag} missing from {args}"
    return str(args[args.index(flag) + 1])


def test_gateway_replicas_run_the_contract_command(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    for name in REPLICAS:
        gateway = services[name]
        assert gateway["build"]["dockerfile"] == "docker/gateway.Dockerfile"
        assert gateway["entrypoint"] == ["python", "-m", "airflow_mlops.serving"]
        for flag in ("--host", "--port", "--tracking-uri", "--log-dir"):
            assert flag in gateway["command"], f"{name} command lacks {flag}"
        assert _arg(gateway, "--tracking-uri") == "http://mlflow:5000"
        assert gateway["environment"]["MLOPS_GATEWAY_ADMIN_TOKEN"]
        assert not gateway.get("ports"), f"{name} is reached through the balancer only"
        # Its own folder for what must not be shared: the routing and the counters it restores.
        folder = f"/opt/mlops/predictions/_gateway/{name}"
        assert _arg(gateway, "--state-file") == f"{folder}/deployment.json"
        assert _arg(gateway, "--counter-file") == f"{folder}/counters.json"
        assert _depends(gateway)["redis"] == "service_healthy"
    # Everything else is the same on every replica (one anchor): image, environment, user, checks.
    one, two = ({k: v for k, v in services[r].items() if k != "command"} for r in REPLICAS)
    assert one == two
    env = one["environment"]
    assert len(env["MLOPS_GATEWAY_REQUEST_SECRET"].encode()) >= 16
    peers = [f"http://{r}:{_arg(services[r], '--port')}" for r in REPLICAS]
    assert env["MLOPS_GATEWAY_PEERS"].split(",") == peers
    dedup = re.fullmatch(r"redis://([\w-]+):6379/(\d+)", env["MLOPS_GATEWAY_DEDUP_URL"])
    assert dedup and dedup.group(1) in services
    # Not Celery's database (the broker would share the keys).
    broker = services["airflow-worker"]["environment"]["AIRFLOW__CELERY__BROKER_URL"]
    assert not broker.endswith(f"/{dedup.group(2)}")


def test_raw_file_shares_one_replica_anchor(raw: dict[str, Any]) -> None:
    anchor = raw["x-gateway-replica"]
    assert "command" not in anchor
    for name in REPLICAS:
        service = raw["services"][name]
        # yaml.safe_load merges `<<: *gateway-replica`: every key of the anchor is there, unchanged.
        assert {k: service[k] for k in anchor} == anchor
    text = COMPOSE_FILE.read_text()
    assert text.count("<<: *gateway-replica") == len(REPLICAS)


def test_prometheus_scrapes_each_replica_not_the_balancer(resolved: dict[str, Any]) -> None:
    prom = yaml.safe_load((REPO_ROOT / "docker/prometheus/prometheus.yml").read_text())
    (job,) = [j for j in prom["scrape_configs"] if j["job_name"] == "mlops-gateway"]
    targets = [t for static in job["static_configs"] for t in static["targets"]]
    assert targets == [f"{r}:{_arg(resolved['services'][r], '--port')}" for r in REPLICAS]


def test_gateway_is_the_load_balancer(resolved: dict[str, Any], raw: dict[str, Any]) -> None:
    """Clients keep http://gateway:8080; behind it nginx, non-root, read-only, with the checked-in config."""
    lb = resolved["services"]["gateway"]
    assert raw["services"]["gateway"]["image"] == "${GATEWAY_LB_IMAGE:-nginx:1.27}"
    assert "build" not in lb
    assert lb["user"] == "101:101" and lb["read_only"] is True and "/tmp" in lb["tmpfs"]
    assert raw["services"]["gateway"]["ports"] == ["127.0.0.1:${GATEWAY_PORT:-8000}:8080"]
    assert {d: _depends(lb)[d] for d in REPLICAS} == dict.fromkeys(REPLICAS, "service_healthy")
    mounts = {m["target"] if isinstance(m, dict) else m.split(":")[1]: m for m in lb["volumes"]}
    assert "/etc/mlops/nginx.conf" in mounts
    assert str(mounts["/etc/mlops/nginx.conf"]).count(str(NGINX_CONF)) == 1
    script = lb["entrypoint"][-1]
    assert lb["entrypoint"][:2] == ["/bin/sh", "-c"]
    # The folder nginx_config was rendered for (pid, logs, temporary files) is made on the tmpfs first.
    assert script.startswith("mkdir -p /tmp/nginx/tmp && exec nginx -e stderr -c /etc/mlops/nginx.conf")
    assert "daemon off;" in script
    assert "/lb/health" in " ".join(lb["healthcheck"]["test"])
    # Every client still calls the service "gateway" on the port nginx listens on.
    env = resolved["services"]["airflow-worker"]["environment"]
    assert env["MLOPS_GATEWAY_URL"] == "http://gateway:8080"
    assert "listen 0.0.0.0:8080 " in NGINX_CONF.read_text()


def test_nginx_config_is_the_one_the_deployer_renders() -> None:
    """docker/gateway/nginx.conf is exactly what airflow_mlops.deploy.load_balancer writes for these
    replicas (regenerate it with that call when the renderer or the replicas change)."""
    from airflow_mlops.deploy.load_balancer import nginx_config

    expected = nginx_config([f"{r}:8080" for r in REPLICAS], "0.0.0.0:8080", Path("/tmp/nginx"))
    assert NGINX_CONF.read_text() == expected, (
        "docker/gateway/nginx.conf differs from nginx_config(...): regenerate it (see this test)"
    )


def test_containers_run_as_non_root(resolved: dict[str, Any]) -> None:
    # Images that drop root themselves (postgres, redis entrypoints) or default to a non-root user
    # (prom/*: nobody, grafana: 472, mlflow.Dockerfile: mlflow) need no `user:`.
    root_allowed = {"airflow-init"}  # chowns the shared volumes, then exits
    for name, svc in resolved["services"].items():
        user = str(svc.get("user", ""))
        if name in root_allowed:
            continue
        assert not user.startswith(("0", "root")), f"{name} runs as root"
        if (svc.get("build") or {}).get("dockerfile") in {
            "docker/airflow.Dockerfile",
            "docker/gateway.Dockerfile",
        }:
            assert user.split(":")[0] == "50000", f"{name}: run as the Airflow uid ({user!r})"


def test_ports_published_on_loopback_only(resolved: dict[str, Any]) -> None:
    for name, svc in resolved["services"].items():
        for port in svc.get("ports") or []:
            text = port if isinstance(port, str) else f"{port.get('host_ip', '')}:{port.get('published')}"
            assert text.startswith("127.0.0.1:"), f"{name} publishes {text} beyond this machine"


def _variables(text: str) -> dict[str, bool]:
    """``{VAR: has_default}`` for every ``${VAR}`` / ``${VAR:-x}`` / ``$VAR`` of a compose file."""
    text = text.replace("$$", "")  # escaped dollars belong to the container's shell
    out: dict[str, bool] = {}
    for m in re.finditer(r"\$\{(\w+)(:?[-?][^}]*)?\}|\$(\w+)", text):
        name = m.group(1) or m.group(3)
        out[name] = out.get(name, False) or bool(m.group(2) and m.group(2).lstrip(":").startswith("-"))
    return out


def _env_example() -> dict[str, str]:
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def test_every_variable_has_a_default_and_is_documented() -> None:
    variables = _variables(COMPOSE_FILE.read_text())
    documented = _env_example()
    for name, has_default in variables.items():
        assert has_default or name in documented, f"${{{name}}} has no default and is not in .env.example"
        assert name in documented, f"${{{name}}} is not documented in .env.example"
    assert not set(documented) - set(variables), (
        f".env.example sets unused {set(documented) - set(variables)}"
    )


def test_env_example_repeats_the_defaults(resolved: dict[str, Any], tmp_path: Path) -> None:
    """Copying .env.example to .env changes nothing: it documents the real defaults."""
    env_file = tmp_path / ".env"
    env_file.write_text(ENV_EXAMPLE.read_text())
    assert _config(env_file=env_file) == resolved


def test_a_setting_from_env_reaches_the_services(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("MLOPS_GATEWAY_ADMIN_TOKEN=s3cret\nAIRFLOW_UID=1234\nMLFLOW_PORT=5555\n")
    services = _config(env_file=env_file)["services"]
    for replica in REPLICAS:
        assert services[replica]["environment"]["MLOPS_GATEWAY_ADMIN_TOKEN"] == "s3cret"
    assert services["airflow-worker"]["environment"]["MLOPS_GATEWAY_ADMIN_TOKEN"] == "s3cret"
    assert services["airflow-scheduler"]["user"] == "1234:0"
    assert "1234:0" in services["airflow-init"]["command"][-1]
    ui = json.loads(services["airflow-worker"]["environment"]["AIRFLOW_CONN_MLFLOW_DEFAULT"])["extra"][
        "ui_url"
    ]
    assert ui == "http://localhost:5555"

"""Builds every image the compose stack needs, here, where no image registry is reachable.

Layers, each built once per content (the image carries the hash of its inputs in the label
``org.airflow-mlops.content-hash``; a build is skipped when an image with that label exists):

1. ``airflow-mlops-base:bookworm``: Debian bookworm from the apt mirror (``docker/build_base_image.sh``);
2. ``python-base``: a virtualenv with the heavy wheels, shared by the Airflow, MLflow and gateway images;
3. ``airflow-base``: a stand-in for the official ``apache/airflow`` image (user, paths, entrypoint);
4. the stand-ins for Postgres, Redis, Prometheus, Pushgateway and nginx (one Debian package stage, five
   targets);
5. the stack's own images, exactly as ``docker-compose.yaml`` declares their builds (context, Dockerfile,
   arguments), on the local bases above instead of the public ones.

Wheels are downloaded once, into a wheelhouse (``pip download``, pinned to the versions of this
machine's virtualenv, so that pickled models load across images), and served to the builds on loopback:
the builds run with ``--network host`` and install with ``--no-index``. Proxy CA certificates of this
machine are copied into ``docker/certs/`` (git-ignored) for the stack's Dockerfiles and removed after.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import yaml

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"
LABEL = "org.airflow-mlops.content-hash"
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
CACHE = Path(os.environ.get("MLOPS_STACK_CACHE", Path.home() / ".cache" / "airflow-mlops-stack"))

T = TypeVar("T")
BASE_IMAGE = "airflow-mlops-base:bookworm"
PYTHON_BASE = "airflow-mlops-stack/python-base:local"
AIRFLOW_BASE = "airflow-mlops-stack/airflow-base:3.3.2"
# Compose variable -> the stand-in's tag (the public defaults stay in the compose file).
STANDINS = {
    "POSTGRES_IMAGE": ("postgres", "airflow-mlops-stack/postgres:standin"),
    "REDIS_IMAGE": ("redis", "airflow-mlops-stack/redis:standin"),
    "PROMETHEUS_IMAGE": ("prometheus", "airflow-mlops-stack/prometheus:standin"),
    "PUSHGATEWAY_IMAGE": ("pushgateway", "airflow-mlops-stack/pushgateway:standin"),
    "GATEWAY_LB_IMAGE": ("nginx", "airflow-mlops-stack/nginx:standin"),
}
# The compose file's base-image variables, pointed at the local bases.
BASE_VARIABLES = {"AIRFLOW_BASE_IMAGE": AIRFLOW_BASE, "MLFLOW_BASE_IMAGE": PYTHON_BASE,
                  "GATEWAY_BASE_IMAGE": PYTHON_BASE}  # fmt: skip

# What the official python and Airflow images would give the stack's Dockerfiles (their pip installs then
# find everything satisfied and download nothing but build backends).
PYTHON_REQUIREMENTS = [
    "mlflow", "psycopg2-binary", "scikit-learn", "pandas", "pyarrow", "scipy", "starlette", "uvicorn",
    "uvloop", "httptools", "orjson", "prometheus-client", "httpx", "cloudpickle", "skops", "pyyaml",
    # The gateway's feedback dedup store (MLOPS_GATEWAY_DEDUP_URL); async-timeout: see AIRFLOW_REQUIREMENTS.
    "redis", "async-timeout",
    "setuptools>=77", "wheel",
]  # fmt: skip
# async-timeout: redis needs it on Python < 3.11.3 (Debian's 3.11.2), not on this machine's newer Python.
# asyncpg and the postgres provider: in the official image; Airflow 3.3 opens an async engine on Postgres.
AIRFLOW_REQUIREMENTS = [
    "apache-airflow-providers-celery",
    "apache-airflow-providers-fab",
    "apache-airflow-providers-postgres",
    "asyncpg",
    "dvc",
    "async-timeout",
]
AIRFLOW_VERSION = "3.3.2"


@dataclass
class Built:
    """One image: its tag, whether it was built now (else found by its content hash), and the seconds."""

    tag: str
    built: bool
    seconds: float


class BuildError(RuntimeError):
    """An image build failed; the message holds the tail of its log."""


def _docker(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise BuildError(f"docker {' '.join(args[:3])} failed: {proc.stderr.strip()[-2000:]}")
    return proc


def image_id(ref: str) -> str | None:
    """The id of a local image, or None."""
    proc = _docker("image", "inspect", "--format", "{{.Id}}", ref, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def _has_hash(tag: str, digest: str) -> bool:
    """Whether ``tag`` is an image built from exactly these inputs.

    Only the tagged image is asked: images built FROM it (and the unnamed stages of multi-stage builds)
    inherit its label, so a search by label alone can find a child and re-tag the wrong image.
    """
    proc = _docker(
        "image", "inspect", "--format", f'{{{{index .Config.Labels "{LABEL}"}}}}', tag, check=False
    )
    return proc.returncode == 0 and proc.stdout.strip() == digest


def _hash(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:24]


def _files_digest(root: Path, files: list[Path]) -> list[str | bytes]:
    out: list[str | bytes] = []
    for path in sorted(files):
        out += [path.relative_to(root).as_posix(), path.read_bytes(), oct(path.stat().st_mode & 0o111)]
    return out


def build_image(
    tag: str,
    dockerfile: Path,
    context: Path,
    *,
    args: dict[str, str] | None = None,
    key: list[str | bytes] | None = None,
    target: str | None = None,
    uncached_args: dict[str, str] | None = None,
    timeout: float = 1800,
) -> Built:
    """Build ``tag`` with the legacy builder, unless an image with the same content hash exists.

    :param key: everything else the image depends on (file contents, base image ids).
    :param uncached_args: build arguments that do not change the result (a loopback URL).
    """
    args = args or {}
    digest = _hash(
        dockerfile.read_bytes(), target or "", *sorted(f"{k}={v}" for k, v in args.items()), *(key or [])
    )
    started = time.monotonic()
    if _has_hash(tag, digest):
        return Built(tag, False, time.monotonic() - started)
    cmd = ["docker", "build", "--network", "host", "--rm", "--force-rm", "-t", tag, "-f", str(dockerfile),
           "--label", f"{LABEL}={digest}"]  # fmt: skip
    if target:
        cmd += ["--target", target]
    for k, v in {**args, **(uncached_args or {})}.items():
        cmd += ["--build-arg", f"{k}={v}"]
    cmd.append(str(context))
    CACHE.mkdir(parents=True, exist_ok=True)
    log = CACHE / f"build-{tag.replace('/', '_').replace(':', '_')}.log"
    with log.open("w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout,
                              env={**os.environ, "DOCKER_BUILDKIT": "0"})  # fmt: skip
    if proc.returncode != 0:
        raise BuildError(f"building {tag} failed (log {log}):\n{log.read_text()[-4000:]}")
    return Built(tag, True, time.monotonic() - started)


def constraints() -> str:
    """The versions of this machine's virtualenv, as pip constraints (the images match the host)."""
    frozen = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"], check=True,
                            capture_output=True, text=True, timeout=120).stdout  # fmt: skip
    keep = []
    for line in frozen.splitlines():
        name = line.split("==")[0].strip().lower()
        if "==" in line and name not in {"pip", "airflow-provider-mlops"}:
            keep.append(line.strip())
    return "\n".join(sorted(keep)) + "\n"


def wheelhouse(pins: str) -> Path:
    """A folder with every wheel the images install (made once per set of pins, from pip's sources)."""
    requirements = [*PYTHON_REQUIREMENTS, f"apache-airflow=={AIRFLOW_VERSION}", *AIRFLOW_REQUIREMENTS, "pip"]
    folder = CACHE / f"wheels-{_hash(pins, *requirements)}"
    if (folder / ".complete").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "constraints.txt").write_text(pins)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "-d", str(folder),
         "-c", str(folder / "constraints.txt"), *requirements],
        capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    if proc.returncode != 0:
        raise BuildError(f"pip download failed: {proc.stderr[-3000:]}")
    # A few packages publish only a source archive (antlr4-python3-runtime): wheel them once here.
    sdists = [p for p in folder.iterdir() if p.name.endswith((".tar.gz", ".zip", ".tar.bz2"))]
    if sdists:
        proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(folder),
                               *map(str, sdists)], capture_output=True, text=True, timeout=600)  # fmt: skip
        if proc.returncode != 0:
            raise BuildError(f"pip wheel failed: {proc.stderr[-3000:]}")
        for path in sdists:
            path.unlink()
    (folder / ".complete").write_text("")
    return folder


def resolve(folder: Path, requirements: list[str], python_version: str) -> str:
    """The complete set (``name==version`` lines) that ``requirements`` need, resolved here, offline,
    from the wheelhouse alone. The images install exactly that with ``--no-deps``: nothing is left for
    their pip to resolve (pip backtracked for many minutes over the packages already in the base)."""
    import json
    import tempfile

    out = folder / f"lock-{_hash(python_version, *requirements)}.txt"
    if out.exists():
        return out.read_text()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "-q", "--no-index",
             "--find-links", str(folder), "--report", str(report), "--only-binary=:all:",
             "--python-version", python_version, *requirements],
            capture_output=True, text=True, timeout=600, env={**env, "PIP_CONFIG_FILE": os.devnull},
        )  # fmt: skip
        if proc.returncode != 0:
            raise BuildError(f"resolving {requirements} from the wheelhouse failed: {proc.stderr[-3000:]}")
        items = json.loads(report.read_text())["install"]
    pins = sorted(f"{i['metadata']['name'].lower()}=={i['metadata']['version']}" for i in items)
    out.write_text("\n".join(pins) + "\n")
    return out.read_text()


@contextmanager
def serve(folder: Path) -> Iterator[str]:
    """Serve ``folder`` over HTTP on loopback for the duration; yields its URL."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def _context(
    name: str, sources: list[str], files: dict[str, str] | None = None
) -> tuple[Path, list[str | bytes]]:
    """A small build context: ``sources`` from this folder plus generated ``files``; and its digest."""
    folder = CACHE / "contexts" / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for source in sources:
        shutil.copy2(HERE / source, folder / source)
    for rel, data in (files or {}).items():
        (folder / rel).write_text(data)
    return folder, _files_digest(folder, [p for p in folder.iterdir() if p.is_file()])


def _repo_context_files(context: Path) -> list[Path]:
    """The files docker sends for ``context`` (the repository): what .dockerignore keeps."""
    ignore = context / ".dockerignore"
    rules = [x.strip() for x in ignore.read_text().splitlines() if x.strip() and not x.startswith("#")]
    kept = [r[1:].rstrip("/") for r in rules if r.startswith("!")]
    files: list[Path] = []
    for top in kept:
        path = context / top
        candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        files += [p for p in candidates if "__pycache__" not in p.parts and p.suffix != ".pyc"]
    return files


@contextmanager
def host_certs() -> Iterator[list[Path]]:
    """Copy this machine's extra CA certificates into docker/certs/ for the builds, and remove them after."""
    dest = REPO_ROOT / "docker" / "certs"
    made_dir = not dest.exists()
    dest.mkdir(exist_ok=True)
    copied = []
    for cert in sorted(HOST_CA_DIR.glob("*.crt")):
        target = dest / cert.name
        if not target.exists():
            shutil.copy2(cert, target)
            copied.append(target)
    try:
        yield copied
    finally:
        for path in copied:
            path.unlink(missing_ok=True)
        if made_dir and not any(dest.iterdir()):
            dest.rmdir()


def compose_builds(env: dict[str, str]) -> dict[str, dict]:
    """``{image: build}`` of every service the compose file builds, as docker-compose resolves it."""
    proc = subprocess.run(["docker-compose", "-f", str(COMPOSE_FILE), "config"], capture_output=True,
                          text=True, timeout=60, env=env, cwd=REPO_ROOT)  # fmt: skip
    if proc.returncode != 0:
        raise BuildError(f"docker-compose config failed: {proc.stderr}")
    services = yaml.safe_load(proc.stdout)["services"]
    return {svc["image"]: svc["build"] for svc in services.values() if svc.get("build")}


def stack_env() -> dict[str, str]:
    """The compose variables that point the stack at the local images."""
    return {**BASE_VARIABLES, **{var: tag for var, (_, tag) in STANDINS.items()}}


def _base_image() -> Built:
    started = time.monotonic()
    proc = subprocess.run(["bash", str(REPO_ROOT / "docker" / "build_base_image.sh"), BASE_IMAGE],
                          capture_output=True, text=True, timeout=1200)  # fmt: skip
    if proc.returncode != 0:
        raise BuildError(f"docker/build_base_image.sh failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return Built(BASE_IMAGE, "already exists" not in proc.stdout, time.monotonic() - started)


def _standins(base_id: str) -> list[Built]:
    """The stand-ins: one package stage (built by the first target, cached for the others)."""
    stand_ctx, stand_key = _context("standins", ["standins.Dockerfile", "postgres-entrypoint.sh"])
    return [build_image(tag, stand_ctx / "standins.Dockerfile", stand_ctx, target=target,
                        args={"BASE_IMAGE": BASE_IMAGE}, key=[base_id, *stand_key])
            for target, tag in STANDINS.values()]  # fmt: skip


def _timed(label: str, fn: Callable[..., T], *args: object) -> tuple[T, Built]:
    started = time.monotonic()
    out = fn(*args)
    return out, Built(label, True, time.monotonic() - started)


def build_all(env: dict[str, str] | None = None) -> list[Built]:
    """Build (or find) every image of the stack; returns what was done, the wall time last.

    Independent work runs side by side (it waits on the network and the disk as much as on the CPU):
    the wheel downloads during the debootstrap; the stand-ins during the Python base; the MLflow and
    gateway images (on the Python base) during the Airflow base. The critical path is base -> Python
    base -> Airflow base -> Airflow image.
    """
    env = {**os.environ, **stack_env(), **(env or {})}
    started = time.monotonic()
    done: list[Built] = []
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="stack-build") as pool:
        wheels_job = pool.submit(_timed, "wheelhouse (pip download)", wheelhouse, constraints())
        done.append(_base_image())
        base_id = image_id(BASE_IMAGE) or ""
        standins_job = pool.submit(_standins, base_id)
        wheels, wheels_built = wheels_job.result()
        t0 = time.monotonic()
        python_version = _docker("run", "--rm", "--network", "none", BASE_IMAGE, "python3", "-c",
                                 "import platform; print(platform.python_version())").stdout.strip()  # fmt: skip
        python_lock = resolve(wheels, PYTHON_REQUIREMENTS, python_version)
        airflow_lock = resolve(wheels, [*PYTHON_REQUIREMENTS, f"apache-airflow=={AIRFLOW_VERSION}",
                                        *AIRFLOW_REQUIREMENTS], python_version)  # fmt: skip
        wheels_built.seconds += time.monotonic() - t0
        done.append(
            Built(f"{wheels_built.tag} and locks (Python {python_version})", True, wheels_built.seconds)
        )
        py_ctx, py_key = _context(
            "python-base", ["python-base.Dockerfile"], {"requirements-python.txt": python_lock}
        )
        af_ctx, af_key = _context("airflow-base", ["airflow-base.Dockerfile", "airflow-entrypoint.sh"],
                                  {"requirements-airflow.txt": airflow_lock})  # fmt: skip
        with serve(wheels) as url, host_certs():
            done.append(build_image(PYTHON_BASE, py_ctx / "python-base.Dockerfile", py_ctx,
                                    args={"BASE_IMAGE": BASE_IMAGE}, key=[base_id, *py_key],
                                    uncached_args={"WHEELS_URL": url}))  # fmt: skip
            jobs = {AIRFLOW_BASE: pool.submit(
                build_image, AIRFLOW_BASE, af_ctx / "airflow-base.Dockerfile", af_ctx,
                args={"BASE_IMAGE": PYTHON_BASE, "AIRFLOW_VERSION": AIRFLOW_VERSION},
                key=[image_id(PYTHON_BASE) or "", *af_key], uncached_args={"WHEELS_URL": url})}  # fmt: skip
            files = _files_digest(REPO_ROOT, _repo_context_files(REPO_ROOT))
            # The stack's own images on the Python base start now; those on the Airflow base wait for it.
            for image, build in sorted(compose_builds(env).items(),
                                       key=lambda kv: (kv[1].get("args") or {}).get("BASE_IMAGE") == AIRFLOW_BASE):  # fmt: skip
                base = str((build.get("args") or {}).get("BASE_IMAGE", ""))
                if base in jobs:
                    jobs[base].result()
                jobs[image] = pool.submit(_stack_image, image, build, files)
            done += [job.result() for job in jobs.values()]
        done[1:1] = standins_job.result()
    done.append(
        Built("all images, side by side (wall time)", any(b.built for b in done), time.monotonic() - started)
    )
    return done


def _stack_image(image: str, build: dict, files: list[str | bytes]) -> Built:
    """One of the stack's own images, with the context, Dockerfile and arguments compose resolved."""
    context = Path(build.get("context", REPO_ROOT))
    args = {k: str(v) for k, v in (build.get("args") or {}).items()}
    bases = [image_id(v) or v for k, v in sorted(args.items()) if k == "BASE_IMAGE"]
    return build_image(image, context / build.get("dockerfile", "Dockerfile"), context, args=args,
                       key=[*bases, *files])  # fmt: skip


def report(done: list[Built]) -> str:
    """A table of the builds: image, built or cached, seconds (the last line: the wall time)."""
    lines = [f"  {'built' if b.built else 'cached':<6} {b.seconds:7.1f}s  {b.tag}" for b in done]
    return "\n".join(["stack images:", *lines])


if __name__ == "__main__":
    print(report(build_all()))

"""The releases view (airflow_mlops.plugins.releases) on a real api-server, for a real deployment made here:
a real MLflow server, ``tests/deployment/releases_dag.py`` run with ``dag.test()`` against the same
metadata database (v1 trained, gated, deployed as champion by a real gateway process; v2 gated and held
as a 30% canary; a drift report logged), real traffic with ground truth through the gateway. Then the
page through HTTP (JSON and HTML, authenticated and not) and in headless Chromium, whose screenshot is
kept under ``build/artifacts/``; last, the gateway and MLflow are stopped and the page says
"unreachable" within seconds.

Only the api-server runs (no scheduler): ``dag.test()`` executes the tasks, which is all the view needs.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deployment.browser import Browser
from tests.deployment.harness import REPO_ROOT, Airflow, kill_marked, marked_processes, tail
from tests.servers import free_port, start_mlflow_server, stop

ARTIFACTS = REPO_ROOT / "build" / "artifacts"
SCREENSHOT = ARTIFACTS / "releases_view.png"
IN_UI = ARTIFACTS / "releases_view_in_airflow_ui.png"
VIEW = "/mlops-releases/"


def _data(root: Path) -> dict[str, Path]:
    """breast_cancer split in two: training data, and the pool that production traffic comes from; plus
    that pool shifted (the drift check's current data)."""
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame.sample(frac=1.0, random_state=3).reset_index(drop=True)
    cut = int(len(frame) * 0.6)
    paths = {"train": root / "train.csv", "pool": root / "pool.csv", "shifted": root / "shifted.csv"}
    frame.iloc[:cut].to_csv(paths["train"], index=False)
    pool = frame.iloc[cut:]
    pool.to_csv(paths["pool"], index=False)
    shifted = pool.copy()
    for col in [c for c in shifted.columns if c.startswith(("mean", "worst"))]:
        shifted[col] = shifted[col] * 1.5
    shifted.to_csv(paths["shifted"], index=False)
    return paths


@pytest.fixture(scope="module")
def view(postgres, tier_dir) -> Iterator[dict]:
    """An api-server with the provider's plugin, MLflow, and the release made by releases_dag.py."""
    root = tier_dir("releases-view")
    paths = _data(root)
    model = f"releases_{secrets.token_hex(3)}"
    port, feedback = free_port(), secrets.token_urlsafe(16)
    env = {
        "MLOPS_MODEL_NAME": model,
        "MLOPS_UI_TRAIN": str(paths["train"]),
        "MLOPS_UI_CURRENT": str(paths["shifted"]),
        "MLOPS_GATEWAY_PORT": str(port),
        "MLOPS_PREDICTION_LOG_DIR": str(root / "predictions"),
        "MLOPS_DEPLOY_STATE_DIR": str(root / "deployments"),
        "MLOPS_GATEWAY_FEEDBACK_TOKEN": feedback,
    }
    af = Airflow(root, postgres.create_database("airflow_releases"), "LocalExecutor", env)
    shutil.copy(
        Path(__file__).with_name("releases_dag.py"),
        Path(af.env["AIRFLOW__CORE__DAGS_FOLDER"]) / "mlops_releases_view.py",
    )
    mlflow_proc = None
    try:
        af.migrate()
        mlflow_proc, mlflow_url = start_mlflow_server(root / "mlflow")
        af.env["AIRFLOW_CONN_MLFLOW_DEFAULT"] = json.dumps({"conn_type": "mlflow", "host": mlflow_url})
        af.start("api-server", ["api-server", "--host", "127.0.0.1", "--port", str(af.api_port)])
        started = time.monotonic()
        run = subprocess.run(
            [sys.executable, "-c", "import sys; from airflow.dag_processing.dagbag import DagBag; "
             "bag = DagBag(dag_folder=sys.argv[1]); "
             "assert not bag.import_errors, bag.import_errors; "
             "run = bag.dags['mlops_releases_view'].test(); print(run.run_id, run.state)",
             str(Path(af.env["AIRFLOW__CORE__DAGS_FOLDER"]) / "mlops_releases_view.py")],
            env=af.env, cwd=root, capture_output=True, text=True, timeout=420,
        )  # fmt: skip
        (af.logs / "dag-test.log").write_text(run.stdout + run.stderr)
        assert run.returncode == 0 and run.stdout.strip().endswith("success"), (
            f"the release DAG did not succeed:\n{(run.stdout + run.stderr)[-6000:]}"
        )
        release_s = time.monotonic() - started
        run_id = run.stdout.strip().splitlines()[-1].rsplit(" ", 1)[0]
        af.wait(lambda: af._health_ok(), 300, "the api-server to answer /api/v2/monitor/health")
        yield {"airflow": af, "model": model, "endpoint": f"http://127.0.0.1:{port}", "feedback": feedback,
               "pool": paths["pool"], "mlflow": mlflow_proc, "release_s": release_s, "run_id": run_id}  # fmt: skip
    finally:
        af.stop()
        kill_marked(af.marker)
        if mlflow_proc is not None:
            stop(mlflow_proc)


def _traffic(endpoint: str, feedback: str, pool: Path, requests: int = 60) -> dict[str, int]:
    """Batches of 4 pool rows through the gateway, each answered with its true labels; rows per version."""
    import pandas as pd

    from airflow_mlops.serving.client import GatewayClient

    frame = pd.read_csv(pool)
    served: dict[str, int] = {}
    with GatewayClient(endpoint, feedback_token=feedback, timeout=10) as gw:
        for i in range(requests):
            rows = frame.iloc[(i * 4) % (len(frame) - 4) :][:4]
            answer = gw.predict(rows.drop(columns=["target"]).to_dict(orient="records"))
            gw.feedback(answer["request_id"], labels=rows["target"].tolist())
            served[str(answer["model_version"])] = served.get(str(answer["model_version"]), 0) + 4
    return served


def _get(af: Airflow, path: str, **kwargs):
    import httpx

    with httpx.Client(base_url=af.url, timeout=30, trust_env=False, follow_redirects=False) as c:
        return c.get(path, **kwargs)


def _png_facts(path: Path) -> tuple[tuple[int, int], int]:
    """``(size, distinct colours)`` of a PNG (a blank page has one or two colours)."""
    from PIL import Image

    with Image.open(path) as img:
        colours = img.convert("RGB").getcolors(maxcolors=1 << 20)
        return img.size, len(colours) if colours is not None else 1 << 20


@pytest.mark.timeout(1500)  # module set-up included
def test_the_releases_view_shows_a_real_release(view):
    af: Airflow = view["airflow"]
    model, endpoint = view["model"], view["endpoint"]
    served = _traffic(endpoint, view["feedback"], view["pool"])
    assert set(served) == {"1", "2"}, f"the 70/30 routing served only {served}"

    # The plugin is registered, with its external view in the UI's Browse menu.
    plugins = af.api("GET", "/plugins")["plugins"]
    ours = next(p for p in plugins if p["name"] == "airflow_mlops")
    assert any(
        v["url_route"] == "mlops-releases" and v["href"] == "mlops-releases/" for v in ours["external_views"]
    )

    # Authenticated through Airflow's auth manager: nothing without a login.
    assert _get(af, f"{VIEW}api/models").status_code == 401
    assert _get(af, f"{VIEW}api/models", headers={"Authorization": "Bearer not-a-jwt"}).status_code in (
        401,
        403,
    )
    anonymous = _get(af, VIEW)
    assert anonymous.status_code == 307 and "/auth/login" in anonymous.headers["location"], anonymous.headers
    assert model not in anonymous.text

    token = af.token()
    started = time.monotonic()
    data = _get(af, f"{VIEW}api/models", headers={"Authorization": f"Bearer {token}"}).json()
    json_s = time.monotonic() - started
    started = time.monotonic()
    _get(af, f"{VIEW}api/models", headers={"Authorization": f"Bearer {token}"}).raise_for_status()
    json_again_s = time.monotonic() - started
    assert data["mlflow"]["status"] == "ok", data["mlflow"]
    m = next(x for x in data["models"] if x["name"] == model)
    assert m["champion"] == "1" and m["aliases"]["champion"] == "1", m["aliases"]
    assert [v["version"] for v in m["versions"]] == ["2", "1"]
    for v in m["versions"]:
        gate = next(g for g in v["gates"] if g["name"] == "offline")
        assert gate["status"] == "passed", gate
        assert {(r["metric"], r["check"]) for r in gate["details"]["rows"]} >= {
            ("f1", "min"),
            ("roc_auc", "min"),
        }
        assert v["metrics"]["f1"] > 0.8 and v["run_url"].startswith("http") and v["model_version_url"]
    v2_gate = next(g for g in m["versions"][0]["gates"] if g["name"] == "offline")
    assert v2_gate["details"]["baseline"] == {"alias": "champion", "version": "1"}, v2_gate["details"]
    assert [(h["action"], h["version"]) for h in m["history"]] == [("deploy", "2"), ("promote", "1")]
    gw = m["gateway"]
    assert gw["status"] == "ok" and gw["endpoint"] == endpoint, gw
    weights = {r["version"]: r["weight"] for r in gw["versions"]}
    assert weights == {"1": pytest.approx(0.7), "2": pytest.approx(0.3)}, gw
    live = {r["version"]: r for r in gw["versions"]}
    for version, rows in served.items():
        assert live[version]["samples"] == rows and live[version]["requests"] == rows / 4, live
        assert 0.5 < live[version]["accuracy"] <= 1.0, live
    drift = m["drift"]
    assert drift["drift_detected"] and drift["model_version"] == "1", drift
    assert drift["report_url"].endswith("/artifactPath/drift/report.html")
    assert json.dumps(data).count(view["feedback"]) == 0  # no secret on the page

    # The HTML page, with the UI's cookie, as a browser gets it.
    page = _get(af, VIEW, cookies={"_token": token})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for needle in (model, "champion v1", "Champion history", "gate offline", "30%", "70%", "drift report"):
        assert needle in page.text, needle

    # Headless Chromium: the rendered page, its screenshot kept as an artifact.
    with Browser() as browser:
        browser.set_cookie(af.url + "/", "_token", token)
        status = browser.open(af.url + VIEW)
        text = browser.text()
        browser.screenshot(SCREENSHOT)
        # The same page inside the Airflow UI (its React app renders the external view in an iframe).
        browser.open(f"{af.url}/plugin/mlops-releases", settle=0)
        frame = browser.wait_for("(document.querySelector('iframe') || {}).src", timeout=60)
        framed = browser.wait_for(
            "(() => { const f = document.querySelector('iframe'); const d = f && f.contentDocument;"
            " return d && d.body ? d.body.innerText : ''; })()",
            timeout=60,
        )
        browser.screenshot(IN_UI)
    assert status == 200, text[:500]
    assert frame and frame.rstrip("/").endswith("/mlops-releases"), frame
    assert model in (framed or ""), f"the UI's iframe did not render the view: {(framed or '')[:500]}"
    for needle in ("Model releases", model, "v2", "@champion", "promote", "passed", "live accuracy"):
        assert needle in text, f"{needle!r} not rendered:\n{text[:3000]}"
    size, colours = _png_facts(SCREENSHOT)
    assert size == (1300, 1400) and SCREENSHOT.stat().st_size > 30_000 and colours > 50, (size, colours)
    print(f"\nreleases view screenshot: {SCREENSHOT}, in the Airflow UI: {IN_UI} ({SCREENSHOT.stat().st_size} bytes, {colours} colours); "
          f"release DAG {view['release_s']:.0f}s, view JSON {json_s * 1000:.0f} ms, again {json_again_s * 1000:.0f} ms")  # fmt: skip

    # The extra links of the release's tasks, as the UI's task page gets them (REST API).
    links = {
        task: af.api("GET", f"/dags/mlops_releases_view/dagRuns/{view['run_id']}/taskInstances/{task}/links")[
            "extra_links"
        ]
        for task in ("train_v2", "gate_v2", "canary_v2", "drift")
    }
    v2_url = m["versions"][0]["model_version_url"]
    assert links["train_v2"]["MLflow model version"] == v2_url and links["train_v2"]["MLflow run"], links
    assert links["gate_v2"]["MLflow model version"] == v2_url, links
    assert links["canary_v2"]["Gateway metrics"] == f"{endpoint}/metrics", links
    assert links["drift"]["Drift report"] == drift["report_url"], links

    # A dead gateway, then a dead MLflow: the page still answers within seconds and says so.
    for pid in [p for p in marked_processes(af.marker) if "airflow_mlops.serving" in _cmdline(p)]:
        os.kill(pid, signal.SIGKILL)  # the gateway the deploy task started
    started = time.monotonic()
    data = _get(af, f"{VIEW}api/models", headers={"Authorization": f"Bearer {token}"}).json()
    assert time.monotonic() - started < 10
    gw = next(x for x in data["models"] if x["name"] == model)["gateway"]
    assert gw["status"] == "unreachable" and gw["endpoint"] in gw["error"], gw
    stop(view["mlflow"])
    started = time.monotonic()
    page = _get(af, VIEW, cookies={"_token": token})
    assert time.monotonic() - started < 10 and page.status_code == 200
    assert "unreachable" in page.text and "MLflow" in page.text, page.text[:2000]
    assert tail(af.logs / "api-server.log").count("Traceback") == 0, tail(af.logs / "api-server.log")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""

"""The releases view: per registered model, its versions, gate verdicts with their tables, the champion
history from the promotion ledger, the gateway's routing weights and live metrics per version, and links
to the MLflow run, the model version and the latest drift report.

A FastAPI app that the plugin (:mod:`airflow_mlops.plugins`) mounts on the api-server at
:data:`URL_PREFIX`, shown in the Airflow UI as the external view "Model releases" (Browse menu):

* ``GET /mlops-releases/``: the page (server-rendered HTML, no JavaScript);
* ``GET /mlops-releases/api/models``: the same data as JSON.

Both need an Airflow login, checked by the api-server's own dependency
(``airflow.api_fastapi.core_api.security.get_user``: a bearer token, or the UI's ``_token`` cookie) and
the auth manager's permission to see plugins. Without a login the JSON answers 401 and the page
redirects to the auth manager's login page.

Where the data comes from (``[mlops]`` options of ``airflow.cfg``, or ``AIRFLOW__MLOPS__*``):

* ``releases_mlflow_conn_id`` (default ``mlflow_default``): the MLflow registry, through
  :class:`~airflow_mlops.hooks.mlflow.MlflowHook`;
* the gateway of each model: the endpoint of its newest ledger entry; its ``/metrics`` page needs no
  token. ``releases_gateway_conn_id`` (optional): a connection to one gateway whose password is its
  admin token; only that gateway gets the token (for ``GET /admin/deployment``: strategy and routes),
  never an endpoint read from the registry.

Nothing secret reaches the page: URLs are shown without credentials, tokens never. Every source has a
bound (MLflow probed in 2 s and read within :data:`MLFLOW_BUDGET` s, each gateway within
:data:`GATEWAY_TIMEOUT` s); what does not answer is shown as unreachable and the rest still renders.
"""

from __future__ import annotations

import asyncio
import html
import json
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from airflow_mlops.links.drift import report_url

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from airflow_mlops.core.tracking import MlflowTarget

URL_PREFIX = "/mlops-releases"
# Relative (no leading slash), as Airflow's UI resolves it against its base URL behind any proxy.
EXTERNAL_VIEW: dict[str, Any] = {
    "name": "Model releases",
    "href": "mlops-releases/",
    "destination": "nav",
    "category": "browse",
    "url_route": "mlops-releases",
}
GATE_PREFIX = "mlops.gate."  # airflow_mlops.core.gate.evaluate.TAG_PREFIX (not imported: it pulls yaml)
DRIFT_EXPERIMENT = "mlops-drift"
MLFLOW_PROBE_TIMEOUT = 2.0
MLFLOW_BUDGET = 15.0
GATEWAY_TIMEOUT = 2.0
LIVE = ("accuracy", "precision", "recall", "f1")


def _warm_up() -> None:
    """Import what a page view needs (MLflow's client takes seconds to import) ahead of the first view."""
    import mlflow.tracking  # noqa: F401

    import airflow_mlops.deploy.ledger
    import airflow_mlops.serving.client  # noqa: F401


@asynccontextmanager
async def _lifespan(_app: FastAPI) -> AsyncIterator[None]:
    # The api-server enters the lifespan of every mounted app: warm up there, in the background, so
    # neither the api-server's start nor other Airflow components (which load plugins too) wait for it.
    threading.Thread(target=_warm_up, name="mlops-releases-warm-up", daemon=True).start()
    yield


app = FastAPI(title="MLOps releases", docs_url=None, redoc_url=None, openapi_url=None, lifespan=_lifespan)


# -- authentication ---------------------------------------------------------------------------------------


async def authenticate(request: Request) -> Any:
    """The Airflow user of the request, by the api-server's own ``get_user`` (bearer token or ``_token``
    cookie), allowed by the auth manager to see plugins.

    :raises HTTPException: 401 without a valid login, 403 without the permission.
    """
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user

    credentials = await bearer_scheme(request)
    user = await get_user(request, None, credentials)
    if not get_auth_manager().is_authorized_view(access_view=AccessView.PLUGINS, user=user):
        raise HTTPException(status_code=403, detail="Forbidden: the releases view needs access to plugins.")
    return user


# -- settings ---------------------------------------------------------------------------------------------


def _option(key: str, fallback: str | None) -> str | None:
    from airflow.configuration import conf

    return conf.get("mlops", key, fallback=fallback) or fallback


def _gateway_auth() -> tuple[str | None, str | None]:
    """``(url, admin token)`` of the configured gateway connection, or ``(None, None)``."""
    conn_id = _option("releases_gateway_conn_id", None)
    if not conn_id:
        return None, None
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    host = conn.host or ""
    host = host if "://" in host else f"{conn.schema or 'http'}://{host}"
    url = f"{host.rstrip('/')}:{conn.port}" if conn.port else host.rstrip("/")
    return url, conn.password or None


# -- collecting -------------------------------------------------------------------------------------------


def _quote(name: str) -> str:
    """``name`` as a string literal of MLflow's filter syntax."""
    return f'"{name}"' if "'" in name else f"'{name}'"


def _json(text: str | None) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return text


def version_gates(tags: dict[str, str]) -> list[dict[str, Any]]:
    """The gate verdicts tagged on a version: ``mlops.gate.<name>`` = status, and any
    ``mlops.gate.<name>.<part>`` (``details``: JSON of the rows) attached to it.

    :param tags: the version's tags.
    """
    gates: dict[str, dict[str, Any]] = {}
    for key in sorted(tags):
        if not key.startswith(GATE_PREFIX):
            continue
        name, _, part = key[len(GATE_PREFIX) :].partition(".")
        gate = gates.setdefault(name, {"name": name, "status": None})
        if part:
            gate[part] = _json(tags[key])
        else:
            gate["status"] = tags[key]
    return list(gates.values())


def _ms(ts: int | None) -> str | None:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ts / 1000)) if ts else None


def _url(url: str | None) -> str | None:
    from airflow_mlops.core.redact import redact

    return redact(url) if url else None


def _model(
    client: MlflowClient, target: MlflowTarget, model: Any, max_versions: int, pool: ThreadPoolExecutor
) -> dict[str, Any]:
    from airflow_mlops.core.gate.evaluate import logged_model_id
    from airflow_mlops.core.gate.evidence import logged_model_metrics
    from airflow_mlops.core.redact import redact
    from airflow_mlops.deploy.ledger import read_history

    name = model.name
    aliases: dict[str, str] = {a: str(v) for a, v in (model.aliases or {}).items()}
    versions = client.search_model_versions(
        f"name={_quote(name)}", max_results=max_versions, order_by=["version_number DESC"]
    )
    history_f = pool.submit(read_history, client, name)
    runs = dict(
        zip(
            [mv.run_id for mv in versions],
            pool.map(lambda mv: client.get_run(mv.run_id) if mv.run_id else None, versions),
            strict=True,
        )
    )
    # The models' own metrics (MLflow 3 LoggedModel), as the gate reads them; older versions: the run's.
    model_ids = [logged_model_id(mv) for mv in versions]
    model_metrics = list(pool.map(lambda m: logged_model_metrics(client, m) if m else {}, model_ids))
    rows = []
    for mv, model_id, own_metrics in zip(versions, model_ids, model_metrics, strict=True):
        run = runs.get(mv.run_id)
        tags = dict(mv.tags or {})
        experiment = run.info.experiment_id if run is not None else None
        rows.append(
            {
                "version": str(mv.version),
                "aliases": sorted(a for a, v in aliases.items() if v == str(mv.version)),
                "created": _ms(mv.creation_timestamp),
                "run_id": mv.run_id,
                "model_id": model_id,
                "metrics": dict(
                    sorted((own_metrics or (run.data.metrics if run is not None else {})).items())
                ),
                "gates": version_gates(tags),
                "dag_id": tags.get("mlops.airflow.dag_id"),
                "run_url": _url(target.run_url(experiment, mv.run_id) if experiment and mv.run_id else None),
                "model_version_url": _url(target.model_version_url(name, mv.version)),
            }
        )
    history = history_f.result()
    endpoint = next((h["endpoint"] for h in reversed(history) if h.get("endpoint")), None)
    return {
        "name": name,
        "champion": aliases.get("champion"),
        "aliases": aliases,
        "versions": rows,
        "history": list(reversed(history)),  # newest first
        "endpoint": redact(endpoint) if endpoint else None,
        "drift": _drift(client, target, name),
    }


def _drift(client: MlflowClient, target: MlflowTarget, name: str) -> dict[str, Any] | None:
    """The newest drift report run of ``name`` (DriftSensor's ``mlflow_report``), or None."""
    exp = client.get_experiment_by_name(DRIFT_EXPERIMENT)
    if exp is None:
        return None
    found = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`mlops.model_name` = {_quote(name)}",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not found:
        return None
    run = found[0]
    run_url = _url(target.run_url(exp.experiment_id, run.info.run_id))
    return {
        "run_id": run.info.run_id,
        "at": _ms(run.info.start_time),
        "drift_detected": run.data.tags.get("mlops.drift_detected") == "true",
        "drift_share": run.data.metrics.get("drift_share"),
        "model_version": run.data.tags.get("mlops.model_version"),
        "run_url": run_url,
        "report_url": report_url(run_url),
    }


def collect_mlflow(
    target: MlflowTarget, max_models: int = 20, max_versions: int = 10
) -> list[dict[str, Any]]:
    """Every registered model (newest first, at most ``max_models``) with its versions, gates, ledger
    and drift report.

    :raises MlopsServiceError: MLflow does not answer (probed first, so this takes seconds, not MLflow's
        minutes of retries).
    """
    from airflow_mlops.core.tracking import check_reachable

    check_reachable(target.tracking_uri, timeout=MLFLOW_PROBE_TIMEOUT)
    client = target.client()
    models = client.search_registered_models(max_results=max_models, order_by=["last_updated_timestamp DESC"])
    # Models side by side, and each model's runs side by side (in a second pool: no task waits on its own).
    with ThreadPoolExecutor(max_workers=8) as pool, ThreadPoolExecutor(max_workers=4) as per_model:
        return list(per_model.map(lambda m: _model(client, target, m, max_versions, pool), models))


def gateway_state(endpoint: str, model: str, admin: tuple[str | None, str | None]) -> dict[str, Any]:
    """What the gateway at ``endpoint`` serves for ``model``: route weights, champion, requests and live
    metrics per version (``/metrics``), plus strategy and routes (``/admin/deployment``) when ``admin``
    is the token of this very gateway. ``status`` is ``unreachable`` (with the error) when it does not
    answer within :data:`GATEWAY_TIMEOUT`.

    :param endpoint: the gateway's URL.
    :param model: the registered model.
    :param admin: ``(url, token)`` of the configured gateway connection.
    """
    from airflow_mlops.core.redact import redact, without_userinfo
    from airflow_mlops.serving.client import GatewayClient, GatewayError, parse_metrics

    token = admin[1] if admin[0] and without_userinfo(admin[0]).rstrip("/") == endpoint.rstrip("/") else None
    out: dict[str, Any] = {"endpoint": redact(endpoint), "status": "ok"}
    try:
        with GatewayClient(endpoint, admin_token=token, timeout=GATEWAY_TIMEOUT) as gw:
            samples = parse_metrics(gw.metrics_text())
            if token:
                served = gw.get_deployment() or {}
                out["strategy"] = served.get("strategy")
                out["routes"] = served.get("routes")
    except GatewayError as e:
        return {**out, "status": "unreachable", "error": redact(e)}
    except ValueError as e:  # a page that is not Prometheus text
        return {**out, "status": "unreachable", "error": f"not a gateway's /metrics page: {redact(e)}"}
    per: dict[str, dict[str, Any]] = {}
    for (metric, labels), value in samples.items():
        lab = dict(labels)
        if lab.get("model") != model:
            continue
        if metric == "mlops_gateway_champion_version":
            out["champion"] = str(int(value))
            continue
        if "version" not in lab:
            continue
        row = per.setdefault(lab["version"], {"version": lab["version"], "requests": 0.0})
        if metric == "mlops_gateway_route_weight":
            row["weight"] = value
        elif metric == "mlops_gateway_requests_total" and lab.get("status") == "200":
            row["requests"] += value
        elif metric == "mlops_gateway_feedback_total":
            row["feedback"] = value
        elif metric.startswith("mlops_gateway_live_"):
            row[metric[len("mlops_gateway_live_") :]] = value
    out["versions"] = sorted(per.values(), key=lambda r: (-float(r.get("weight") or 0), r["version"]))
    return out


def collect(target: MlflowTarget, max_models: int = 20, max_versions: int = 10) -> dict[str, Any]:
    """The whole view's data: models from MLflow, then each model's gateway, in parallel."""
    from airflow_mlops.core.redact import redact

    models = collect_mlflow(target, max_models, max_versions)
    out: dict[str, Any] = {"models": models}
    try:
        admin = _gateway_auth()
    except Exception as e:  # noqa: BLE001 - a missing or bad connection: shown, the page still renders
        admin = (None, None)
        out["gateway_conn_error"] = f"releases_gateway_conn_id: {redact(e)}"
    with ThreadPoolExecutor(max_workers=8) as pool:
        states = pool.map(
            lambda m: gateway_state(m["endpoint"], m["name"], admin) if m["endpoint"] else None, models
        )
        for model, state in zip(models, states, strict=True):
            model["gateway"] = state
    return out


async def gather(budget: float = MLFLOW_BUDGET) -> dict[str, Any]:
    """:func:`collect` in a worker thread, within ``budget`` seconds; on failure the page data says why
    (``mlflow.status`` = ``unreachable``) instead of raising."""
    from airflow_mlops.core.errors import MlopsInputError, MlopsServiceError
    from airflow_mlops.core.redact import redact
    from airflow_mlops.hooks.mlflow import MlflowHook

    started = time.monotonic()
    conn_id = _option("releases_mlflow_conn_id", "mlflow_default") or "mlflow_default"
    head: dict[str, Any] = {"generated_at": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())}
    try:
        target = MlflowHook(conn_id).target
        head["mlflow"] = {"conn_id": conn_id, "uri": redact(target.tracking_uri), "status": "ok"}
        max_models = int(_option("releases_max_models", "20") or 20)
        max_versions = int(_option("releases_max_versions", "10") or 10)
        data = await asyncio.wait_for(asyncio.to_thread(collect, target, max_models, max_versions), budget)
    except asyncio.TimeoutError:
        data = {"models": []}
        head["mlflow"] = {**head.get("mlflow", {}), "status": "unreachable",
                          "error": f"MLflow did not answer within {budget:.0f}s"}  # fmt: skip
    except (MlopsInputError, MlopsServiceError, OSError) as e:
        data = {"models": []}
        head["mlflow"] = {
            **head.get("mlflow", {"conn_id": conn_id}),
            "status": "unreachable",
            "error": redact(e),
        }
    except Exception as e:  # noqa: BLE001 - MLflow's own errors (MlflowException, a missing connection)
        data = {"models": []}
        head["mlflow"] = {**head.get("mlflow", {"conn_id": conn_id}), "status": "error", "error": redact(e)}
    head["elapsed_ms"] = round((time.monotonic() - started) * 1000)
    return {**head, **data}


# -- the page ---------------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:16px;color:#1f2937;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:19px;margin:22px 0 6px;border-bottom:2px solid #e5e7eb}
h3{font-size:15px;margin:14px 0 4px}.meta{color:#6b7280;font-size:13px}
table{border-collapse:collapse;margin:4px 0 10px;font-size:13px}
th,td{border:1px solid #e5e7eb;padding:3px 8px;text-align:left;vertical-align:top}th{background:#f3f4f6}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;border-radius:9px;padding:0 8px;font-size:12px;font-weight:600;margin-right:3px}
.passed,.ok,.promote{background:#dcfce7;color:#166534}.failed,.unreachable,.error,.rollback,.rollback_auto
{background:#fee2e2;color:#991b1b}.pending,.skipped,.inconclusive,.deploy{background:#fef3c7;color:#92400e}
.alias{background:#e0e7ff;color:#3730a3}.bar{display:inline-block;height:9px;background:#6366f1;vertical-align:middle}
a{color:#2563eb}
"""


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x))


def _num(x: Any) -> str:
    if isinstance(x, bool) or x is None:
        return _e(x if x is not None else "")
    if isinstance(x, int | float):
        return f"{x:.4g}" if isinstance(x, float) and not float(x).is_integer() else f"{x:g}"
    return _e(x)


def _badge(status: Any) -> str:
    s = str(status or "unknown")
    return f'<span class="badge {_e(s.lower())}">{_e(s)}</span>'


def _link(url: str | None, text: str) -> str:
    return f'<a href="{_e(url)}" target="_blank" rel="noopener">{_e(text)}</a>' if url else ""


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(rows_cell for rows_cell in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _td(x: Any, raw: bool = False, num: bool = False) -> str:
    return f'<td class="num">{_num(x)}</td>' if num else f"<td>{x if raw else _e(x)}</td>"


# The verdict table's columns in the order of Verdict.table(); others (e.g. a slice) follow.
_COLUMNS = ("metric", "slice", "check", "candidate", "baseline", "observed", "threshold", "status", "reason")


def _gate_block(version: str, gate: dict[str, Any]) -> str:
    details = gate.get("details")
    title = f"v{_e(version)} &middot; gate {_e(gate['name'])} {_badge(gate.get('status'))}"
    parts = [f"<h3>{title}</h3>"]
    if isinstance(details, dict):
        base = details.get("baseline") or {}
        facts = [f"evidence: {_e(details.get('source'))}"]
        if base.get("version"):
            facts.append(f"baseline: {_e(base.get('alias'))} = v{_e(base.get('version'))}")
        elif base.get("alias"):
            facts.append(f"baseline: no {_e(base.get('alias'))} yet")
        if details.get("truncated"):
            facts.append(f"shortened: {_e(details['truncated'])}")
        parts.append(f'<div class="meta">{"; ".join(facts)}</div>')
        for key, value in details.items():
            if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
                present = list(dict.fromkeys(k for r in value for k in r))
                cols = [c for c in _COLUMNS if c in present] + [c for c in present if c not in _COLUMNS]
                body = [
                    [_td(_badge(r.get(c)), raw=True) if c == "status" else _td(r.get(c), num=isinstance(r.get(c), int | float))
                     for c in cols]
                    for r in value
                ]  # fmt: skip
                if key != "rows":
                    parts.append(f'<div class="meta">{_e(key)}</div>')
                parts.append(_table(cols, body))
    elif details is not None:
        parts.append(f"<pre>{_e(details)}</pre>")
    for key, value in gate.items():  # other parts of the verdict (e.g. a measurement history)
        if key not in ("name", "status", "details") and value is not None:
            parts.append(f'<div class="meta">{_e(key)}: {_e(json.dumps(value, sort_keys=True)[:2000])}</div>')
    return "".join(parts)


def _serving(model: dict[str, Any]) -> str:
    gw = model.get("gateway")
    if not gw:
        return '<div class="meta">Not deployed by this provider (no gateway in the ledger).</div>'
    head = f"<h3>Serving: {_e(gw['endpoint'])} {_badge('ok' if gw['status'] == 'ok' else 'unreachable')}</h3>"
    if gw["status"] != "ok":
        return head + f'<div class="meta">{_e(gw.get("error"))}</div>'
    strategy = f"strategy {_e(gw['strategy'])}; " if gw.get("strategy") else ""
    meta = f'<div class="meta">{strategy}champion at the gateway: v{_e(gw.get("champion"))}</div>'
    rows = []
    for v in gw.get("versions", []):
        weight = float(v.get("weight") or 0)
        bar = f'<span class="bar" style="width:{round(weight * 120)}px"></span> {weight:.0%}'
        rows.append(
            [_td(f"v{v['version']}"), _td(bar, raw=True), _td(v.get("requests"), num=True),
             _td(v.get("feedback"), num=True), _td(v.get("samples"), num=True),
             *(_td(v.get(m), num=True) for m in LIVE)]
        )  # fmt: skip
    header = ["version", "weight", "requests", "labelled", "live samples", *(f"live {m}" for m in LIVE)]
    return head + meta + _table(header, rows)


def _versions(model: dict[str, Any]) -> str:
    names = list(dict.fromkeys(k for v in model["versions"] for k in v["metrics"]))[:8]
    rows = []
    for v in model["versions"]:
        aliases = "".join(f'<span class="badge alias">@{_e(a)}</span>' for a in v["aliases"])
        gates = "".join(f"{_e(g['name'])} {_badge(g.get('status'))}" for g in v["gates"])
        links = " ".join(
            x
            for x in (_link(v["run_url"], "MLflow run"), _link(v["model_version_url"], "model version"))
            if x
        )
        rows.append(
            [_td(f"v{v['version']}"), _td(aliases, raw=True), _td(v.get("model_id") or "(run)"), _td(v["created"]),
             _td(v.get("dag_id")), *(_td(v["metrics"].get(n), num=True) for n in names), _td(gates, raw=True),
             _td(links, raw=True)]
        )  # fmt: skip
    header = ["version", "aliases", "logged model", "created", "trained by", *names, "gates", "links"]
    return _table(header, rows)


def _history(model: dict[str, Any]) -> str:
    if not model["history"]:
        return '<div class="meta">No promotion ledger yet.</div>'
    rows = [
        [_td(h.get("at")), _td(_badge(h.get("action")), raw=True), _td(f"v{h.get('version')}"),
         _td(f"v{h['from_version']}" if h.get("from_version") else "none"), _td(h.get("strategy")),
         _td(h.get("actor")), _td(h.get("dag_run")), _td(h.get("reason") or h.get("serving"))]
        for h in model["history"]
    ]  # fmt: skip
    return _table(
        ["at", "action", "version", "from", "strategy", "actor", "DAG run", "reason / serving"], rows
    )


def _drift_html(model: dict[str, Any]) -> str:
    d = model.get("drift")
    if not d:
        return '<div class="meta">Drift report: none logged yet.</div>'
    verdict = _badge("failed" if d["drift_detected"] else "passed").replace(
        ">failed<" if d["drift_detected"] else ">passed<", ">drift<" if d["drift_detected"] else ">no drift<"
    )
    share = f", drifted share {d['drift_share']:.0%}" if isinstance(d.get("drift_share"), float) else ""
    links = " ".join(x for x in (_link(d["report_url"], "drift report"), _link(d["run_url"], "run")) if x)
    return f"<div>Latest drift check {_e(d['at'])} (reference v{_e(d.get('model_version'))}): {verdict}{share} {links}</div>"


def render(data: dict[str, Any]) -> str:
    """The page for :func:`gather`'s data."""
    ml = data.get("mlflow", {})
    head = (
        f'<h1>Model releases</h1><div class="meta">MLflow {_e(ml.get("uri"))} (connection '
        f"{_e(ml.get('conn_id'))}) {_badge(ml.get('status'))} {_e(ml.get('error'))}; generated "
        f"{_e(data.get('generated_at'))} in {_e(data.get('elapsed_ms'))} ms; "
        '<a href="api/models">JSON</a></div>'
    )
    if data.get("gateway_conn_error"):
        head += f'<div class="meta">{_badge("error")} {_e(data["gateway_conn_error"])}</div>'
    body = []
    for m in data.get("models", []):
        champion = f"champion v{_e(m['champion'])}" if m.get("champion") else "no champion"
        aliases = " ".join(
            f'<span class="badge alias">@{_e(a)} v{_e(v)}</span>' for a, v in sorted(m["aliases"].items())
        )
        body.append(f'<section><h2>{_e(m["name"])}</h2><div class="meta">{champion} {aliases}</div>')
        body.append(_serving(m))
        body.append("<h3>Versions</h3>" + _versions(m))
        body.append(_drift_html(m))
        body.append("<h3>Champion history (promotion ledger)</h3>" + _history(m))
        for v in m["versions"][:3]:  # the newest versions' verdict tables; the JSON has all of them
            body.extend(_gate_block(v["version"], g) for g in v["gates"])
        body.append("</section>")
    if not data.get("models") and ml.get("status") == "ok":
        body.append('<div class="meta">No registered model yet.</div>')
    return (
        '<!doctype html><html><head><meta charset="utf-8"><title>Model releases</title>'
        f"<style>{_CSS}</style></head><body>{head}{''.join(body)}</body></html>"
    )


# -- routes -----------------------------------------------------------------------------------------------


@app.get("/api/models", dependencies=[Depends(authenticate)])
async def models_json() -> dict[str, Any]:
    """The view's data as JSON."""
    return await gather()


@app.get("/", response_class=HTMLResponse, response_model=None)
async def page(request: Request) -> HTMLResponse | RedirectResponse:
    """The page; without a login, a redirect to the auth manager's login page."""
    try:
        await authenticate(request)
    except HTTPException as e:
        if e.status_code != 401:
            raise
        from airflow.api_fastapi.app import get_auth_manager

        return RedirectResponse(get_auth_manager().get_url_login(next_url=str(request.url)), status_code=307)
    return HTMLResponse(render(await gather()))

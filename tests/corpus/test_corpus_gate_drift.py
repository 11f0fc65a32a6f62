"""Corpus of bad input and dead services for the gate, its CLI and drift profiles.

Every case is a row of a table. Gate cases run ``airflow-mlops gate`` as a real subprocess against the
real MLflow server of the test session (``mlflow_server``; versions registered by ``tests.models``), a
real Prometheus for PromQL, and unused loopback ports for dead services. Each asserts the exit code
(README: 0 passed, 1 failed/pending, 2 bad input or error), a one-line message that names the problem and
the fix (a regex per case), no traceback, the time taken (< 15 s against a dead service), and that nothing
changed on the server (no tag, no alias). Drift cases feed bad profiles and data to the core and assert
the error class and message. Nothing is mocked.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest

from airflow_mlops.core.errors import MlopsInputError
from tests.servers import free_port

pytestmark = pytest.mark.timeout(600)

DEAD_SERVICE_SECONDS = 15.0
SECRET = "s3cr3t-corpus-token"
GOOD_SPEC = "name: corpus\nrules:\n  - metric: f1\n    min: 0.5\n    min_change: -0.5\n"


@dataclass(frozen=True)
class GateCase:
    """One ``airflow-mlops gate`` run.

    :param id: the case id.
    :param spec: the spec file's content (bytes for binary content), or None for no file.
    :param message: regex the one-line error (or output) must match: the problem and the fix.
    :param spec_name: the spec file's name.
    :param spec_arg: what ``--spec`` gets instead of the file (``{dir}`` is the case's folder).
    :param model: ``main`` (v1 champion, v2, v3), ``deleted`` (champion's version deleted) or ``none``.
    :param version: the candidate version (``{nan}``: a version whose run logged f1 = NaN).
    :param extra: more arguments (``{dir}``, ``{dead}`` and ``{prometheus}`` are filled in).
    :param tracking: ``server``, ``dead`` (an unused loopback port), ``dead_secret`` (with userinfo),
        ``hung`` (accepts, never answers), ``prometheus`` (an HTTP server that is not MLflow) or ``unset``.
    :param exit_code: the expected exit code.
    :param dead: a dead service is involved: the run must end within DEAD_SERVICE_SECONDS.
    """

    id: str
    spec: str | bytes | None
    message: str
    spec_name: str = "gate.yaml"
    spec_arg: str | None = None
    model: str = "main"
    version: str = "3"
    extra: tuple[str, ...] = ()
    tracking: str = "server"
    exit_code: int = 2
    dead: bool = False


def _rule_spec(rule: str, **top: str) -> str:
    head = "".join(f"{k}: {v}\n" for k, v in top.items())
    return f"name: corpus\n{head}rules:\n  - {rule}\n"


PROM_SPEC = (
    "name: corpus-live\nsource: {kind: prometheus, timeout: 3}\nrules:\n"
    "  - metric: f1\n    min: 0.5\n    min_samples: 10\n"
)

GATE_CASES = [
    GateCase("binary_spec", bytes(range(256)) * 8, r"binary, not YAML/JSON text: point at the gate spec file"),
    GateCase("latin1_spec", ("name: caf\xe9\nrules: {f1: {min: 0.5}}\n").encode("latin-1"),
             r"not UTF-8 text .*save the spec as UTF-8"),
    GateCase("wrong_suffix", GOOD_SPEC, r"does not end in \.yaml, \.yml or \.json: rename it", spec_name="gate.txt"),
    GateCase("spec_not_found", None, r"Gate spec file not found: .*Check the path", spec_arg="{dir}/nope.yaml"),
    GateCase("spec_path_without_suffix_missing", None, r"Gate spec file not found: 'gates/offline'.*Check the path",
             spec_arg="gates/offline"),
    GateCase("spec_is_a_folder", None, r"is not a file: give the path of a \.yaml", spec_arg="{dir}"),
    GateCase("empty_spec", "\n\n", r"is empty: write a spec with 'name' and 'rules'"),
    GateCase("yaml_syntax", "name: corpus\nrules: [\n  - metric: f1\n", r"Cannot parse .*Fix the YAML/JSON syntax"),
    GateCase("json_syntax", '{"name": "corpus", "rules": [}', r"Cannot parse .*Fix the YAML/JSON syntax",
             spec_name="gate.json"),
    GateCase("duplicate_key", _rule_spec("metric: f1\n    min: 0.5\n    min: 0.9"), r"duplicate key 'min'.*Fix"),
    GateCase("spec_is_a_list", "- metric: f1\n  min: 0.5\n", r"must be a mapping with 'name' and 'rules'"),
    GateCase("unknown_spec_key", GOOD_SPEC + "treshold: 3\n", r"unknown keys \['treshold'\]: use only"),
    GateCase("unknown_rule_key", _rule_spec("metric: f1\n    mni: 0.5"), r"unknown keys \['mni'\]: use only"),
    GateCase("no_rules", "name: corpus\nrules: []\n", r"has no rules: add at least one"),
    GateCase("contradictory_bounds", _rule_spec("metric: f1\n    min: 0.9\n    max: 0.5"),
             r"min = 0\.9 is above max = 0\.5, so no model can pass: lower min or raise max"),
    GateCase("bound_outside_unit_interval", _rule_spec("metric: f1\n    min: 90"), r"is at most 1: give a bound"),
    GateCase("bound_not_a_number", _rule_spec("metric: f1\n    min: high"), r"is not a number: give a number"),
    GateCase("bound_nan", _rule_spec("metric: f1\n    min: .nan"), r"not a finite number: give a finite number"),
    GateCase("rule_checks_nothing", _rule_spec("metric: f1"), r"checks nothing: set min, max"),
    GateCase("unknown_metric", _rule_spec("metric: f2\n    min: 0.5"),
             r"unknown metric 'f2'\. Use one of .*or set greater_is_better"),
    GateCase("unknown_source", GOOD_SPEC + "source: {kind: s3}\n", r"source kind 's3' is unknown: use one of"),
    GateCase("bad_gate_name", GOOD_SPEC.replace("name: corpus", "name: 'my gate!'"),
             r"must be 1 to 200 letters, digits"),
    GateCase("baseline_none_with_change_rules", GOOD_SPEC + "baseline: none\n",
             r"baseline: none, so the change rules of \['f1'\] compare with nothing: remove them"),
    GateCase("missing_run_metric", _rule_spec("metric: pr_auc\n    greater_is_better: true\n    min: 0.5"),
             r"has no metric \['pr_auc'\]; it has \[.*\]\. Fix the rule's metric name"),
    GateCase("nan_metric", _rule_spec("metric: f1\n    min: 0.5"), r"f1 is NaN: .*Fix the data or the metric",
             version="{nan}"),
    GateCase("unknown_version", GOOD_SPEC, r"v999 does not exist: check the model name and version", version="999"),
    GateCase("version_not_a_number", GOOD_SPEC, r"'latest' is not a version number: give the number",
             version="latest"),
    GateCase("unknown_model", GOOD_SPEC, r"does not exist: check the model name", model="none", version="1"),
    GateCase("deleted_alias_baseline", GOOD_SPEC,
             r"@champion is not set, but .* is not a new model .*Set 'champion' on the version to compare with"
             r".*set 'baseline: none' in the gate spec", model="deleted", version="2"),
    GateCase("unwritable_json_folder_missing", GOOD_SPEC,
             r"--json .* cannot be written \(No such file or directory\): give a path in a writable folder",
             extra=("--json", "{dir}/no/such/folder/verdict.json")),
    GateCase("json_path_is_a_folder", GOOD_SPEC, r"--json .* is a folder: give a file path",
             extra=("--json", "{dir}")),
    GateCase("negative_wait", GOOD_SPEC, r"--wait must be >= 0", extra=("--wait", "-5")),
    GateCase("no_tracking_uri", GOOD_SPEC, r"No MLflow tracking URI: pass --tracking-uri or set MLFLOW_TRACKING_URI",
             tracking="unset"),
    # A control: a decided failure is exit 1 (never 2), and --dry-run records nothing.
    GateCase("failed_gate_dry_run", _rule_spec("metric: f1\n    min: 0.9999"),
             r"Gate 'corpus' FAILED for .* v3.*f1 min: .* < 0\.9999", extra=("--dry-run",), exit_code=1),
    GateCase("mlflow_down", GOOD_SPEC,
             r"MLflow at http://127\.0\.0\.1:\d+ is unreachable .*start the MLflow server, or fix the tracking URI",
             tracking="dead", dead=True),
    GateCase("mlflow_down_credentials_in_url", GOOD_SPEC, r"MLflow at http://127\.0\.0\.1:\d+ is unreachable .*start the MLflow server",
             tracking="dead_secret", dead=True),
    GateCase("mlflow_hung", GOOD_SPEC,
             r"MLflow at http://127\.0\.0\.1:\d+ is unreachable \(.*timed out.*\): start the MLflow server",
             tracking="hung", dead=True),
    GateCase("tracking_uri_not_mlflow", GOOD_SPEC,
             r"http://127\.0\.0\.1:\d+ has no MLflow REST API .*point the tracking URI at an MLflow tracking server",
             tracking="prometheus", dead=True),
    GateCase("prometheus_hung", PROM_SPEC,
             r"Prometheus at http://127\.0\.0\.1:\d+ cannot be reached \(.*timed out.*within 3s\)",
             extra=("--prometheus-url", "http://127.0.0.1:{hung}"), dead=True),
    GateCase("prometheus_down", PROM_SPEC,
             r"Prometheus at http://127\.0\.0\.1:\d+ cannot be reached .*start the server, or fix its URL",
             extra=("--prometheus-url", "http://127.0.0.1:{dead}"), dead=True),
    GateCase("prometheus_url_missing", PROM_SPEC, r"no 'url': pass --prometheus-url or set PROMETHEUS_URL"),
    GateCase("prometheus_url_not_http", PROM_SPEC, r"is not an http\(s\) URL: give e\.g\. http://prometheus:9090",
             extra=("--prometheus-url", "prometheus:9090")),
    GateCase("invalid_promql", PROM_SPEC.replace("min_samples: 10", "query: 'sum(rate(x[5m]'"),
             r"Prometheus rejected the query .*Fix the PromQL", extra=("--prometheus-url", "{prometheus}")),
    GateCase("metrics_page_down", "name: corpus-page\nsource: {kind: metrics_url, url: 'http://127.0.0.1:{dead}/metrics', "
             "timeout: 3}\nrules:\n  - metric: f1\n    min: 0.5\n",
             r"metrics page http://127\.0\.0\.1:\d+/metrics cannot be read .*that the gateway is running", dead=True),
]  # fmt: skip


@pytest.fixture(scope="module")
def corpus_models(mlflow_server: str) -> dict[str, Any]:
    """Real versions: ``main`` (1 champion, 2, 3, and one whose run logged f1 = NaN) and ``deleted``
    (versions 1 and 2; the champion was on 1, then 1 was deleted, and MLflow dropped the alias with it)."""
    from mlflow import MlflowClient

    from tests.models import register_versions

    client = MlflowClient(mlflow_server, mlflow_server)
    main = f"corpus-gate-{uuid.uuid4().hex[:6]}"
    register_versions(mlflow_server, main, [{}, {"C": 0.01}, {"C": 0.5}])
    client.set_registered_model_alias(main, "champion", "1")
    run = client.create_run(client.get_run(client.get_model_version(main, "1").run_id).info.experiment_id)
    client.log_metric(run.info.run_id, "f1", math.nan)
    client.set_terminated(run.info.run_id)
    nan = client.create_model_version(main, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    deleted = f"corpus-deleted-{uuid.uuid4().hex[:6]}"
    register_versions(mlflow_server, deleted, [{}, {"C": 0.5}])
    client.set_registered_model_alias(deleted, "champion", "1")
    client.delete_model_version(deleted, "1")
    assert "champion" not in client.get_registered_model(deleted).aliases  # what the issue describes
    return {"client": client, "main": main, "deleted": deleted, "nan": str(nan.version),
            "none": f"corpus-no-such-model-{uuid.uuid4().hex[:6]}"}  # fmt: skip


@pytest.fixture
def hung_port():
    """A loopback port that accepts connections (the kernel's backlog) but never answers: a hung server."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock.getsockname()[1]


def registry_state(client, name: str) -> dict[str, Any]:
    """Every alias and tag of a registered model and its versions (empty when the model does not exist)."""
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(name)
    except MlflowException:
        return {}
    versions = client.search_model_versions(f"name='{name}'")
    return {
        "aliases": dict(model.aliases),
        "tags": dict(model.tags),
        "versions": {str(v.version): dict(v.tags) for v in versions},
    }


def run_cli(args: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess, float]:
    # A harness limit, not a bound: a CLI start (MLflow, sklearn imports) beside five sessions took > 120 s.
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "airflow_mlops.cli", *args], capture_output=True, text=True,
                          timeout=300, env=env)  # fmt: skip
    return proc, time.monotonic() - start


def _fill(text: str, **values: str) -> str:
    for k, v in values.items():
        text = text.replace("{" + k + "}", v)
    return text


@pytest.mark.parametrize("case", GATE_CASES, ids=[c.id for c in GATE_CASES])
def test_gate_cli_corpus(case: GateCase, corpus_models, mlflow_server, tmp_path, request):
    client = corpus_models["client"]
    name = corpus_models[case.model]
    dead = str(free_port())
    values = {"dir": str(tmp_path), "dead": dead}
    if "{prometheus}" in " ".join(case.extra) or case.tracking == "prometheus":
        values["prometheus"] = request.getfixturevalue("prometheus").url
    if case.tracking == "hung" or "{hung}" in " ".join(case.extra):
        values["hung"] = str(request.getfixturevalue("hung_port"))
    if case.spec is not None:
        path = tmp_path / case.spec_name
        content = case.spec if isinstance(case.spec, bytes) else _fill(case.spec, **values)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        spec_arg = str(path)
    else:
        spec_arg = _fill(case.spec_arg or "", **values)
    version = _fill(case.version, nan=corpus_models["nan"])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PROMETHEUS_"))}
    tracking = {
        "server": mlflow_server,
        "dead": f"http://127.0.0.1:{dead}",
        "dead_secret": f"http://ci:{SECRET}@127.0.0.1:{dead}",
        "hung": f"http://127.0.0.1:{values.get('hung')}",
        "prometheus": values.get("prometheus"),
        "unset": None,
    }[case.tracking]
    args = ["gate", "--spec", spec_arg, "--model", name, "--version", version]
    if tracking:
        args += ["--tracking-uri", tracking]
    args += [_fill(a, **values) for a in case.extra]
    before = {n: registry_state(client, corpus_models[n]) for n in ("main", "deleted")}
    files_before = sorted(p.name for p in tmp_path.iterdir())

    proc, seconds = run_cli(args, env)

    out = proc.stdout + proc.stderr
    assert proc.returncode == case.exit_code, out
    assert "Traceback" not in out, out
    if case.exit_code == 2:
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and proc.stderr.strip() == errors[0], proc.stderr  # one line, nothing else
        assert re.search(case.message, errors[0]), errors[0]
    else:
        assert "error:" not in proc.stderr and re.search(case.message, proc.stdout.splitlines()[-1]), out
    assert SECRET not in out
    if case.dead:
        assert seconds < DEAD_SERVICE_SECONDS, f"{seconds:.1f}s against a dead service"
    # Nothing changed: no tag, no alias, no file.
    assert {n: registry_state(client, corpus_models[n]) for n in ("main", "deleted")} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == files_before


def test_gate_cli_corpus_is_big_enough():
    assert len(GATE_CASES) >= 22 and len({c.id for c in GATE_CASES}) == len(GATE_CASES)


# --- drift profiles and current data -------------------------------------------------------------


def _profile() -> dict[str, Any]:
    import numpy as np
    import pandas as pd

    from airflow_mlops.core.drift import build_profile

    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {
            "x": rng.normal(size=3000),
            "few": rng.integers(0, 3, 3000).astype(float),
            "city": rng.choice(["a", "b", "c"], 3000),
        }
    )
    return build_profile(frame)


def _edit(path: list[Any], value: Any = None, *, delete: bool = False):
    def apply(profile: dict[str, Any]) -> dict[str, Any]:
        node = profile
        for key in path[:-1]:
            node = node[key]
        if delete:
            del node[path[-1]]
        else:
            node[path[-1]] = value
        return profile

    return apply


@dataclass(frozen=True)
class DriftCase:
    """One bad reference profile or current data set.

    :param id: the case id.
    :param message: regex the error must match (the problem and the fix).
    :param profile_text: the profile as text/bytes (instead of an edited valid profile).
    :param edit: changes a valid profile (then dumped as JSON text, NaN allowed).
    :param current: current data (default: a valid frame).
    :param error: the expected error class name.
    """

    id: str
    message: str
    profile_text: str | bytes | None = None
    edit: Any = None
    current: Any = None
    error: str = "MlopsInputError"
    config: dict[str, Any] = field(default_factory=dict)


def _frame(**cols):
    import pandas as pd

    return pd.DataFrame(cols)


REBUILD = r"re-train the model to log a new profile"
DRIFT_CASES = [
    DriftCase("profile_not_json", r"Drift profile is not valid JSON .*" + REBUILD, profile_text="{not json"),
    DriftCase("profile_binary", r"not valid JSON \(or not UTF-8.*" + REBUILD, profile_text=b"\x89PNG\r\n\x1a\n\xff\xfe"),
    DriftCase("profile_truncated", r"not valid JSON .*" + REBUILD, profile_text='{"format": "airflow-mlops/drift-pro'),
    DriftCase("not_a_profile", r"This is not a drift reference profile .*" + REBUILD, profile_text='{"columns": {}}'),
    DriftCase("profile_is_a_list", r"This is not a drift reference profile", profile_text="[1, 2]"),
    DriftCase("profile_future_version", r"version 99 is not supported .*" + REBUILD, edit=_edit(["version"], 99)),
    DriftCase("profile_no_columns", r"has no 'columns' mapping.*" + REBUILD, edit=_edit(["columns"], delete=True)),
    DriftCase("profile_missing_quantiles", r"column 'x' lacks the key 'quantiles'.*" + REBUILD,
              edit=_edit(["columns", "x", "quantiles"], delete=True)),
    DriftCase("profile_missing_kind", r"column 'city' lacks the key 'kind'.*" + REBUILD,
              edit=_edit(["columns", "city", "kind"], delete=True)),
    DriftCase("profile_unknown_kind", r"column 'x' has kind 'text', neither 'numeric' nor 'categorical'",
              edit=_edit(["columns", "x", "kind"], "text")),
    DriftCase("profile_nan_quantile", r"column 'x' has quantiles holding 'nan', not a finite number",
              edit=lambda p: (p["columns"]["x"]["quantiles"].__setitem__(5, math.nan), p)[1]),
    DriftCase("profile_unsorted_quantiles", r"column 'x' has quantiles that is not in increasing order",
              edit=lambda p: (p["columns"]["x"]["quantiles"].reverse(), p)[1]),
    DriftCase("profile_values_counts_mismatch", r"column 'few' has 3 values but counts of another length",
              edit=lambda p: (p["columns"]["few"]["counts"].pop(), p)[1]),
    DriftCase("profile_negative_count", r"column 'city' has a category count = '-4', not a count",
              edit=lambda p: (p["columns"]["city"]["categories"][0].__setitem__(1, -4), p)[1]),
    DriftCase("profile_bad_category_pair", r"column 'city' has a category entry .* not a \[value, count\] pair",
              edit=lambda p: (p["columns"]["city"]["categories"].append("d"), p)[1]),
    DriftCase("profile_hist_mismatch", r"column 'x' has 2 histogram counts for 31 edges",
              edit=_edit(["columns", "x", "hist", "counts"], [1, 2])),
    DriftCase("profile_damaged_dropped_filter", r"column 'city' has a 'dropped_filter' whose data is not base64",
              edit=_edit(["columns", "city", "dropped_filter"], {"bits": 64, "hashes": 3, "data": "!!"})),
    DriftCase("empty_current_data", r"current data has no rows: widen the time window",
              current=lambda: _frame(x=[], few=[], city=[]), error="EmptyCurrentDataError"),
    DriftCase("current_lacks_columns", r"does not match the reference schema \(missing columns: \['city'\].*"
              r"restrict `columns`, or set on_schema_mismatch='drift'",
              current=lambda: _frame(x=[0.1, 0.2], few=[1.0, 2.0])),
    DriftCase("current_retyped_column", r"retyped columns: \['x'\]",
              current=lambda: _frame(x=["a", "b"], few=[1.0, 2.0], city=["a", "b"])),
    DriftCase("unknown_test", r"Unknown drift test 'kolmogorov' for column .*: use one of", config={"method": "kolmogorov"}),
    DriftCase("bad_drift_share", r"drift_share=1\.5 is outside \(0, 1\]: use e\.g\. 0\.5", config={"drift_share": 1.5}),
]  # fmt: skip


@pytest.mark.parametrize("case", DRIFT_CASES, ids=[c.id for c in DRIFT_CASES])
def test_drift_corpus(case: DriftCase):
    import numpy as np

    from airflow_mlops.core.drift import DriftConfig, detect_drift, load_profile

    if case.profile_text is not None:
        text = case.profile_text
    else:
        profile = _profile()
        if case.edit is not None:
            profile = case.edit(profile)
        text = json.dumps(profile)  # NaN allowed: a damaged file may hold it
    rng = np.random.default_rng(4)
    current = (
        case.current()
        if case.current
        else _frame(x=rng.normal(size=500), few=rng.integers(0, 3, 500).astype(float),
                    city=rng.choice(["a", "b", "c"], 500))
    )  # fmt: skip
    start = time.monotonic()
    with pytest.raises(MlopsInputError) as e:
        detect_drift(load_profile(text), current, DriftConfig(**case.config))
    assert type(e.value).__name__ == case.error
    assert re.search(case.message, str(e.value)), str(e.value)
    assert time.monotonic() - start < 5


def test_drift_corpus_controls_pass():
    """The valid profile and current data of the table give a verdict (so each case fails for its own
    reason)."""
    import numpy as np

    from airflow_mlops.core.drift import detect_drift, dump_profile, load_profile

    rng = np.random.default_rng(4)
    current = _frame(x=rng.normal(size=500), few=rng.integers(0, 3, 500).astype(float),
                     city=rng.choice(["a", "b", "c"], 500))  # fmt: skip
    report = detect_drift(load_profile(dump_profile(_profile())), current)
    assert not report.drift_detected and len(report.columns) == 3

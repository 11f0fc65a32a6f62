"""Corpus of bad input and dead services for training: data files, folders, DVC, estimators, secrets.

Every case is a row of a table. Most run the core entry point
(:func:`airflow_mlops.core.training.train_and_register`, what TrainOperator runs) against the real MLflow
server of the test session (``mlflow_server``), real files, a real git + DVC repository and real
scikit-learn; a few run TrainOperator end to end with ``dag.test()``. Each asserts the exception type, a
message that names the problem and the fix (a regex per case), the time taken (< 15 s against a dead
service), and that nothing changed on the server: no registered model or version, no new experiment, no
new run. Secret cases assert that the password or token never appears in the error, and that the tags
of a successful training hold the redacted URL. Nothing is mocked; a git "smart HTTP" server
(``git http-backend`` behind a small loopback HTTP server) stands in for a git host, since no real one is
reachable here.
"""

from __future__ import annotations

import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from airflow_mlops.core.errors import MlopsInputError, MlopsServiceError
from tests.conftest import conn_env, run_dag
from tests.servers import free_port

pytestmark = pytest.mark.timeout(600)

DEAD_SERVICE_SECONDS = 15.0
PASSWORD = "pw-Corpus-9f3k"
TOKEN = "ghp_CorpusToken0123456789"
LR = "sklearn.linear_model.LogisticRegression"


def _rng() -> np.random.Generator:
    return np.random.default_rng(7)


def _frame(n: int = 200) -> pd.DataFrame:
    """A learnable binary problem where no single feature is a perfect predictor."""
    rng = _rng()
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    colour = rng.choice(["red", "green", "blue"], n)
    target = ((x1 + x2 + rng.normal(scale=0.5, size=n)) > 0).astype(int)
    return pd.DataFrame({"x1": x1, "x2": x2, "colour": colour, "target": target})


def _write(df: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path, index=False) if path.suffix == ".parquet" else df.to_csv(path, index=False)
    return path


def _bc() -> pd.DataFrame:
    from sklearn.datasets import load_breast_cancer

    return load_breast_cancer(as_frame=True).frame


def _diabetes() -> pd.DataFrame:
    from sklearn.datasets import load_diabetes

    return load_diabetes(as_frame=True).frame


@dataclass(frozen=True)
class TrainCase:
    """One training with bad input or a dead service.

    :param id: the case id.
    :param build: makes the inputs in a folder: returns the keyword arguments of ``train_and_register``
        besides the MLflow target and the model name (``data`` for a file or folder, ``dvc`` for
        ``(path, rev, remote)`` in the session's DVC repository, ``dvc_repo`` for another repository).
    :param message: regex the message must match: the problem and the fix.
    :param error: the exception type.
    :param tracking: ``server`` (the real one) or ``dead`` (an unused loopback port, with credentials).
    :param dead: a dead service is involved: the case must end within DEAD_SERVICE_SECONDS.
    :param secrets: strings that must not appear in the message or its causes.
    """

    id: str
    build: Callable[[Path], dict[str, Any]]
    message: str
    error: type[Exception] = MlopsInputError
    tracking: str = "server"
    dead: bool = False
    secrets: tuple[str, ...] = field(default_factory=tuple)


def _csv_text(text: str) -> Callable[[Path], dict[str, Any]]:
    def build(d: Path) -> dict[str, Any]:
        (d / "train.csv").write_text(text)
        return {"data": d / "train.csv"}

    return build


def _dup_target_csv(d: Path) -> dict[str, Any]:
    df = _frame()
    lines = ["x1,x2,target,target"] + [
        f"{a},{b},{t},{t}" for a, b, t in zip(df.x1, df.x2, df.target, strict=True)
    ]
    (d / "train.csv").write_text("\n".join(lines) + "\n")
    return {"data": d / "train.csv"}


def _dup_in_folder(d: Path) -> dict[str, Any]:
    df = _frame()
    _write(df.iloc[:100], d / "parts" / "a.csv")
    lines = ["x1,x2,colour,target,target"] + [
        f"{a},{b},{c},{t},{t}" for a, b, c, t in df.iloc[100:].itertuples(index=False)
    ]
    (d / "parts" / "b.csv").write_text("\n".join(lines) + "\n")
    return {"data": d / "parts"}


def _dup_parquet(d: Path) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    df = _frame()
    table = pa.table([df.x1, df.x2, df.target, df.target], names=["x1", "x2", "target", "target"])
    pq.write_table(table, d / "train.parquet")
    return {"data": d / "train.parquet"}


def _spaced_dup(d: Path) -> dict[str, Any]:
    df = _frame()
    lines = ["x1,target, target"] + [f"{a},{t},{t}" for a, t in zip(df.x1, df.target, strict=True)]
    (d / "train.csv").write_text("\n".join(lines) + "\n")
    return {"data": d / "train.csv"}


def _frame_with(**cols: Callable[[pd.DataFrame], Any]) -> Callable[[Path], dict[str, Any]]:
    def build(d: Path) -> dict[str, Any]:
        df = _frame()
        for name, make in cols.items():
            df[name] = make(df)
        return {"data": _write(df, d / "train.parquet")}

    return build


def _schema_mismatch(d: Path) -> dict[str, Any]:
    bc = _bc()
    _write(bc.iloc[:300], d / "parts" / "2024-01.csv")
    _write(bc.iloc[300:].rename(columns={"mean radius": "radius_mean"}), d / "parts" / "2024-02.csv")
    return {"data": d / "parts"}


def _rows(n: int) -> Callable[[Path], dict[str, Any]]:
    def build(d: Path) -> dict[str, Any]:
        df = _frame().head(n)
        df.loc[df.index[0], "target"], df.loc[df.index[1], "target"] = 0, 1
        return {"data": _write(df, d / "train.csv")}

    return build


def _rare_class(d: Path) -> dict[str, Any]:
    df = _frame()
    df.loc[df.index[:2], "target"] = 2  # a third class with two rows
    return {"data": _write(df, d / "train.csv")}


def _estimator(path: str, **params: Any) -> Callable[[Path], dict[str, Any]]:
    def build(d: Path) -> dict[str, Any]:
        return {
            "data": _write(_frame(), d / "train.csv"),
            "candidates": [{"estimator": path, "params": params}],
        }

    return build


def _float_target_classifier(d: Path) -> dict[str, Any]:
    return {"data": _write(_diabetes(), d / "diabetes.csv"), "candidates": [LR]}


def _binary_target_regressor(d: Path) -> dict[str, Any]:
    return {"data": _write(_bc(), d / "bc.csv"), "candidates": ["sklearn.linear_model.Ridge"]}


def _truncated_parquet(d: Path) -> dict[str, Any]:
    raw = (_write(_frame(), d / "full.parquet")).read_bytes()
    (d / "train.parquet").write_bytes(raw[: len(raw) // 2])
    return {"data": d / "train.parquet"}


def _csv_named_parquet(d: Path) -> dict[str, Any]:
    _write(_frame(), d / "train.csv").rename(d / "train.parquet")
    return {"data": d / "train.parquet"}


def _parquet_named_csv(d: Path) -> dict[str, Any]:
    _write(_frame(), d / "train.parquet").rename(d / "train.csv")
    return {"data": d / "train.csv"}


def _with_kwargs(**kwargs: Any) -> Callable[[Path], dict[str, Any]]:
    def build(d: Path) -> dict[str, Any]:
        return {"data": _write(_frame(), d / "train.csv"), **kwargs}

    return build


def _holdout_unseen_class(d: Path) -> dict[str, Any]:
    hold = _frame(50).assign(target=lambda f: f.target.where(f.index % 5 != 0, 7))
    return {"data": _write(_frame(), d / "train.csv"), "holdout": _write(hold, d / "holdout.csv")}


def _dvc(path: str | None = None, rev: str | None = None, remote: str | None = None):
    def build(d: Path) -> dict[str, Any]:
        return {"dvc": (path, rev, remote)}

    return build


def _dvc_never_pushed(d: Path) -> dict[str, Any]:
    return {"dvc": ("data/unpushed.csv", None, None), "unpushed": True}


def _dvc_dead_http_remote(d: Path) -> dict[str, Any]:
    return {"dvc": ("data/unpushed.csv", None, "web"), "unpushed": True,
            "web_remote": f"http://store:{PASSWORD}@127.0.0.1:{free_port()}/dvc"}  # fmt: skip


def _dvc_dead_git(d: Path) -> dict[str, Any]:
    return {"dvc_repo": f"https://ci:{TOKEN}@127.0.0.1:{free_port()}/org/data.git"}


def _dvc_not_a_repo(d: Path) -> dict[str, Any]:
    (d / "plain").mkdir()
    return {"dvc_repo": str(d / "plain")}


CASES = [
    TrainCase("csv_two_target_columns", _dup_target_csv, r"names column 'target' twice.*Rename or drop"),
    TrainCase("folder_file_with_two_target_columns", _dup_in_folder, r"b\.csv names column 'target' twice"),
    TrainCase("parquet_duplicated_columns", _dup_parquet, r"names column 'target' twice.*Rename or drop"),
    TrainCase("columns_differing_only_in_spaces", _spaced_dup, r"'target'.*differing only in spaces"),
    TrainCase(
        "feature_identical_to_target",
        _frame_with(label_copy=lambda f: f.target),
        r"'label_copy': it is identical to the target.*Drop it",
    ),
    TrainCase(
        "feature_threshold_map_of_target",
        _frame_with(score=lambda f: f.target * 10 + _rng().random(len(f))),
        r"'score': a threshold on it separates the classes perfectly.*Drop it",
    ),
    TrainCase(
        "feature_one_to_one_category",
        _frame_with(answer=lambda f: f.target.map({0: "no", 1: "yes"})),
        r"'answer': its values map one-to-one.*Drop it",
    ),
    TrainCase(
        "feature_determines_target",
        _frame_with(bucket=lambda f: "b" + (f.target * 5 + _rng().integers(0, 5, len(f))).astype(str)),
        r"'bucket': each of its values always comes with the same target value.*Drop it",
    ),
    TrainCase(
        "regression_feature_monotone_in_target",
        lambda d: {"data": _write(_diabetes().assign(log_t=lambda f: np.log(f.target)), d / "d.csv")},
        r"'log_t': it is a monotone function of the target.*Drop it",
    ),
    TrainCase(
        "folder_files_with_different_schemas",
        _schema_mismatch,
        r"different columns.*2024-02\.csv has \['radius_mean'\].*lacks \['mean radius'\].*same columns",
    ),
    TrainCase("three_rows", _rows(3), r"3 rows are too few.*test split holds 1 rows.*Give at least \d+ rows"),
    TrainCase(
        "fourteen_rows", _rows(14), r"14 rows are too few.*test split holds 3 rows.*Give at least 21 rows"
    ),
    TrainCase("class_with_two_rows", _rare_class, r"fewer than 5 rows \(2: 2\).*collect more rows"),
    TrainCase(
        "kmeans_as_classifier",
        _estimator("sklearn.cluster.KMeans"),
        r"KMeans is a clusterer.*Give a classifier",
    ),
    TrainCase(
        "scaler_as_estimator",
        _estimator("sklearn.preprocessing.StandardScaler"),
        r"StandardScaler is a transformer.*give a classifier",
    ),
    TrainCase(
        "inf_in_feature",
        _frame_with(x3=lambda f: f.x1.where(f.index % 17 != 0, np.inf)),
        r"'x3' holds 12 infinite values.*replace them with NaN",
    ),
    TrainCase(
        "penalty_l1_with_lbfgs",
        _estimator(LR, penalty="l1", solver="lbfgs"),
        r"failed to fit: Solver lbfgs supports only.*penalty='l1', solver='lbfgs'.*estimator_params",
    ),
    TrainCase(
        "negative_C",
        _estimator(LR, C=-1.0),
        r"The 'C' parameter of LogisticRegression.*Fix `estimator_params`",
    ),
    TrainCase("unknown_param", _estimator(LR, nope=1), r"rejects params.*nope.*Fix `estimator_params`"),
    TrainCase(
        "float_target_for_classifier",
        _float_target_classifier,
        r"holds 214 distinct numbers.*a quantity, not class labels. Choose a regressor.*task='regression'",
    ),
    TrainCase(
        "fractional_target_for_classifier",
        lambda d: {
            "data": _write(_frame().assign(target=lambda f: f.x1 * 0.5), d / "t.csv"),
            "candidates": [LR],
        },
        r"holds continuous values.*choose a regressor.*task='regression'",
    ),
    TrainCase(
        "binary_target_for_regressor",
        _binary_target_regressor,
        r"only 2 distinct values.*Choose a classifier.*task='classification'",
    ),
    TrainCase("truncated_parquet", _truncated_parquet, r"not a readable Parquet file.*truncated.*Re-export"),
    TrainCase("csv_named_parquet", _csv_named_parquet, r"not a readable Parquet file.*\.csv"),
    TrainCase("parquet_named_csv", _parquet_named_csv, r"not UTF-8 text.*Parquet file named \.csv"),
    TrainCase(
        "malformed_csv",
        _csv_text("x1,target\n1,0\n2,1,3\n" + "".join(f"{i},{i % 2}\n" for i in range(50))),
        r"not a well-formed CSV.*line 3.*fix the rows",
    ),
    TrainCase(
        "all_nan_feature",
        _frame_with(empty=lambda f: np.nan),
        r"'empty' has no values \(all 200 are missing\): drop it",
    ),
    TrainCase("features_listed_twice", _with_kwargs(features=["x1", "x1"]), r"lists \['x1'\] more than once"),
    TrainCase("target_among_features", _with_kwargs(features=["x1", "target"]), r"includes the target"),
    TrainCase("features_as_a_string", _with_kwargs(features="x1,x2"), r"must be a list of column names"),
    TrainCase(
        "task_contradicts_estimator",
        _with_kwargs(task="regression", candidates=[LR]),
        r"task='regression' but the estimator is a classifier.*task='classification'",
    ),
    TrainCase(
        "candidates_mix_kinds",
        _with_kwargs(candidates=[LR, "sklearn.linear_model.Ridge"]),
        r"mix classifiers and regressors",
    ),
    TrainCase(
        "text_target_for_regression",
        lambda d: {
            "data": _write(_frame().assign(target=lambda f: f.target.map({0: "a", 1: "b"})), d / "t.csv"),
            "task": "regression",
        },  # fmt: skip
        r"holds labels.*choose a classifier",
    ),
    TrainCase(
        "holdout_with_unseen_class",
        _holdout_unseen_class,
        r"holdout holds classes \[7\].*training data lacks",
    ),
    TrainCase(
        "model_name_with_slash",
        _with_kwargs(model_name="team/model"),
        r"cannot contain '/'.*registered_model_name",
    ),
    TrainCase("empty_csv", _csv_text(""), r"is empty: it needs a header row"),
    TrainCase("header_only_csv", _csv_text("x1,target\n"), r"has no rows"),
    TrainCase(
        "dvc_path_not_tracked",
        _dvc("data/nope.csv"),
        r"'data/nope.csv' is not in DVC repo.*check path and rev",
    ),
    TrainCase(
        "dvc_unknown_revision", _dvc(rev="no-such-branch"), r"Revision 'no-such-branch' does not exist"
    ),
    TrainCase(
        "dvc_unknown_remote", _dvc(remote="nope"), r"DVC remote 'nope' is not configured.*dvc remote add"
    ),
    TrainCase(
        "dvc_data_never_pushed",
        _dvc_never_pushed,
        r"tracked by DVC.*neither in the DVC cache nor on the DVC remote 'local'.*never pushed.*run `dvc push`",
    ),
    TrainCase(
        "dvc_http_remote_down_with_password",
        _dvc_dead_http_remote,
        r"DVC remote 'web' \(http://\*\*\*@127\.0\.0\.1:\d+/dvc\) does not answer.*start it or fix its URL",
        error=MlopsServiceError,
        dead=True,
        secrets=(PASSWORD,),
    ),
    TrainCase("dvc_repo_not_a_repository", _dvc_not_a_repo, r"is not a git repository with DVC.*dvc init"),
    TrainCase(
        "dvc_git_host_down_with_token",
        _dvc_dead_git,
        r"Cannot open DVC repo https://\*\*\*@127\.0\.0\.1.*check that the git URL is reachable",
        error=MlopsServiceError,
        dead=True,
        secrets=(TOKEN,),
    ),
    TrainCase(
        "mlflow_down_with_password",
        _with_kwargs(),
        r"MLflow at http://(\*\*\*@)?127\.0\.0\.1:\d+ is unreachable.*start the server",
        error=MlopsServiceError,
        tracking="dead",
        dead=True,
        secrets=(PASSWORD,),
    ),
]


def _state(client) -> tuple[set[str], int, set[str]]:
    """Experiments (all, deleted too), the number of runs, and registered model names on the server."""
    from mlflow.entities import ViewType

    exps = client.search_experiments(view_type=ViewType.ALL, max_results=50_000)
    ids = [e.experiment_id for e in exps]
    runs = len(client.search_runs(ids, run_view_type=ViewType.ALL, max_results=50_000)) if ids else 0
    models = {m.name for m in client.search_registered_models(max_results=1000)}
    return {e.name for e in exps}, runs, models


@pytest.fixture
def unpushed(dvc_repo: dict) -> str:
    """A file tracked by DVC and committed, whose data was never pushed and is gone from the cache."""
    repo = dvc_repo["path"]
    _write(_frame(), repo / "data" / "unpushed.csv")
    subprocess.run([sys.executable, "-m", "dvc", "add", "-q", "data/unpushed.csv"], cwd=repo, check=True)
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "unpushed data"], cwd=repo, check=True)
    shutil.rmtree(repo / ".dvc" / "cache")
    (repo / "data" / "unpushed.csv").unlink()
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_training_corpus(case: TrainCase, mlflow_server, mlflow_client, request, tmp_path):
    from airflow_mlops.core.model_logging import DatasetInfo
    from airflow_mlops.core.tracking import MlflowTarget
    from airflow_mlops.core.training import train_and_register

    kwargs = case.build(tmp_path)
    # The git + DVC repository costs a few seconds: only the cases that read from it make one.
    dvc_repo = request.getfixturevalue("dvc_repo") if {"dvc", "dvc_repo"} & set(kwargs) else None
    if kwargs.pop("unpushed", False):
        request.getfixturevalue("unpushed")
    if "web_remote" in kwargs:
        remote = ["dvc", "remote", "add", "web", kwargs.pop("web_remote")]
        subprocess.run([sys.executable, "-m", *remote], cwd=dvc_repo["path"], check=True, capture_output=True)
    name = kwargs.pop("model_name", f"corpus-{case.id}-{uuid.uuid4().hex[:6]}")
    if "dvc" in kwargs:
        path, rev, remote = kwargs.pop("dvc")
        repo = str(dvc_repo["path"])
        dataset: Any = lambda: DatasetInfo.from_dvc(repo, path or dvc_repo["data_path"], rev, remote)  # noqa: E731
    elif "dvc_repo" in kwargs:
        repo = kwargs.pop("dvc_repo")
        dataset = lambda: DatasetInfo.from_dvc(repo, dvc_repo["data_path"])  # noqa: E731
    else:
        data = kwargs.pop("data")
        dataset = lambda: DatasetInfo.from_path(data)  # noqa: E731
    if isinstance(kwargs.get("holdout"), Path):
        from airflow_mlops.core.data import read_table

        hold = kwargs.pop("holdout")
        kwargs["holdout"] = lambda: read_table(hold)
    uri = mlflow_server if case.tracking == "server" else f"http://admin:{PASSWORD}@127.0.0.1:{free_port()}"
    before = _state(mlflow_client)
    started = time.monotonic()
    with pytest.raises(Exception) as info:  # the type is asserted below, with the message
        train_and_register(MlflowTarget(uri), name, "target", dataset, kwargs.pop("candidates", ()), **kwargs)
    took = time.monotonic() - started
    err = info.value
    assert type(err) is case.error, f"{type(err).__name__}: {err}"
    assert re.search(case.message, str(err), re.S), str(err)
    if case.dead:
        assert took < DEAD_SERVICE_SECONDS, f"{took:.1f}s"
    chain: BaseException | None = err
    text = ""
    while chain is not None:  # what a traceback of it would print
        text += f"{chain}\n"
        chain = chain.__cause__ or (None if chain.__suppress_context__ else chain.__context__)
    for secret in case.secrets:
        assert secret not in text
    # Nothing changed: no experiment, no run, no registered model (nor version).
    after = _state(mlflow_client)
    assert after == before
    assert name not in after[2]
    assert mlflow_client.search_model_versions(f"name='{name}'") == []


def test_a_deleted_experiment_is_refused_before_training(mlflow_server, mlflow_client, tmp_path):
    """A deleted experiment of the same name: refused with the fix, no run is started in it."""
    from airflow_mlops.core.model_logging import DatasetInfo
    from airflow_mlops.core.tracking import MlflowTarget
    from airflow_mlops.core.training import train_and_register

    name = f"corpus-deleted-exp-{uuid.uuid4().hex[:6]}"
    exp_id = mlflow_client.create_experiment(name)
    mlflow_client.delete_experiment(exp_id)
    data = _write(_frame(), tmp_path / "train.csv")
    before = _state(mlflow_client)
    with pytest.raises(
        MlopsInputError, match=r"experiment .* is deleted: restore it.*another `experiment_name`"
    ):
        train_and_register(MlflowTarget(mlflow_server), name, "target", DatasetInfo.from_path(data), [LR])
    assert _state(mlflow_client) == before


def test_legitimate_data_still_trains(mlflow_server, mlflow_client, tmp_path):
    """The checks refuse what they should and nothing else: real datasets, a folder of agreeing files."""
    from sklearn.datasets import load_iris, load_wine

    from airflow_mlops.core.model_logging import DatasetInfo
    from airflow_mlops.core.tracking import MlflowTarget
    from airflow_mlops.core.training import train_and_register, train_model

    for frame in (_bc(), load_wine(as_frame=True).frame, load_iris(as_frame=True).frame, _diabetes()):
        train_model(frame, "target", [])
    bc = _bc()
    _write(bc.iloc[:300], tmp_path / "parts" / "a.csv")
    _write(bc.iloc[300:][list(reversed(bc.columns))], tmp_path / "parts" / "b.parquet")  # order may differ
    name = f"corpus-ok-{uuid.uuid4().hex[:6]}"
    result = train_and_register(
        MlflowTarget(mlflow_server), name, "target", DatasetInfo.from_path(tmp_path / "parts"), [LR]
    )
    assert result["version"] == "1" and result["metrics"]["f1"] > 0.9
    # A column that does predict perfectly, but is allowed by name, trains.
    leaky = _frame().assign(label_copy=lambda f: f.target)
    train_model(leaky, "target", [LR], allow_perfect_predictors=["label_copy"])


class _GitSmartHttp(http.server.BaseHTTPRequestHandler):
    """Git's smart HTTP protocol through ``git http-backend`` (a CGI program shipped with git)."""

    root: str = ""
    auth: list[str] = []

    def _cgi(self) -> None:
        path, _, query = self.path.partition("?")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.auth.append(self.headers.get("Authorization") or "")
        env = {
            **os.environ,
            "GIT_PROJECT_ROOT": self.root,
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "REQUEST_METHOD": self.command,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": "127.0.0.1",
        }
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        status, headers = 200, []
        for line in head.decode().split("\r\n"):
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = int(value.split()[0])
            elif key:
                headers.append((key, value.strip()))
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _cgi

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def git_url_with_token(dvc_repo: dict, tmp_path: Path):
    """The DVC repository served over HTTP at ``http://ci:TOKEN@127.0.0.1:PORT/data.git``.

    The shared repo's remote is relative (each test copies it), which a clone over HTTP cannot resolve:
    served, the repo names its remote by absolute path, as a user's repo names its bucket (a commit of
    its own; ``dvc_repo["rev"]`` becomes that commit)."""
    repo = dvc_repo["path"]
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run([*dvc, "remote", "modify", "local", "url", str(dvc_repo["remote"])], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-qam", "remote by absolute path"], cwd=repo, check=True)
    dvc_repo["rev"] = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()
    root = tmp_path / "git-root"
    root.mkdir()
    subprocess.run(
        ["git", "clone", "-q", "--bare", str(dvc_repo["path"]), str(root / "data.git")], check=True
    )
    handler = type("Handler", (_GitSmartHttp,), {"root": str(root), "auth": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://ci:{TOKEN}@127.0.0.1:{server.server_address[1]}/data.git", handler
    server.shutdown()
    server.server_close()


def test_tags_and_result_hold_the_redacted_repo_url(
    mlflow_server, mlflow_client, dvc_repo, git_url_with_token
):
    """Training from a git URL with a token: lineage tags, dataset source, description and the result hold
    ``http://***@host/...``; the token is nowhere in the run or the version."""
    from airflow_mlops.core.model_logging import DatasetInfo
    from airflow_mlops.core.tracking import MlflowTarget
    from airflow_mlops.core.training import train_and_register

    url, handler = git_url_with_token
    name = f"corpus-secret-tags-{uuid.uuid4().hex[:6]}"
    result = train_and_register(
        MlflowTarget(mlflow_server),
        name,
        "target",
        lambda: DatasetInfo.from_dvc(url, dvc_repo["data_path"], dvc_repo["rev"]),
        [{"estimator": LR, "params": {"max_iter": 500}}],
    )
    assert any(handler.auth), "the git server never saw the credentials: the URL was not used"
    shown = url.replace(f"ci:{TOKEN}", "***")
    assert result["dataset_source"] == f"dvc://{shown}::{dvc_repo['data_path']}@{dvc_repo['rev']}"
    run = mlflow_client.get_run(result["run_id"])
    assert run.data.tags["mlops.dvc.repo"] == shown
    assert run.data.tags["mlops.dvc.commit"] == dvc_repo["rev"]
    mv = mlflow_client.get_model_version(name, result["version"])
    assert mv.tags["mlops.dvc.repo"] == shown
    (ds,) = run.inputs.dataset_inputs
    stored = " ".join([str(run.data.tags), str(run.data.params), str(mv.tags), mv.description or "",
                       ds.dataset.source, str(result)])  # fmt: skip
    assert TOKEN not in stored and shown in stored


# TrainOperator end to end (dag.test()): bad input fails at once (AirflowFailException, no retry), the
# message is in the task log, and nothing is registered.
OPERATOR_CASES = [
    ("csv_two_target_columns", _dup_target_csv, {}, r"names column 'target' twice"),
    ("kmeans_as_classifier", _estimator("sklearn.cluster.KMeans"), {}, r"KMeans is a clusterer"),
    (
        "penalty_l1_with_lbfgs",
        _estimator(LR, penalty="l1", solver="lbfgs"),
        {},
        r"penalty='l1', solver='lbfgs'",
    ),
]


@pytest.mark.parametrize(
    ("case", "build", "conf", "message"), OPERATOR_CASES, ids=[c[0] for c in OPERATOR_CASES]
)
def test_operator_fails_at_once_on_bad_input(
    airflow_db, mlflow_conn, mlflow_client, tmp_path, model_name, capfd, case, build, conf, message
):
    kwargs = build(tmp_path)
    conf = {**conf, "data": str(kwargs["data"])}
    if kwargs.get("candidates"):
        (cand,) = kwargs["candidates"]
        conf.update(estimator=cand["estimator"], estimator_params=cand["params"])
    before = _state(mlflow_client)
    dr = run_dag("test_train_model", model_name=model_name, **conf)
    out = "".join(capfd.readouterr())
    assert dr.state == "failed"
    assert "AirflowFailException" in out, out[-3000:]
    assert re.search(message, out), out[-3000:]
    assert _state(mlflow_client) == before


def test_operator_masks_credentials_in_xcom_and_tags(
    airflow_db, mlflow_server, mlflow_client, dvc_repo, git_url_with_token, model_name, monkeypatch, capfd
):
    """MLflow and DVC connections whose URLs carry credentials: the run trains, and neither the XCom result,
    the run link, the tags nor the task log show them."""
    url, _ = git_url_with_token
    host = mlflow_server.replace("http://", f"http://admin:{PASSWORD}@")
    monkeypatch.setenv(*conn_env("mlflow_default", {"conn_type": "mlflow", "host": host}))
    monkeypatch.setenv(*conn_env("dvc_default", {"conn_type": "dvc", "host": url}))
    dr = run_dag("test_train_model", model_name=model_name, dvc_path=dvc_repo["data_path"],
                 estimator=LR, estimator_params={"max_iter": 500})  # fmt: skip
    out = "".join(capfd.readouterr())
    assert dr.state == "success", out[-3000:]
    ti = next(t for t in dr.get_task_instances() if t.task_id == "train")
    result = ti.xcom_pull(task_ids="train")
    link = ti.xcom_pull(task_ids="train", key="mlflow_run_url")
    assert "***@" in result["dataset_source"] and "***@" in link
    tags = mlflow_client.get_run(result["run_id"]).data.tags
    assert tags["mlops.dvc.repo"] == url.replace(f"ci:{TOKEN}", "***")
    for text in (str(result), link, str(tags), out):
        assert TOKEN not in text and PASSWORD not in text

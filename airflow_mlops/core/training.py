"""Training: data checks, one preprocessing pipeline, model selection and evaluation."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_mlops.core.errors import MlopsInputError
from airflow_mlops.core.metrics import greater_is_better, score_model

if TYPE_CHECKING:
    import pandas as pd

TASKS = ("classification", "regression")
# An integer target with at most this many distinct values is taken for class labels.
MAX_INT_CLASSES = 20
DEFAULT_ESTIMATORS = {
    "classification": "sklearn.ensemble.RandomForestClassifier",
    "regression": "sklearn.ensemble.RandomForestRegressor",
}


@dataclass
class Candidate:
    """One estimator to try: an import path and its constructor parameters."""

    estimator: str
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: Candidate | dict[str, Any] | str) -> Candidate:
        """Accept a Candidate, a ``{"estimator": ..., "params": ...}`` dict or a bare import path."""
        if isinstance(spec, Candidate):
            return spec
        if isinstance(spec, str):
            return cls(spec)
        if isinstance(spec, dict) and "estimator" in spec:
            unknown = set(spec) - {"estimator", "params"}
            if unknown:
                raise MlopsInputError(
                    f"Candidate {spec} has unknown keys {sorted(unknown)}: use 'estimator' and 'params'."
                )
            return cls(str(spec["estimator"]), dict(spec.get("params") or {}))
        raise MlopsInputError(
            f"Candidate {spec!r} is not understood: give {{'estimator': 'pkg.Class', 'params': {{...}}}}."
        )


@dataclass
class TrainOutcome:
    """What training produced: the fitted pipeline and everything worth logging about it."""

    model: Any
    task: str
    features: list[str]
    target: str
    metrics: dict[str, float]
    candidate: Candidate
    candidate_scores: list[dict[str, Any]]
    selection_metric: str
    X_train: pd.DataFrame
    X_test: pd.DataFrame
    y_test: pd.Series


def detect_task(y: pd.Series) -> str:
    """Guess the task from the target: labels (text, bool, few integers) mean classification.

    :param y: the target column.
    """
    import pandas as pd

    if pd.api.types.is_bool_dtype(y) or not pd.api.types.is_numeric_dtype(y):
        return "classification"
    if pd.api.types.is_integer_dtype(y) and y.nunique() <= MAX_INT_CLASSES:
        return "classification"
    return "regression"


def check_training_frame(
    df: pd.DataFrame, target: str, features: list[str] | None, task: str | None
) -> tuple[list[str], str]:
    """Validate a training frame; return the feature columns and the task.

    :param df: the training data.
    :param target: target column name.
    :param features: feature columns, or None for every column but the target.
    :param task: ``classification``, ``regression`` or None to detect it.
    """
    import pandas as pd

    if df.empty:
        raise MlopsInputError("The training data has no rows: check the data file or DVC revision.")
    if target not in df.columns:
        raise MlopsInputError(
            f"Target column {target!r} is not in the data (columns: {list(df.columns)[:20]}): fix `target`."
        )
    feats = list(features) if features else [c for c in df.columns if c != target]
    missing = [c for c in feats if c not in df.columns]
    if missing:
        raise MlopsInputError(f"Feature columns {missing} are not in the data: fix `features`.")
    if not feats:
        raise MlopsInputError("There are no feature columns: the data holds only the target.")
    y = df[target]
    if y.isna().any():
        raise MlopsInputError(
            f"Target column {target!r} has {int(y.isna().sum())} missing values: drop or label those rows."
        )
    if task is not None and task not in TASKS:
        raise MlopsInputError(f"Unknown task {task!r}: use one of {TASKS} or leave it unset to detect it.")
    task = task or detect_task(y)
    if task == "classification" and y.nunique() < 2:
        raise MlopsInputError(
            f"Target column {target!r} has a single class ({y.iloc[0]!r}): a classifier needs two or more."
        )
    for col in feats:
        s = df[col]
        if pd.api.types.is_datetime64_any_dtype(s) or pd.api.types.is_timedelta64_dtype(s):
            raise MlopsInputError(
                f"Feature column {col!r} holds dates or durations, which cannot be encoded: "
                "derive numeric features from it or drop it from `features`."
            )
        if s.dtype == object:
            kinds = {type(v) for v in s.dropna().head(1000)}
            bad = kinds - {str, bool, int, float}
            if bad:
                raise MlopsInputError(
                    f"Feature column {col!r} holds values of type {sorted(k.__name__ for k in bad)}, which "
                    "cannot be encoded: convert it to numbers or text, or drop it from `features`."
                )
    return feats, task


def resolve_estimator(candidate: Candidate) -> Any:
    """Import and build the estimator; check its parameters before any fitting.

    :param candidate: the estimator path and parameters.
    """
    from sklearn.base import BaseEstimator

    module_name, _, cls_name = candidate.estimator.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name) if module_name else None
    except (ImportError, AttributeError):
        cls = None
    if cls is None or not (isinstance(cls, type) and hasattr(cls, "fit")):
        raise MlopsInputError(
            f"Estimator {candidate.estimator!r} cannot be imported as an estimator class: "
            "give a full import path such as 'sklearn.ensemble.RandomForestClassifier'."
        )
    try:
        est = cls(**candidate.params)
        if isinstance(est, BaseEstimator) and hasattr(est, "_validate_params"):
            est._validate_params()  # sklearn checks values only at fit time; fail before any run starts
    except Exception as e:  # noqa: BLE001 - any rejection of the params is the user's to fix
        raise MlopsInputError(
            f"Estimator {candidate.estimator} rejects params {candidate.params}: {e}. Fix `estimator_params`."
        ) from e
    return est


def build_pipeline(estimator: Any, X: pd.DataFrame) -> Any:
    """One sklearn Pipeline: impute and scale numbers, one-hot encode categories, then the estimator.

    The logged model therefore takes raw feature columns.

    :param estimator: an unfitted estimator.
    :param X: the feature frame, whose dtypes pick the column treatment.
    """
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = [
        c for c in X.columns if pd.api.types.is_numeric_dtype(X[c]) and not pd.api.types.is_bool_dtype(X[c])
    ]
    categorical = [c for c in X.columns if c not in numeric]
    transformers = []
    if numeric:
        transformers.append(
            (
                "num",
                Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]),
                numeric,
            )
        )
    if categorical:
        transformers.append(
            (
                "cat",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="most_frequent")),
                        ("onehot", OneHotEncoder(handle_unknown="ignore")),
                    ]
                ),
                categorical,
            )
        )
    pre = ColumnTransformer(transformers, remainder="drop")
    return Pipeline([("preprocess", pre), ("model", estimator)])


def prepare_features(X: pd.DataFrame) -> pd.DataFrame:
    """Cast text-like columns to str so that mixed str/number columns encode as categories."""
    import pandas as pd

    X = X.copy()
    for c in X.columns:
        if X[c].dtype == object or isinstance(X[c].dtype, pd.CategoricalDtype):
            X[c] = X[c].astype("string").astype(object).where(X[c].notna(), None)
    return X


def train_model(
    df: pd.DataFrame,
    target: str,
    candidates: list[Candidate],
    *,
    features: list[str] | None = None,
    task: str | None = None,
    test_size: float = 0.2,
    random_state: int = 42,
    holdout: pd.DataFrame | None = None,
    selection_metric: str | None = None,
) -> TrainOutcome:
    """Fit the candidates, keep the best on a validation split, and score it on the test data.

    With one candidate, it is fitted on the training split and scored on the test split (or the holdout).
    With several, each is scored on a validation part of the training split, the best is refitted on the
    whole training split, then scored on the test data, so the test score is not used for selection.

    :param df: training data.
    :param target: target column.
    :param candidates: estimators to try (a random forest for the task when empty).
    :param features: feature columns (default: all but the target).
    :param task: ``classification`` or ``regression`` (detected when None).
    :param test_size: share of rows held out for testing when no holdout is given.
    :param random_state: seed of the splits.
    :param holdout: explicit test data with the same columns.
    :param selection_metric: metric for model selection (default f1 / rmse).
    """
    from sklearn.base import clone
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_size < 1.0:
        raise MlopsInputError(f"test_size={test_size} must be between 0 and 1 (exclusive).")
    feats, task = check_training_frame(df, target, features, task)
    candidates = list(candidates) or [Candidate(DEFAULT_ESTIMATORS[task], {"random_state": random_state})]
    estimators = [resolve_estimator(c) for c in candidates]
    X = prepare_features(df[feats])
    y = df[target]
    stratify = y if task == "classification" and y.value_counts().min() >= 2 else None
    if holdout is not None:
        check_training_frame(holdout, target, feats, task)
        X_train, y_train = X, y
        X_test, y_test = prepare_features(holdout[feats]), holdout[target]
    else:
        try:
            X_train, X_test, y_train, y_test = train_test_split(
                X, y, test_size=test_size, random_state=random_state, stratify=stratify
            )
        except ValueError as e:
            raise MlopsInputError(f"Cannot split {len(df)} rows for testing: {e}. Give more data.") from e
    metric = selection_metric or ("f1" if task == "classification" else "rmse")
    scores: list[dict[str, Any]] = []
    best = 0
    if len(candidates) > 1:
        strat = y_train if stratify is not None and y_train.value_counts().min() >= 2 else None
        X_fit, X_val, y_fit, y_val = train_test_split(
            X_train, y_train, test_size=0.25, random_state=random_state, stratify=strat
        )
        sign = 1 if greater_is_better(metric) else -1
        for i, (cand, est) in enumerate(zip(candidates, estimators, strict=True)):
            pipe = build_pipeline(clone(est), X_fit).fit(X_fit, y_fit)
            val = score_model(pipe, task, X_val, y_val)
            if metric not in val:
                raise MlopsInputError(
                    f"Selection metric {metric!r} is not one of {sorted(val)}: fix `selection_metric`."
                )
            scores.append(
                {
                    "estimator": cand.estimator,
                    "params": cand.params,
                    **{f"val_{k}": v for k, v in val.items()},
                }
            )
            if sign * val[metric] > sign * scores[best][f"val_{metric}"]:
                best = i
    model = build_pipeline(clone(estimators[best]), X_train).fit(X_train, y_train)
    metrics = score_model(model, task, X_test, y_test)
    return TrainOutcome(
        model=model,
        task=task,
        features=feats,
        target=target,
        metrics=metrics,
        candidate=candidates[best],
        candidate_scores=scores,
        selection_metric=metric,
        X_train=X_train,
        X_test=X_test,
        y_test=y_test,
    )

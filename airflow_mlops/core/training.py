"""Training: data checks, one preprocessing pipeline, model selection and evaluation."""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_mlops.core.data import check_unique_columns
from airflow_mlops.core.errors import MlopsInputError
from airflow_mlops.core.metrics import (
    CLASSIFICATION_METRICS,
    REGRESSION_METRICS,
    greater_is_better,
    score_model,
)

if TYPE_CHECKING:
    import pandas as pd

    from airflow_mlops.core.model_logging import DatasetInfo
    from airflow_mlops.core.tracking import MlflowTarget

TASKS = ("classification", "regression")
# An integer target with at most this many distinct values is taken for class labels.
MAX_INT_CLASSES = 20
# Smallest splits worth measuring: a test split of one row says nothing about the model.
MIN_TRAIN_ROWS = 10
MIN_TEST_ROWS = 5
# Each class needs rows in both splits, and enough to be learnt at all.
MIN_CLASS_ROWS = 5
# Below this many training rows a perfect single-feature split is too likely by chance to call it a leak
# (identical and one-to-one copies of the target are refused at any size).
MIN_LEAK_CHECK_ROWS = 20
LEAK_CHECK_SAMPLE = 200_000
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
            params = spec.get("params") or {}
            if not isinstance(params, dict):
                raise MlopsInputError(
                    f"Params of candidate {spec['estimator']!r} must be a mapping of parameter names to "
                    f"values, not {type(params).__name__} {params!r}: fix `params`."
                )
            return cls(str(spec["estimator"]), dict(params))
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
    if y.nunique() <= MAX_INT_CLASSES and (
        pd.api.types.is_integer_dtype(y) or bool((y.dropna() % 1 == 0).all())
    ):
        return "classification"
    return "regression"


def check_training_frame(
    df: pd.DataFrame,
    target: str,
    features: list[str] | None,
    task: str | None,
    estimator_task: str | None = None,
    *,
    what: str = "The training data",
) -> tuple[list[str], str]:
    """Validate a training frame; return the feature columns and the task.

    Checks structure (columns, duplicates), the target (missing values, type against the task) and every
    feature (types, infinities, all missing), each failure an :class:`MlopsInputError` naming the fix.

    :param df: the training data.
    :param target: target column name.
    :param features: feature columns, or None for every column but the target.
    :param task: ``classification``, ``regression`` or None to detect it.
    :param estimator_task: the task the chosen estimators are built for (None when unknown).
    :param what: how to name the data in messages.
    """
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise MlopsInputError(f"{what} is a {type(df).__name__}, not a table: give a pandas DataFrame.")
    check_unique_columns(list(df.columns), what)
    if df.empty:
        raise MlopsInputError(f"{what} has no rows: check the data file or DVC revision.")
    if not isinstance(target, str) or not target:
        raise MlopsInputError(f"`target` must name a column, not {target!r}: fix `target`.")
    if target not in df.columns:
        raise MlopsInputError(
            f"Target column {target!r} is not in the data (columns: {list(df.columns)[:20]}): fix `target`."
        )
    if features is not None and (isinstance(features, str) or not isinstance(features, (list, tuple))):
        raise MlopsInputError(
            f"`features` must be a list of column names, not {type(features).__name__} {features!r}: "
            "give e.g. ['age', 'income']."
        )
    feats = list(features) if features else [c for c in df.columns if c != target]
    dups = sorted({str(c) for c in feats if feats.count(c) > 1})
    if dups:
        raise MlopsInputError(f"`features` lists {dups} more than once: name each feature once.")
    if target in feats:
        raise MlopsInputError(
            f"`features` includes the target {target!r}: a model would read the answer. Remove it from `features`."
        )
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
    if task is not None and estimator_task is not None and task != estimator_task:
        kind = "classifier" if estimator_task == "classification" else "regressor"
        raise MlopsInputError(
            f"task={task!r} but the estimator is a {kind}: give a "
            f"{'classifier' if task == 'classification' else 'regressor'} (e.g. {DEFAULT_ESTIMATORS[task]}) "
            f"or set task={estimator_task!r}."
        )
    task = task or estimator_task or detect_task(y)
    _check_target(y, target, task)
    for col in feats:
        _check_feature(df[col], col)
    return feats, task


def _check_target(y: pd.Series, target: str, task: str) -> None:
    """The target suits the task: class labels for a classifier, many numbers for a regressor."""
    import numpy as np
    import pandas as pd
    from sklearn.utils.multiclass import type_of_target

    examples = ", ".join(repr(v) for v in y.drop_duplicates().head(3).tolist())
    numeric = pd.api.types.is_numeric_dtype(y) and not pd.api.types.is_bool_dtype(y)
    if numeric and not np.isfinite(y.to_numpy(dtype=float)).all():
        raise MlopsInputError(
            f"Target column {target!r} holds infinite values: drop those rows or replace them with finite numbers."
        )
    if task == "classification":
        if y.dtype == object:
            kinds = {type(v).__name__ for v in y.head(10_000)}
            if len(kinds) > 1 and not kinds <= {"int", "float"}:
                raise MlopsInputError(
                    f"Target column {target!r} mixes value types {sorted(kinds)} (e.g. {examples}): give "
                    "labels of one type (all text or all numbers)."
                )
        try:
            kind = type_of_target(y)
        except ValueError:
            kind = "unknown"
        looks_like_quantity = (
            pd.api.types.is_numeric_dtype(y)
            and not pd.api.types.is_bool_dtype(y)
            and y.nunique() > MAX_INT_CLASSES
            and float(y.value_counts().median()) < MIN_CLASS_ROWS
        )
        if looks_like_quantity and not kind.startswith("continuous"):
            raise MlopsInputError(
                f"Target column {target!r} holds {y.nunique()} distinct numbers (e.g. {examples}), most seen "
                f"fewer than {MIN_CLASS_ROWS} times: that is a quantity, not class labels. Choose a regressor "
                f"(e.g. {DEFAULT_ESTIMATORS['regression']}) or task='regression', or bin the target into classes."
            )
        if kind.startswith("continuous"):
            raise MlopsInputError(
                f"Target column {target!r} holds continuous values (e.g. {examples}), which a classifier "
                f"cannot learn: choose a regressor (e.g. {DEFAULT_ESTIMATORS['regression']}) or "
                "task='regression', or bin the target into classes."
            )
        if y.nunique() < 2:
            raise MlopsInputError(
                f"Target column {target!r} has a single class ({y.iloc[0]!r}): a classifier needs two or more."
            )
        return
    if pd.api.types.is_bool_dtype(y) or not pd.api.types.is_numeric_dtype(y):
        raise MlopsInputError(
            f"Target column {target!r} holds labels (e.g. {examples}), which a regressor cannot learn: "
            f"choose a classifier (e.g. {DEFAULT_ESTIMATORS['classification']}) or task='classification'."
        )
    n = y.nunique()
    if n <= 2:
        raise MlopsInputError(
            f"Target column {target!r} holds only {n} distinct values ({examples}): that is a class label, "
            f"not a quantity. Choose a classifier (e.g. {DEFAULT_ESTIMATORS['classification']}) or "
            "task='classification'."
        )


def _check_feature(s: pd.Series, col: str) -> None:
    """A feature column can be encoded: no dates, no odd objects, no infinities, not entirely missing."""
    import numpy as np
    import pandas as pd

    if s.isna().all():
        raise MlopsInputError(
            f"Feature column {col!r} has no values (all {len(s)} are missing): drop it from the data or `features`."
        )
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
        return
    if pd.api.types.is_float_dtype(s):
        n_inf = int(np.isinf(s.to_numpy(dtype=float, na_value=np.nan)).sum())
        if n_inf:
            raise MlopsInputError(
                f"Feature column {col!r} holds {n_inf} infinite values (inf or -inf), which no estimator "
                "accepts: replace them with NaN (then they are imputed) or finite numbers, or drop the column."
            )


def check_split_sizes(
    y: pd.Series, task: str, test_size: float, *, holdout_rows: int | None = None, n_candidates: int = 1
) -> None:
    """Refuse data too small to train and measure a model: per split, and per class.

    :param y: the target of the training data.
    :param task: the task.
    :param test_size: share of rows for the test split (ignored with a holdout).
    :param holdout_rows: rows of the holdout used as the test split, if any.
    :param n_candidates: estimators to choose from (more than one needs a validation split too).
    """
    n = len(y)
    if holdout_rows is None:
        n_test = math.ceil(test_size * n)  # as train_test_split rounds
        n_train = n - n_test
    else:
        n_test, n_train = holdout_rows, n
    if n_train < MIN_TRAIN_ROWS or n_test < MIN_TEST_ROWS:
        if holdout_rows is None:
            need = next(
                m for m in range(1, 10**7)
                if math.ceil(test_size * m) >= MIN_TEST_ROWS and m - math.ceil(test_size * m) >= MIN_TRAIN_ROWS
            )  # fmt: skip
            raise MlopsInputError(
                f"{n} rows are too few: with test_size={test_size} the test split holds {n_test} rows and the "
                f"training split {n_train} (at least {MIN_TEST_ROWS} and {MIN_TRAIN_ROWS} are needed). Give at "
                f"least {need} rows, or a `holdout` of {MIN_TEST_ROWS}+ rows."
            )
        raise MlopsInputError(
            f"Too few rows: {n_train} to train on and a holdout of {n_test} (at least {MIN_TRAIN_ROWS} and "
            f"{MIN_TEST_ROWS} are needed): give more data."
        )
    if n_candidates > 1:
        n_val = math.ceil(0.25 * n_train)
        if n_val < MIN_TEST_ROWS:
            raise MlopsInputError(
                f"Choosing among {n_candidates} candidates needs a validation split of {MIN_TEST_ROWS}+ rows; "
                f"{n_train} training rows give {n_val}. Give more data, or a single `estimator`."
            )
    if task == "classification":
        counts = y.value_counts()
        rare = counts[counts < MIN_CLASS_ROWS]
        if len(rare):
            shown = ", ".join(f"{k!r}: {v}" for k, v in list(rare.items())[:10])
            raise MlopsInputError(
                f"Classes with fewer than {MIN_CLASS_ROWS} rows ({shown}) cannot appear in both the training and "
                "the test split: collect more rows of them, merge them into other classes, or drop those rows."
            )


def find_target_leaks(X: pd.DataFrame, y: pd.Series, task: str) -> dict[str, str]:
    """Features that reproduce the target on their own: identical to it, mapping one-to-one onto it,
    determining it value by value, separating the classes with thresholds, or (regression) a monotone
    function of it. Returns ``{column: how}``.

    A model trained with such a feature scores perfectly and learns nothing else; it is almost always the
    target leaking in (a copy, a duplicated column, a field filled in after the fact).

    :param X: the training features.
    :param y: the training target.
    :param task: the task.
    """
    if len(X) > LEAK_CHECK_SAMPLE:  # a leak on all rows is one on any sample: confirm on all rows after
        idx = X.sample(LEAK_CHECK_SAMPLE, random_state=0).index
        first = find_target_leaks(X.loc[idx], y.loc[idx], task)
        return {c: how for c in first if (how := _leak(X[c], y, task))}
    return {c: how for c in X.columns if (how := _leak(X[c], y, task))}


def _leak(s: pd.Series, y: pd.Series, task: str) -> str | None:
    import numpy as np
    import pandas as pd

    known = s.notna().to_numpy()
    if known.sum() < 0.9 * len(s):
        return None
    s, y = s[known], y[known]
    n_y = y.nunique()
    if n_y < 2:
        return None
    yv = y.to_numpy()
    try:
        if (s.to_numpy() == yv).all():
            return "it is identical to the target"
    except (TypeError, ValueError):
        pass
    try:
        groups = pd.DataFrame({"f": s.to_numpy(), "y": yv}).groupby("f", sort=False)["y"]
        per_value, sizes = groups.nunique(), groups.size()
    except TypeError:  # unhashable values: leave them to the encoder's checks
        return None
    pure = len(sizes) >= 2 and bool((per_value <= 1).all())
    numeric = pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)
    # A tied feature value with two target values rules out every perfect map below.
    if pure and numeric and len(s) >= MIN_LEAK_CHECK_ROWS:
        ys = yv[np.argsort(s.to_numpy(dtype=float), kind="stable")]
        if task == "regression":
            steps = np.diff(ys.astype(float))
            if (steps >= 0).all() or (steps <= 0).all():
                return "it is a monotone function of the target"
        elif int((ys[1:] != ys[:-1]).sum()) + 1 == n_y:
            return "a threshold on it separates the classes perfectly"
    # Values seen once are trivially "pure": only values that repeat tell a lookup from a coincidence.
    repeated = sizes[sizes >= 2].sum() >= 0.5 * len(s)
    if pure and len(sizes) == n_y and (task == "classification" or repeated):
        return f"its values map one-to-one onto the target's {'classes' if task == 'classification' else 'values'}"
    if pure and len(s) >= MIN_LEAK_CHECK_ROWS and sizes[sizes >= 5].sum() >= 0.8 * len(s):
        return "each of its values always comes with the same target value"
    return None


def check_target_leaks(
    X: pd.DataFrame, y: pd.Series, task: str, target: str, allowed: list[str] | None = None
) -> None:
    """Refuse features that reproduce the target (see :func:`find_target_leaks`), naming each one.

    :param X: the training features.
    :param y: the training target.
    :param task: the task.
    :param target: the target's name, for the message.
    :param allowed: features known to be available at prediction time that may predict perfectly.
    """
    leaks = {c: how for c, how in find_target_leaks(X, y, task).items() if c not in set(allowed or [])}
    if leaks:
        shown = "; ".join(f"{c!r}: {how}" for c, how in leaks.items())
        raise MlopsInputError(
            f"Feature{'s' if len(leaks) > 1 else ''} reproduce{'' if len(leaks) > 1 else 's'} the target "
            f"{target!r} on the training split ({shown}): a model would score perfectly and learn nothing "
            f"else. Drop {'them' if len(leaks) > 1 else 'it'} from the data or from `features` (a column "
            "that is truly known at prediction time can be listed in `allow_perfect_predictors`)."
        )


def estimator_task(candidate: Candidate, est: Any) -> str | None:
    """The task an estimator is built for (``classification``/``regression``), None when it does not say;
    refuse estimators that cannot predict a target (transformers, clusterers, outlier detectors).

    :param candidate: the candidate, for messages.
    :param est: the estimator instance.
    """
    from sklearn.base import is_classifier, is_regressor

    examples = (
        f"give a classifier (e.g. {DEFAULT_ESTIMATORS['classification']}) or a regressor "
        f"(e.g. {DEFAULT_ESTIMATORS['regression']})"
    )
    if not callable(getattr(est, "predict", None)):
        what = (
            "a transformer (it has transform but no predict)"
            if hasattr(est, "transform")
            else ("not a predictor (it has no predict method)")
        )
        raise MlopsInputError(f"Estimator {candidate.estimator} is {what}: {examples}.")
    try:
        if is_classifier(est):
            return "classification"
        if is_regressor(est):
            return "regression"
    except Exception:  # noqa: BLE001 - a foreign estimator without sklearn tags: judged by its methods
        pass
    kind = _estimator_type(est)
    if kind in ("clusterer", "outlier_detector", "density_estimator"):
        raise MlopsInputError(
            f"Estimator {candidate.estimator} is a {kind.replace('_', ' ')}, not a classifier or regressor: "
            f"it ignores the target. {examples[0].upper()}{examples[1:]}."
        )
    return None


def _estimator_type(est: Any) -> str | None:
    try:
        from sklearn.utils import get_tags

        kind: str | None = get_tags(est).estimator_type
        return kind
    except Exception:  # noqa: BLE001 - no sklearn tags
        return getattr(est, "_estimator_type", None)


def resolve_estimator(candidate: Candidate) -> Any:
    """Import and build the estimator; check its parameters before any fitting.

    :param candidate: the estimator path and parameters.
    """
    from sklearn.base import BaseEstimator

    if not isinstance(candidate.params, dict):
        raise MlopsInputError(
            f"Params of {candidate.estimator!r} must be a mapping of parameter names to values, not "
            f"{type(candidate.params).__name__} {candidate.params!r}: fix `estimator_params`."
        )
    module_name, _, cls_name = str(candidate.estimator).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name) if module_name else None
    except (ImportError, AttributeError, ValueError):
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
    except Exception as e:  # any rejection of the params is the user's to fix
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
    allow_perfect_predictors: list[str] | None = None,
) -> TrainOutcome:
    """Fit the candidates, keep the best on a validation split, and score it on the test data.

    With one candidate, it is fitted on the training split and scored on the test split (or the holdout).
    With several, each is scored on a validation part of the training split, the best is refitted on the
    whole training split, then scored on the test data, so the test score is not used for selection.

    Everything that can be checked is checked before the first fit (see :func:`check_training_frame`,
    :func:`check_split_sizes`, :func:`estimator_task`, :func:`check_target_leaks`); a fit or scoring that
    still fails on the user's parameters or data raises :class:`MlopsInputError` naming them.

    :param df: training data.
    :param target: target column.
    :param candidates: estimators to try (a random forest for the task when empty).
    :param features: feature columns (default: all but the target).
    :param task: ``classification`` or ``regression`` (default: the estimators' kind, else detected).
    :param test_size: share of rows held out for testing when no holdout is given.
    :param random_state: seed of the splits.
    :param holdout: explicit test data with the same columns.
    :param selection_metric: metric for model selection (default f1 / rmse).
    :param allow_perfect_predictors: features allowed to predict the target perfectly on their own.
    """
    from sklearn.model_selection import train_test_split

    if isinstance(test_size, bool) or not isinstance(test_size, (int, float)) or not 0.0 < test_size < 1.0:
        raise MlopsInputError(f"test_size={test_size!r} must be a number between 0 and 1 (exclusive).")
    candidates = [Candidate.parse(c) for c in candidates]
    estimators = [resolve_estimator(c) for c in candidates]
    kinds = {
        c.estimator: k for c, e in zip(candidates, estimators, strict=True) if (k := estimator_task(c, e))
    }
    if len(set(kinds.values())) > 1:
        raise MlopsInputError(
            f"The candidates mix classifiers and regressors ({kinds}): give estimators of one task."
        )
    est_task = next(iter(kinds.values()), None)
    feats, task = check_training_frame(df, target, features, task, est_task)
    if not candidates:
        candidates = [Candidate(DEFAULT_ESTIMATORS[task], {"random_state": random_state})]
        estimators = [resolve_estimator(c) for c in candidates]
    y = df[target]
    if holdout is not None:
        check_training_frame(holdout, target, feats, task, what="The holdout")
        _check_holdout_matches(df, holdout, feats, target, task)
    check_split_sizes(
        y,
        task,
        test_size,
        holdout_rows=None if holdout is None else len(holdout),
        n_candidates=len(candidates),
    )
    X = prepare_features(df[feats])
    stratify = y if task == "classification" else None
    if holdout is not None:
        X_train, y_train = X, y
        X_test, y_test = prepare_features(holdout[feats]), holdout[target]
    else:
        try:
            X_train, X_test, y_train, y_test = train_test_split(
                X, y, test_size=test_size, random_state=random_state, stratify=stratify
            )
        except ValueError as e:
            raise MlopsInputError(
                f"Cannot split {len(df)} rows for testing: {e}. Give more data or a larger test_size."
            ) from e
    check_target_leaks(X_train, y_train, task, target, allow_perfect_predictors)
    metric = selection_metric or ("f1" if task == "classification" else "rmse")
    known = CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS
    if len(candidates) > 1 and metric not in known:
        raise MlopsInputError(
            f"Selection metric {metric!r} is not a {task} metric ({', '.join(known)}): fix `selection_metric`."
        )
    scores: list[dict[str, Any]] = []
    best = 0
    if len(candidates) > 1:
        strat = y_train if task == "classification" else None
        try:
            X_fit, X_val, y_fit, y_val = train_test_split(
                X_train, y_train, test_size=0.25, random_state=random_state, stratify=strat
            )
        except ValueError as e:
            raise MlopsInputError(
                f"Cannot split {len(X_train)} training rows for choosing among candidates: {e}. Give more "
                "data or a single `estimator`."
            ) from e
        sign = 1 if greater_is_better(metric) else -1
        for i, (cand, est) in enumerate(zip(candidates, estimators, strict=True)):
            pipe = _fit(cand, est, X_fit, y_fit)
            val = _score(cand, pipe, task, X_val, y_val, "the validation split")
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
    model = _fit(candidates[best], estimators[best], X_train, y_train)
    metrics = _score(candidates[best], model, task, X_test, y_test, "the test data")
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


def _check_holdout_matches(
    df: pd.DataFrame, holdout: pd.DataFrame, feats: list[str], target: str, task: str
) -> None:
    """The holdout's features have the training data's kinds (number vs text), and its classes are known."""
    import pandas as pd

    def numeric(s: pd.Series) -> bool:
        return pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)

    differ = [c for c in feats if numeric(df[c]) != numeric(holdout[c])]
    if differ:
        raise MlopsInputError(
            f"Holdout columns {differ} are numbers in one of the training data and the holdout and text in "
            "the other: give both the same column types."
        )
    if task == "classification":
        unseen = sorted(set(holdout[target].unique().tolist()) - set(df[target].unique().tolist()), key=str)
        if unseen:
            raise MlopsInputError(
                f"The holdout holds classes {unseen[:10]} that the training data lacks: a model cannot "
                "predict them. Add rows of them to the training data or drop them from the holdout."
            )


def _fit(candidate: Candidate, estimator: Any, X: pd.DataFrame, y: pd.Series) -> Any:
    """Fit the pipeline; a fit that fails on the parameters names them."""
    from sklearn.base import clone

    try:
        return build_pipeline(clone(estimator), X).fit(X, y)
    except (ValueError, TypeError) as e:
        raise MlopsInputError(
            f"{candidate.estimator} failed to fit: {e}. {_named_params(candidate, e)}"
        ) from e


def _score(
    candidate: Candidate, model: Any, task: str, X: pd.DataFrame, y: pd.Series, on: str
) -> dict[str, float]:
    try:
        return score_model(model, task, X, y)
    except (ValueError, TypeError) as e:
        raise MlopsInputError(
            f"Scoring {candidate.estimator} on {on} failed: {e}. Check that it has the training data's "
            "columns and types."
        ) from e


def _named_params(candidate: Candidate, e: BaseException) -> str:
    """The fix for a fit error: the parameters the error names, else every parameter given."""
    import re

    text = str(e).lower()
    named = {
        k: v
        for k, v in candidate.params.items()
        if re.search(rf"\b{re.escape(k.lower())}", text)
        or (isinstance(v, str) and re.search(rf"\b{re.escape(v.lower())}\b", text))
    }
    if named:
        shown = ", ".join(f"{k}={v!r}" for k, v in named.items())
        return f"Parameters involved: {shown}: fix them in `estimator_params`."
    if candidate.params:
        return f"Check `estimator_params` ({candidate.params}) and the data."
    return "Check the data, or give `estimator_params` that suit it."


def train_and_register(
    mlflow_target: MlflowTarget,
    model_name: str,
    target: str,
    dataset: DatasetInfo | Callable[[], DatasetInfo],
    candidates: Sequence[Candidate | dict[str, Any] | str] = (),
    *,
    features: list[str] | None = None,
    task: str | None = None,
    test_size: float = 0.2,
    random_state: int = 42,
    holdout: pd.DataFrame | Callable[[], pd.DataFrame | None] | None = None,
    selection_metric: str | None = None,
    allow_perfect_predictors: list[str] | None = None,
    experiment_name: str | None = None,
    serialization: str = "cloudpickle",
    sample_rows: int = 5000,
    tags: dict[str, str] | None = None,
    params: dict[str, Any] | None = None,
    run_name: str | None = None,
    reuse_tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Train on a dataset and register the model as a new version of ``model_name``: the whole job,
    callable from any CI system (TrainOperator is a thin layer over it).

    Nothing is created in MLflow (experiment, run, model, version) until the data, the estimators and
    the fit have passed every check: bad input raises :class:`MlopsInputError` and leaves MLflow as it
    was. A dead MLflow is reported within seconds (:class:`MlopsServiceError`). No message carries the
    credentials of a URL (tracking URI, DVC repository).

    :param mlflow_target: the MLflow store (see :class:`~airflow_mlops.core.tracking.MlflowTarget`).
    :param model_name: registered model to add a version to.
    :param target: target column.
    :param dataset: the training data with its lineage, or a function that loads it (called only when
        no finished run can be reused).
    :param candidates: estimators to try (see :func:`train_model`).
    :param features: feature columns (default: all but the target).
    :param task: ``classification`` or ``regression`` (default: the estimators' kind, else detected).
    :param test_size: share of rows held out for testing when no holdout is given.
    :param random_state: seed of the splits.
    :param holdout: test data, or a function that loads it.
    :param selection_metric: metric for choosing among candidates.
    :param allow_perfect_predictors: features allowed to predict the target perfectly on their own.
    :param experiment_name: MLflow experiment (default: the model name).
    :param serialization: ``cloudpickle`` or ``skops``.
    :param sample_rows: rows of training features logged as the drift reference sample.
    :param tags: tags for the run and the version.
    :param params: parameters to log besides the estimator's.
    :param run_name: name of the run.
    :param reuse_tags: tags that identify one job (e.g. an Airflow task instance): a FINISHED run with
        these tags that registered a version is returned instead of training again (``reused: True``).
    :return: ``model_name``, ``version``, ``run_id``, ``experiment_id``, ``model_uri``, ``metrics`` and more.
    """
    with redacted_errors(mlflow_target.tracking_uri):
        _check_names(model_name, experiment_name, serialization)
        cands = [Candidate.parse(c) for c in candidates]
        for c in cands:  # imports and parameters fail here, before MLflow is asked anything
            resolve_estimator(c)
        experiment = experiment_name or model_name
        from airflow_mlops.core.model_logging import ensure_experiment, log_model_run
        from airflow_mlops.core.tracking import check_reachable

        with mlflow_target.activate():
            check_reachable(mlflow_target.tracking_uri)
            existing = _existing_experiment(experiment)
            if existing is not None and reuse_tags:
                reused = find_finished_run(existing, reuse_tags)
                if reused is not None:
                    return reused
            data = dataset() if callable(dataset) else dataset
            test = holdout() if callable(holdout) else holdout
            outcome = train_model(
                data.frame,
                target,
                cands,
                features=features,
                task=task,
                test_size=test_size,
                random_state=random_state,
                holdout=test,
                selection_metric=selection_metric,
                allow_perfect_predictors=allow_perfect_predictors,
            )
            # Only now, with a fitted and scored model, does anything get created.
            experiment_id = existing or ensure_experiment(experiment, mlflow_target.artifact_location)
            return log_model_run(
                outcome,
                model_name=model_name,
                experiment_id=experiment_id,
                dataset=data,
                tags={**(tags or {}), **(reuse_tags or {})},
                params={"test_size": test_size, "random_state": random_state, **(params or {})},
                serialization=serialization,
                sample_rows=sample_rows,
                run_name=run_name,
            )


def _check_names(model_name: str, experiment_name: str | None, serialization: str) -> None:
    from airflow_mlops.core.model_logging import SERIALIZATIONS

    if not isinstance(model_name, str) or not model_name.strip():
        raise MlopsInputError(f"`registered_model_name` must be a non-empty name, not {model_name!r}.")
    if "/" in model_name or ":" in model_name:  # MLflow's own rule: models:/<name>/<version> URIs
        raise MlopsInputError(
            f"Model name {model_name!r} cannot contain '/' or ':' (they separate parts of models:/ URIs): "
            "fix `registered_model_name` (e.g. 'team-model')."
        )
    if experiment_name is not None and not str(experiment_name).strip():
        raise MlopsInputError(
            "`experiment_name` is empty: give a name, or leave it unset to use the model's."
        )
    if serialization not in SERIALIZATIONS:
        raise MlopsInputError(f"serialization={serialization!r}: use one of {SERIALIZATIONS}.")


def _existing_experiment(name: str) -> str | None:
    """The id of experiment ``name`` if it exists (created by nobody here); refuse a deleted one."""
    import mlflow

    exp = mlflow.get_experiment_by_name(name)
    if exp is None:
        return None
    if exp.lifecycle_stage == "deleted":
        raise MlopsInputError(
            f"MLflow experiment {name!r} is deleted: restore it (`mlflow experiments restore --experiment-id "
            f"{exp.experiment_id}`), delete it for good (`mlflow gc`), or give another `experiment_name`."
        )
    return exp.experiment_id


def find_finished_run(experiment_id: str, reuse_tags: dict[str, str]) -> dict[str, Any] | None:
    """A FINISHED run of ``experiment_id`` tagged ``reuse_tags`` that registered a version, as the result
    :func:`train_and_register` returns; RUNNING runs with those tags (a crashed worker's) are marked FAILED.

    :param experiment_id: the experiment.
    :param reuse_tags: the tags identifying the job.
    """
    import mlflow

    client = mlflow.MlflowClient()
    query = " and ".join(f"tags.`{k}` = '{str(v).replace(chr(39), '')}'" for k, v in reuse_tags.items())
    for run in client.search_runs([experiment_id], filter_string=query, max_results=20):
        registered = run.data.tags.get("mlops.registered_version")
        if run.info.status == "FINISHED" and registered:
            name, version = registered.rsplit("/", 1)
            return {
                "model_name": name,
                "version": version,
                "run_id": run.info.run_id,
                "experiment_id": experiment_id,
                "model_uri": f"models:/{name}/{version}",
                "metrics": dict(run.data.metrics),
                "task": run.data.params.get("task"),
                "estimator": run.data.params.get("estimator"),
                "dataset_digest": run.data.tags.get("mlops.dataset.digest"),
                "dataset_source": run.data.tags.get("mlops.dataset.source"),
                "reused": True,
            }
        if run.info.status == "RUNNING":
            # A worker that died mid-run left it RUNNING: close it so the UI tells the truth.
            client.set_terminated(run.info.run_id, status="FAILED")
    return None


@contextmanager
def redacted_errors(tracking_uri: str = "") -> Iterator[None]:
    """Errors leave with URL credentials masked; MLflow's own failures become :class:`MlopsServiceError`
    (or :class:`MlopsInputError` for a rejected value) naming MLflow and the fix.

    A cause whose text holds a credential is dropped from the chain, so no traceback shows it either.

    :param tracking_uri: the MLflow store, for messages.
    """
    from airflow_mlops.core.errors import MlopsServiceError
    from airflow_mlops.core.redact import redact

    try:
        yield
    except (MlopsInputError, MlopsServiceError) as e:
        if _chain_has_secret(e):
            raise type(e)(redact(e)) from None
        raise
    except Exception as e:
        if type(e).__module__.startswith(("mlflow", "requests", "urllib3")):
            code = str(getattr(e, "error_code", ""))
            kind = (
                MlopsInputError if code in ("INVALID_PARAMETER_VALUE", "BAD_REQUEST") else MlopsServiceError
            )
            fix = (
                "fix the value it names" if kind is MlopsInputError else "check the server and the connection"
            )
            if code in ("UNAUTHENTICATED", "PERMISSION_DENIED"):  # a retry sends the same credentials
                kind, fix = MlopsInputError, "fix the connection's login and password (or token)"
            err = kind(f"MLflow at {redact(tracking_uri)} failed: {redact(e)}: {fix}.")
            if _chain_has_secret(e):
                raise err from None
            raise err from e
        if _chain_has_secret(e):
            raise RuntimeError(f"{type(e).__name__}: {redact(e)}") from None
        raise


def _chain_has_secret(e: BaseException) -> bool:
    from airflow_mlops.core.redact import redact

    chain: BaseException | None = e
    seen = 0
    while chain is not None and seen < 20:
        if redact(chain) != str(chain):
            return True
        chain, seen = chain.__cause__ or chain.__context__, seen + 1
    return False

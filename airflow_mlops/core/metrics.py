"""Metric functions shared by training, the holdout gate and the gateway's live metrics.

One definition of each metric keeps offline and online numbers comparable.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss")
REGRESSION_METRICS = ("rmse", "mae", "r2")
# Metrics where a smaller value is better; everything else defaults to greater-is-better.
LOWER_IS_BETTER = frozenset(
    {"rmse", "mae", "mse", "log_loss", "latency", "latency_p50", "latency_p95", "latency_p99", "error_rate"}
)


def greater_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` is better (False for losses, errors and latencies).

    :param metric: metric name, e.g. ``f1`` or ``rmse``; a ``val_``/``test_`` prefix is ignored.
    """
    name = metric.lower()
    for prefix in ("val_", "test_", "live_"):
        name = name.removeprefix(prefix)
    return not (name in LOWER_IS_BETTER or name.startswith("latency") or name.endswith("_loss"))


def averaging(n_classes: int) -> str:
    """The averaging used for precision/recall/F1: binary for two classes, weighted otherwise."""
    return "binary" if n_classes <= 2 else "weighted"


def classification_metrics(
    y_true: Any, y_pred: Any, y_score: np.ndarray | None = None, classes: list[Any] | None = None
) -> dict[str, float]:
    """Accuracy, precision, recall and F1 (binary on the second class, weighted for multiclass),
    plus ROC-AUC and log loss when class scores are given and defined.

    :param y_true: true labels.
    :param y_pred: predicted labels.
    :param y_score: predicted class probabilities, shape (n, n_classes), in ``classes`` order.
    :param classes: the model's class labels (``estimator.classes_``); inferred from the data when None.
    """
    import numpy as np
    from sklearn import metrics as skm

    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    labels = list(classes) if classes is not None else sorted(set(y_true.tolist()) | set(y_pred.tolist()))
    avg = averaging(len(labels))
    kwargs: dict[str, Any] = {"average": avg, "zero_division": 0}
    if avg == "binary":
        kwargs["pos_label"] = labels[-1]
    else:
        kwargs["labels"] = labels
    out = {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "precision": float(skm.precision_score(y_true, y_pred, **kwargs)),
        "recall": float(skm.recall_score(y_true, y_pred, **kwargs)),
        "f1": float(skm.f1_score(y_true, y_pred, **kwargs)),
    }
    if y_score is not None and len(set(y_true.tolist())) > 1:
        try:
            if len(labels) == 2:
                out["roc_auc"] = float(skm.roc_auc_score(y_true == labels[-1], y_score[:, 1]))
            else:
                out["roc_auc"] = float(
                    skm.roc_auc_score(y_true, y_score, multi_class="ovr", average="weighted", labels=labels)
                )
            out["log_loss"] = float(skm.log_loss(y_true, y_score, labels=labels))
        except ValueError:
            pass  # undefined for this sample (e.g. a class missing from y_true): leave it out
    return out


def regression_metrics(y_true: Any, y_pred: Any) -> dict[str, float]:
    """RMSE, MAE and R2.

    :param y_true: true values.
    :param y_pred: predicted values.
    """
    from sklearn import metrics as skm

    return {
        "rmse": math.sqrt(float(skm.mean_squared_error(y_true, y_pred))),
        "mae": float(skm.mean_absolute_error(y_true, y_pred)),
        "r2": float(skm.r2_score(y_true, y_pred)),
    }


def score_model(model: Any, task: str, X: Any, y: Any) -> dict[str, float]:
    """Score a fitted model on (X, y) with the metrics of its task.

    :param model: a fitted scikit-learn estimator or pipeline.
    :param task: ``classification`` or ``regression``.
    :param X: features.
    :param y: true labels or values.
    """
    y_pred = model.predict(X)
    if task == "regression":
        return regression_metrics(y, y_pred)
    y_score = model.predict_proba(X) if hasattr(model, "predict_proba") else None
    return classification_metrics(y, y_pred, y_score, classes=list(getattr(model, "classes_", [])) or None)

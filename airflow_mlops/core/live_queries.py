"""PromQL for live quality from the gateway's counters, summed over every replica and any window.

Every query is a template with ``{model}`` and ``{version}`` placeholders (filled by the gate with
:func:`airflow_mlops.core.gate.evidence.fill`) and aggregates ``by (model, version)``, so it gives one
number per version however many replicas Prometheus scrapes. ``increase()`` handles a replica's
restart (its counters start again from 0); the series exist at 0 before the first feedback
(:meth:`airflow_mlops.serving.live_metrics.LiveMetrics.start_version`), so no increment is missed.

Precision, recall and F1 follow :func:`airflow_mlops.core.metrics.classification_metrics`: binary on
the last class, support-weighted for multiclass, 0 when undefined. The gateway exports a ``weight``
counter per class that makes one formula compute both (see :mod:`airflow_mlops.serving.live_metrics`).
"""

from __future__ import annotations

from airflow_mlops.core.errors import MlopsInputError

# The window of the gate's default queries: long enough to hold a canary step's feedback.
DEFAULT_WINDOW = "1h"
_SEL = 'model="{model}",version="{version}"'
CLASSIFICATION_QUERIES = ("accuracy", "precision", "recall", "f1")
REGRESSION_QUERIES = ("mae", "rmse", "r2")


def _inc(family: str, window: str | None, extra: str = "", by: str = "model, version") -> str:
    sel = _SEL + (f",{extra}" if extra else "")
    if window is None:
        return f"sum by ({by}) ({family}{{{sel}}})"
    return f"sum by ({by}) (increase({family}{{{sel}}}[{window}]))"


def _class(kind: str, window: str | None) -> str:
    return _inc("mlops_gateway_feedback_class_total", window, f'kind="{kind}"', "model, version, class")


def _weighted(per_class: str, window: str | None) -> str:
    """``sum(weight_c * x_c) / sum(weight_c)``: sklearn's binary or weighted average of a per-class value."""
    w = _class("weight", window)
    return f"sum by (model, version) ({w} * ({per_class})) / (sum by (model, version) ({w}) > 0)"


def _or_gauge(query: str, gauge: str) -> str:
    """``query``, else (no series: a gateway from before the counters, or an exporter of the gauges only)
    the single-replica gauge; ``max by`` gives it the same labels, so ``or`` never returns both."""
    return f"({query}) or max by (model, version) ({gauge}{{{_SEL}}})"


def with_selector(query: str, selector: str = "") -> str:
    """``query`` (one of this module's templates) with its ``model="{model}",version="{version}"``
    matchers replaced by ``selector``: empty for every model and version (recording rules), or e.g.
    ``model=~"$model"`` (a Grafana dashboard). The result still has one series per model and version.

    :raises MlopsInputError: ``query`` has no such matchers (not one of this module's templates).
    """
    if _SEL not in query:
        raise MlopsInputError(
            f"No {_SEL} matchers in {query[:80]!r}: give a template of airflow_mlops.core.live_queries."
        )
    if not selector:
        return query.replace("{" + _SEL + "}", "").replace(_SEL + ",", "")
    return query.replace(_SEL, selector)


def samples_query(window: str | None = DEFAULT_WINDOW, fallback: bool = True) -> str:
    """Labelled rows of a version over ``window``, over every replica.

    :param fallback: else the ``mlops_gateway_live_samples`` gauge (one replica's window).
    """
    query = _inc("mlops_gateway_feedback_total", window)
    return _or_gauge(query, "mlops_gateway_live_samples") if fallback else query


def value_query(metric: str, window: str | None = DEFAULT_WINDOW, fallback: bool = True) -> str:
    """The PromQL template of one live metric (see :func:`counter_query`); with ``fallback``, the
    ``mlops_gateway_live_<metric>`` gauge when the counters give nothing."""
    query = counter_query(metric, window)
    if fallback and metric in CLASSIFICATION_QUERIES:
        return _or_gauge(query, f"mlops_gateway_live_{metric}")
    return query


def counter_query(metric: str, window: str | None = DEFAULT_WINDOW) -> str:
    """The PromQL template of one live metric over ``window``, over every replica.

    :param metric: ``accuracy``, ``precision``, ``recall``, ``f1`` (classifiers) or ``mae``, ``rmse``,
        ``r2`` (regressors).
    :param window: a PromQL duration such as ``5m`` or ``1h``; None: since each replica started, from the
        counters' current values, exact (``increase()`` extrapolates to the window's ends, which can move a
        ratio by a fraction of a percent) as long as no replica's counters reset (a crash; a clean restart
        keeps them with ``--counter-file``).
    :raises KeyError: no counter-based query for ``metric``.
    """
    tp, fp, fn = (_class(k, window) for k in ("tp", "fp", "fn"))
    # "or 0 * tp": a class whose ratio is 0/0 counts as 0, as sklearn's zero_division=0 does.
    zero = f"0 * {tp}"
    n = _inc("mlops_gateway_feedback_total", window)

    def err(kind: str) -> str:
        return _inc("mlops_gateway_feedback_error_sum_total", window, f'kind="{kind}"')

    if metric == "accuracy":
        return f"{_inc('mlops_gateway_feedback_correct_total', window)} / ({n} > 0)"
    if metric == "precision":
        return _weighted(f"({tp} / (({tp} + {fp}) > 0)) or {zero}", window)
    if metric == "recall":
        return _weighted(f"({tp} / (({tp} + {fn}) > 0)) or {zero}", window)
    if metric == "f1":
        return _weighted(f"(2 * {tp} / ((2 * {tp} + {fp} + {fn}) > 0)) or {zero}", window)
    if metric == "mae":
        return f"{err('abs_error')} / ({n} > 0)"
    if metric == "rmse":
        return f"sqrt({err('squared_error')} / ({n} > 0))"
    if metric == "r2":
        total = f"({err('label_pos')} - {err('label_neg')})"
        sst = f"({err('squared_label')} - {total} ^ 2 / {n})"
        return f"1 - {err('squared_error')} / ({sst} > 0)"
    raise KeyError(
        f"No counter-based live query for {metric!r}: use one of "
        f"{sorted(CLASSIFICATION_QUERIES + REGRESSION_QUERIES)}, or give the rule its own PromQL 'query'."
    )

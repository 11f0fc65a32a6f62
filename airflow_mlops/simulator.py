"""Traffic simulator: predictions against a gateway, ground truth sent back later, optional data shift.

Used by the demo and the end-to-end tests, and handy against any deployment::

    python -m airflow_mlops.simulator --endpoint http://127.0.0.1:8080 --data data.csv --target target \
        --requests 500 --shift "mean radius*1.6" --shift "worst area*1.8"

``--fresh`` sends new rows drawn from the data's distribution (:class:`RowGenerator`) instead of
replaying the file's rows, so that a model trained on that file is judged on rows it never saw.
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_mlops.core.errors import MlopsInputError

if TYPE_CHECKING:
    import pandas as pd

_SHIFT = re.compile(r"^\s*(?P<col>[^*+]+?)\s*(?P<op>[*+])\s*(?P<value>-?[0-9.eE+-]+)\s*$")


@dataclass(frozen=True)
class Shift:
    """Multiply (``*``) or offset (``+``) one feature column: the data shift a changing world brings.

    :param column: the feature column.
    :param op: ``*`` or ``+``.
    :param value: the factor or the offset.
    """

    column: str
    op: str
    value: float

    @classmethod
    def parse(cls, text: str) -> Shift:
        """Read ``"column*factor"`` or ``"column+offset"``."""
        m = _SHIFT.match(text)
        if not m:
            raise MlopsInputError(f"Shift {text!r} is not understood: write 'column*1.5' or 'column+3'.")
        return cls(m["col"], m["op"], float(m["value"]))


def apply_shifts(frame: pd.DataFrame, shifts: list[Shift]) -> pd.DataFrame:
    """A copy of ``frame`` with the shifts applied.

    :param frame: feature rows.
    :param shifts: the shifts.
    """
    out = frame.copy()
    for s in shifts:
        if s.column not in out.columns:
            raise MlopsInputError(
                f"Shift column {s.column!r} is not in the data: pick one of {list(out.columns)[:10]}..."
            )
        out[s.column] = out[s.column] * s.value if s.op == "*" else out[s.column] + s.value
    return out


class RowGenerator:
    """Fresh production rows drawn from a dataset's distribution, never rows of the dataset itself.

    A Gaussian copula per class (per dataset for a regression target): each column keeps its observed
    marginal (new values interpolated between observed quantiles; columns with few values keep their
    observed values) and the columns keep their rank correlations. A model judged on these rows is
    judged on rows it never trained on, however long the traffic runs.

    :param data: rows with the feature columns and the ``target`` column (numeric features).
    :param target: the label column; classes keep their shares.
    :param seed: random seed of the draws.
    """

    # A column with at most this many distinct values is discrete: draws keep its observed values.
    DISCRETE = 10

    def __init__(self, data: pd.DataFrame, target: str, seed: int = 0) -> None:
        import numpy as np
        import pandas as pd
        from scipy.special import ndtri

        if target not in data.columns:
            raise MlopsInputError(f"Target column {target!r} is not in the data the generator is fitted on.")
        features = data.drop(columns=[target])
        numeric = features.select_dtypes("number").columns
        if len(numeric) != features.shape[1] or features.isna().any().any():
            bad = [c for c in features.columns if c not in numeric or features[c].isna().any()]
            raise MlopsInputError(
                f"The generator needs numeric feature columns without missing values; fix or drop {bad[:5]}."
            )
        self.columns, self.target = list(features.columns), target
        self._rng = np.random.default_rng(seed)
        y = data[target]
        by_class = y.nunique() <= self.DISCRETE or not pd.api.types.is_numeric_dtype(y)
        # Each group: its share, its sorted columns (the quantile functions) and its correlation factor.
        self._groups: list[tuple[object, float, list[np.ndarray], np.ndarray]] = []
        groups = data.groupby(target, sort=True) if by_class else [(None, data)]
        for label, rows in groups:
            cols = self.columns if by_class else [*self.columns, target]
            values = rows[cols].to_numpy(dtype=float)
            if len(values) < 2:
                raise MlopsInputError(
                    f"Class {label!r} has {len(values)} row: the generator needs at least 2."
                )
            ranks = values.argsort(axis=0).argsort(axis=0)
            z = ndtri((ranks + 0.5) / len(values))
            corr = np.corrcoef(z, rowvar=False) if values.shape[1] > 1 else np.ones((1, 1))
            corr = 0.95 * np.nan_to_num(corr) + 0.05 * np.eye(
                len(cols)
            )  # a constant column; keep it definite
            self._groups.append((label, len(rows) / len(data), [np.sort(values[:, j]) for j in range(len(cols))],
                                 np.linalg.cholesky(corr)))  # fmt: skip

    def sample(self, n: int) -> pd.DataFrame:
        """``n`` new rows (features and ``target``), in random order.

        :param n: how many rows.
        """
        import numpy as np
        import pandas as pd
        from scipy.special import ndtr

        shares = [share for _, share, _, _ in self._groups]
        counts = self._rng.multinomial(n, shares)
        parts = []
        for (label, _, sorted_cols, chol), k in zip(self._groups, counts, strict=True):
            if not k:
                continue
            u = ndtr(self._rng.standard_normal((k, chol.shape[0])) @ chol.T)
            cols = []
            for j, observed in enumerate(sorted_cols):
                if len(np.unique(observed)) <= self.DISCRETE:
                    cols.append(
                        observed[np.minimum((u[:, j] * len(observed)).astype(int), len(observed) - 1)]
                    )
                else:
                    cols.append(np.interp(u[:, j] * (len(observed) - 1), np.arange(len(observed)), observed))
            part = pd.DataFrame(np.column_stack(cols), columns=self.columns if label is not None else
                                [*self.columns, self.target])  # fmt: skip
            if label is not None:
                part[self.target] = label
            parts.append(part)
        out = (
            pd.concat(parts, ignore_index=True)
            if parts
            else pd.DataFrame(columns=[*self.columns, self.target])
        )
        return out.iloc[self._rng.permutation(len(out))].reset_index(drop=True)


@dataclass
class SimulationStats:
    """What a simulation did: requests, failures, feedback, and per served version the hit rate."""

    requests: int = 0
    failed: int = 0
    feedback_sent: int = 0
    feedback_failed: int = 0
    served: Counter = field(default_factory=Counter)
    correct: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def accuracy(self) -> dict[str, float]:
        """Accuracy per served version, as the simulator saw it."""
        return {v: self.correct[v] / n for v, n in self.served.items() if n}

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "failed": self.failed,
            "feedback_sent": self.feedback_sent,
            "feedback_failed": self.feedback_failed,
            "served": dict(self.served),
            "accuracy": self.accuracy(),
            "errors": self.errors[:5],
        }


def simulate(
    endpoint: str,
    data: pd.DataFrame,
    target: str,
    *,
    requests: int | None = 200,
    shifts: list[Shift] | None = None,
    feedback_delay: float = 0.5,
    feedback_share: float = 1.0,
    concurrency: int = 4,
    seed: int = 0,
    key_column: str | None = None,
    feedback_token: str | None = None,
) -> SimulationStats:
    """Send ``requests`` single-row predictions drawn from ``data`` and, ``feedback_delay`` seconds after
    each answer, its true label (for a ``feedback_share`` of them), as ground truth arrives in real life.

    :param endpoint: the gateway's base URL.
    :param data: rows with the feature columns and the ``target`` column.
    :param target: the label column (never sent with the features).
    :param requests: how many predictions to send, rows drawn from ``data`` with replacement; ``None``
        sends each row of ``data`` once, in order (fresh rows from :class:`RowGenerator`).
    :param shifts: data shifts applied to the features before sending.
    :param feedback_delay: seconds between an answer and its ground truth.
    :param feedback_share: share of answers that get ground truth.
    :param concurrency: parallel clients.
    :param seed: random seed (row draws and feedback sampling).
    :param key_column: column used as the sticky key of A/B routing.
    :param feedback_token: the gateway's feedback bearer token (default: ``$MLOPS_GATEWAY_FEEDBACK_TOKEN``).
    """
    from airflow_mlops.serving.client import GatewayClient

    if target not in data.columns:
        raise MlopsInputError(f"Target column {target!r} is not in the simulation data.")
    rng = random.Random(seed)
    features = apply_shifts(data.drop(columns=[target]), shifts or [])
    rows = features.to_dict(orient="records")
    labels = data[target].tolist()
    keys = data[key_column].astype(str).tolist() if key_column else None
    picks = (
        list(range(len(rows))) if requests is None else [rng.randrange(len(rows)) for _ in range(requests)]
    )
    requests = len(picks)
    give_feedback = [rng.random() < feedback_share for _ in range(requests)]
    stats = SimulationStats()
    lock = threading.Lock()
    due: list[tuple[float, str, Any]] = []  # (when, request_id, label), a heap
    sending_done = threading.Event()
    next_index = iter(range(requests))

    def send_predictions() -> None:
        with GatewayClient(endpoint) as client:
            while True:
                with lock:
                    i = next(next_index, None)
                if i is None:
                    return
                row, label = rows[picks[i]], labels[picks[i]]
                try:
                    answer = client.predict(row, key=keys[picks[i]] if keys else None)
                except Exception as e:  # noqa: BLE001 - counted and reported, the run goes on
                    with lock:
                        stats.requests += 1
                        stats.failed += 1
                        stats.errors.append(str(e))
                    continue
                version = str(answer["model_version"])
                with lock:
                    stats.requests += 1
                    stats.served[version] += 1
                    stats.correct[version] += int(answer["predictions"][0] == label)
                    if give_feedback[i]:
                        heapq.heappush(due, (time.monotonic() + feedback_delay, answer["request_id"], label))

    def send_feedback() -> None:
        with GatewayClient(endpoint, feedback_token=feedback_token) as client:
            while True:
                with lock:
                    item = heapq.heappop(due) if due and due[0][0] <= time.monotonic() else None
                    finished = sending_done.is_set() and not due
                if item is None:
                    if finished:
                        return
                    time.sleep(0.02)
                    continue
                _, request_id, label = item
                try:
                    client.feedback(request_id, label=_plain(label))
                    with lock:
                        stats.feedback_sent += 1
                except Exception as e:  # noqa: BLE001
                    with lock:
                        stats.feedback_failed += 1
                        stats.errors.append(str(e))

    feeder = threading.Thread(target=send_feedback, name="feedback")
    feeder.start()
    workers = [
        threading.Thread(target=send_predictions, name=f"client-{n}") for n in range(max(1, concurrency))
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    sending_done.set()
    feeder.join()
    return stats


def _plain(value: Any) -> Any:
    """numpy scalars to Python ones, for JSON."""
    return value.item() if hasattr(value, "item") else value


def main(argv: list[str] | None = None) -> int:
    """Command line: simulate traffic against a gateway and print the statistics as JSON."""
    from airflow_mlops.core.data import read_table

    p = argparse.ArgumentParser(prog="python -m airflow_mlops.simulator", description=__doc__.splitlines()[0])
    p.add_argument("--endpoint", required=True)
    p.add_argument("--data", required=True, help="CSV/Parquet file with features and the target")
    p.add_argument("--target", required=True)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument(
        "--shift", action="append", default=[], help="'column*factor' or 'column+offset' (repeatable)"
    )
    p.add_argument("--feedback-delay", type=float, default=0.5)
    p.add_argument("--feedback-share", type=float, default=1.0)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--fresh",
        action="store_true",
        help="send new rows drawn from the data's distribution (RowGenerator) instead of replaying its rows",
    )
    p.add_argument(
        "--feedback-token",
        help="bearer token of the gateway's /feedback (better: set MLOPS_GATEWAY_FEEDBACK_TOKEN, which other "
        "users of the machine cannot read on the command line)",
    )
    args = p.parse_args(argv)
    data = read_table(args.data)
    if args.fresh:
        data = RowGenerator(data, args.target, seed=args.seed).sample(args.requests)
    stats = simulate(
        args.endpoint,
        data,
        args.target,
        requests=None if args.fresh else args.requests,
        shifts=[Shift.parse(s) for s in args.shift],
        feedback_delay=args.feedback_delay,
        feedback_share=args.feedback_share,
        concurrency=args.concurrency,
        seed=args.seed,
        feedback_token=args.feedback_token,
    )
    print(json.dumps(stats.as_dict(), indent=2))
    return 0 if stats.failed == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())

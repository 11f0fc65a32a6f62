"""Traffic simulator: predictions against a gateway, ground truth sent back later, optional data shift.

Used by the demo and the end-to-end tests, and handy against any deployment::

    python -m airflow_mlops.simulator --endpoint http://127.0.0.1:8080 --data data.csv --target target \
        --requests 500 --shift "mean radius*1.6" --shift "worst area*1.8"
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
    requests: int = 200,
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
    :param requests: how many predictions to send.
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
    picks = [rng.randrange(len(rows)) for _ in range(requests)]
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
        "--feedback-token",
        help="bearer token of the gateway's /feedback (better: set MLOPS_GATEWAY_FEEDBACK_TOKEN, which other "
        "users of the machine cannot read on the command line)",
    )
    args = p.parse_args(argv)
    stats = simulate(
        args.endpoint,
        read_table(args.data),
        args.target,
        requests=args.requests,
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

"""How much does using TrainOperator add to parsing a DAG file?

Parses the same DAG built from TrainOperator and from EmptyOperator, each in a fresh interpreter, many
times, alternating. Airflow itself (``airflow.sdk``) is imported before the clock starts, as in the DAG
processor, which has it loaded already; what is timed is executing the DAG file. Last line:
``parse_overhead_ms=<median difference> ratio=<median ratio>`` (target: overhead under 50 ms).

Run: ``.venv/bin/python benchmarks/bench_dag_parse.py [--reps 25]``
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

DAG_TEMPLATE = """
import datetime
from airflow.sdk import DAG
{import_line}

with DAG("bench_parse", schedule=None, start_date=datetime.datetime(2024, 1, 1), catchup=False) as dag:
    for i in range(5):
        {task}
"""
TRAIN = dict(
    import_line="from airflow_mlops.operators.train import TrainOperator",
    task='TrainOperator(task_id=f"train_{i}", registered_model_name="bc", data="data.csv", target="target")',
)
EMPTY = dict(
    import_line="from airflow.providers.standard.operators.empty import EmptyOperator",
    task='EmptyOperator(task_id=f"train_{i}")',
)
# Runs in a fresh interpreter: import Airflow untimed, then time the DAG file, and list heavy modules.
PROBE = """
import runpy, sys, time
import airflow.sdk
t = time.perf_counter()
runpy.run_path(sys.argv[1])
dt = time.perf_counter() - t
heavy = [m for m in ("mlflow", "sklearn", "pandas", "dvc", "docker", "scipy") if m in sys.modules]
print(dt, ",".join(heavy))
"""


def parse_once(path: Path) -> tuple[float, str]:
    out = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, check=True)
    seconds, _, heavy = out.stdout.strip().splitlines()[-1].partition(" ")
    return float(seconds), heavy


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=25)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for name, parts in (("train", TRAIN), ("empty", EMPTY)):
            files[name] = Path(tmp) / f"{name}_dag.py"
            files[name].write_text(DAG_TEMPLATE.format(**parts))
        times: dict[str, list[float]] = {"train": [], "empty": []}
        heavy_seen: set[str] = set()
        parse_once(files["train"])  # warm the OS file cache once for both
        for _ in range(args.reps):
            for name in ("train", "empty"):
                seconds, heavy = parse_once(files[name])
                times[name].append(seconds)
                if name == "train" and heavy:
                    heavy_seen.update(heavy.split(","))
    diffs = [(a - b) * 1000 for a, b in zip(times["train"], times["empty"], strict=True)]
    ratios = [a / b for a, b in zip(times["train"], times["empty"], strict=True)]
    for name, values in times.items():
        ms = [v * 1000 for v in values]
        print(
            f"{name:>5}: median {statistics.median(ms):7.1f} ms  min {min(ms):7.1f} ms  max {max(ms):7.1f} ms  (n={len(ms)})"
        )
    print(f"heavy modules imported by the TrainOperator DAG: {sorted(heavy_seen) or 'none'}")
    print(f"parse_overhead_ms={statistics.median(diffs):.1f} ratio={statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()

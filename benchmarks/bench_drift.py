"""Drift engine vs Evidently 0.7.23's DataDriftPreset, and vs the sort+factorize floor, in one run.

Run: ``python benchmarks/bench_drift.py`` (any Python 3.10+). Evidently 0.7.23 needs pandas < 3, so the
script makes a separate virtualenv ``.venv-bench`` (evidently==0.7.23, pandas<3, this package without
its Airflow dependencies) on first use and re-executes itself there.

Data: seeded synthetic frames, 15 numeric and 5 categorical columns, 6 of them shifted in the current
frame; 100k and 1M rows on each side. Every measurement runs in a forked child, so its peak memory
(VmHWM) is its own. Options: ``--sizes 100000,1000000``, ``--big-rows 10000000`` (0 skips the runs of
current rows read from Parquet against a profile: 1M and 10M, whose ratio is ``scaling_10m``, and the
Dask run on the same files), ``--dask-workers 2``, ``--no-evidently``.

Also measured: the profile's error on heavy-tailed columns (Student-t with 2.5 degrees of freedom,
lognormal, a mixture with 0.2% outliers; normed Wasserstein, PSI and Jensen-Shannon from the profile vs
from the raw reference, largest relative difference: ``profile_err_max``), and the Dask engine's
efficiency: the single-machine time of the 10M files on one core over (workers x the time on a
``LocalCluster`` of that many one-thread worker processes); the speedup over the default single-machine run
(whose Arrow decodes on every core) is printed beside it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH_VENV = ROOT / ".venv-bench"
N_NUM, N_CAT = 15, 5
SHIFTED_NUM = {0: ("mean", 0.5), 3: ("scale", 1.6), 7: ("mean", 0.15)}
SHIFTED_CAT = {0: 0.35, 2: 0.12, 4: 0.02}


def ensure_bench_env() -> None:
    """Re-execute inside .venv-bench (made on first use) unless Evidently already imports here."""
    if os.environ.get("MLOPS_BENCH_CHILD") == "1":
        return
    try:
        import evidently  # noqa: F401
        import pandas as pd

        if pd.__version__.startswith("2."):
            return
    except Exception:  # noqa: BLE001 - any import failure means: use the bench venv
        pass
    py = BENCH_VENV / "bin" / "python"
    if not py.exists():
        print(f"creating {BENCH_VENV} (evidently==0.7.23, pandas<3) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
        pip = [str(py), "-m", "pip", "install", "-q"]
        subprocess.run(
            [
                *pip,
                "evidently==0.7.23",
                "pandas<3",
                "numpy",
                "scipy",
                "pyarrow",
                "datasketches",
                "dask[distributed]",
            ],
            check=True,
        )
        subprocess.run([*pip, "--no-deps", "-e", str(ROOT)], check=True)
    env = {**os.environ, "MLOPS_BENCH_CHILD": "1", "PYTHONWARNINGS": "ignore"}
    os.execve(str(py), [str(py), __file__, *sys.argv[1:]], env)


def make_frames(n: int, seed: int = 7, sample_seed: int | None = None):
    """Reference and current frames of ``n`` rows; ``seed`` fixes the distributions, ``sample_seed``
    (default: ``seed``) the draws, so chunks drawn with other sample seeds share the distributions."""
    import numpy as np
    import pandas as pd

    params = np.random.default_rng(seed)
    rng = np.random.default_rng(seed if sample_seed is None else sample_seed)
    ref, cur = {}, {}
    for i in range(N_NUM):
        mu, sd = params.uniform(-5, 5), params.uniform(0.5, 3)
        ref[f"num_{i}"] = rng.normal(mu, sd, n)
        kind, amount = SHIFTED_NUM.get(i, ("none", 0.0))
        if kind == "mean":
            cur[f"num_{i}"] = rng.normal(mu + amount * sd, sd, n)
        elif kind == "scale":
            cur[f"num_{i}"] = rng.normal(mu, sd * amount, n)
        else:
            cur[f"num_{i}"] = rng.normal(mu, sd, n)
    for j in range(N_CAT):
        k = 3 + 2 * j
        cats = np.array([f"c{j}_{v}" for v in range(k)], dtype=object)
        p = params.dirichlet(np.ones(k) * 3)
        ref[f"cat_{j}"] = cats[rng.choice(k, n, p=p)]
        q = p.copy()
        if j in SHIFTED_CAT:
            q = (1 - SHIFTED_CAT[j]) * p + SHIFTED_CAT[j] * np.eye(k)[0]
        cur[f"cat_{j}"] = cats[rng.choice(k, n, p=q)]
    return pd.DataFrame(ref), pd.DataFrame(cur)


def _vm(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def in_child(fn, *args):
    """Run ``fn(*args)`` in a forked child: (result, seconds, extra peak bytes over the fork)."""
    import pickle

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            base = _vm("VmRSS")
            t0 = time.perf_counter()
            res = fn(*args)
            dt = time.perf_counter() - t0
            payload = pickle.dumps((res, dt, _vm("VmHWM") - base, None))
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            payload = pickle.dumps((None, 0.0, 0, repr(e)))
        with os.fdopen(w, "wb") as f:
            f.write(payload)
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    res, dt, peak, err = pickle.loads(data)
    if err:
        raise RuntimeError(err)
    return res, dt, peak


def floor_task(ref, cur):
    import numpy as np
    import pandas as pd

    for frame in (ref, cur):
        for c in frame.columns:
            if c.startswith("num_"):
                np.sort(frame[c].to_numpy())
            else:
                pd.factorize(frame[c])
    return None


def ours_task(ref, cur):
    from airflow_mlops.core.drift import detect_drift

    rep = detect_drift(ref, cur)
    return {c.column: (c.test, c.score, c.drifted) for c in rep.columns}, rep.drift_detected


def ours_profile_task(profile, cur):
    from airflow_mlops.core.drift import detect_drift

    rep = detect_drift(profile, cur)
    return {c.column: (c.test, c.score, c.drifted) for c in rep.columns}, rep.drift_detected


def profile_task(ref):
    from airflow_mlops.core.drift import build_profile

    return build_profile(ref)


EVIDENTLY_TESTS = {
    "K-S p_value": ("ks", lambda s, t: s <= t),
    "chi-square p_value": ("chisquare", lambda s, t: s < t),
    "Z-test p_value": ("z", lambda s, t: s < t),
    "Wasserstein distance (normed)": ("wasserstein", lambda s, t: s >= t),
    "Jensen-Shannon distance": ("jensenshannon", lambda s, t: s >= t),
    "PSI": ("psi", lambda s, t: s >= t),
}


def evidently_task(ref, cur):
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    dd = DataDefinition(
        numerical_columns=[c for c in ref.columns if c.startswith("num_")],
        categorical_columns=[c for c in ref.columns if c.startswith("cat_")],
    )
    snap = Report([DataDriftPreset()]).run(
        Dataset.from_pandas(cur, data_definition=dd), Dataset.from_pandas(ref, data_definition=dd)
    )
    cols, dataset = {}, None
    for m in snap.dict()["metrics"]:
        cfg = m["config"]
        if cfg["type"].endswith("ValueDrift"):
            test, cmp = EVIDENTLY_TESTS[cfg["method"]]
            cols[cfg["column"]] = (test, float(m["value"]), bool(cmp(float(m["value"]), cfg["threshold"])))
        elif cfg["type"].endswith("DriftedColumnsCount"):
            dataset = m["value"]["share"] >= cfg["drift_share"]
    return cols, dataset


def agree(a, b) -> tuple[bool, list[str]]:
    diffs = []
    for col, (test, score, drifted) in a[0].items():
        o = b[0].get(col)
        if o is None or o[0] != test or o[2] != drifted:
            diffs.append(f"{col}: {test} {score:.6g} {drifted} vs {o}")
    return (not diffs and a[1] == b[1]), diffs


def write_parquet(rows: int, tmp: Path) -> Path:
    """``rows`` current rows as Parquet files of 1M rows (a partitioned dataset)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp / f"current-{rows}"
    folder.mkdir(parents=True, exist_ok=True)
    per = 1_000_000
    for i in range(0, rows, per):
        _, cur = make_frames(min(per, rows - i), sample_seed=100 + i // per)
        pq.write_table(
            pa.Table.from_pandas(cur, preserve_index=False), folder / f"part-{i // per:03d}.parquet"
        )
    return folder


def big_run(profile, folder: Path) -> tuple[float, int, int, bool]:
    """Current rows from Parquet files, read in chunks, against the profile."""
    size = sum(f.stat().st_size for f in folder.glob("*.parquet"))

    def task():
        from airflow_mlops.core.drift import detect_drift
        from airflow_mlops.core.drift.current import summarize_path

        kinds = {k: v["kind"] for k, v in profile["columns"].items()}
        return detect_drift(profile, summarize_path(folder, kinds, chunk_rows=500_000)).drift_detected

    detected, dt, peak = in_child(task)
    return dt, peak, size, detected


def heavy_tail_error(n_ref: int = 200_000, n_cur: int = 50_000) -> float:
    """The largest relative difference of normed Wasserstein, PSI and Jensen-Shannon between a profile
    and the raw reference, on heavy-tailed columns under shifts and scalings; verdicts must agree."""
    import numpy as np
    import pandas as pd

    from airflow_mlops.core.drift import DriftConfig, build_profile, detect_drift

    rng = np.random.default_rng(11)

    def draw(n: int) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "t25": rng.standard_t(2.5, n),
                "lognormal": rng.lognormal(0, 1.5, n),
                "outliers": np.where(rng.random(n) < 0.002, rng.normal(200, 50, n), rng.normal(0, 1, n)),
            }
        )

    ref = draw(n_ref)
    profile = build_profile(ref)
    worst = 0.0
    for shift, scale in ((0.05, 1.0), (0.2, 1.0), (0.0, 1.3), (0.5, 1.1)):
        base = draw(n_cur)
        cur = base * scale + shift * ref.std()
        for method in ("wasserstein", "psi", "jensenshannon"):
            cfg = DriftConfig(num_method=method)
            raw, prof = detect_drift(ref, cur, cfg), detect_drift(profile, cur, cfg)
            for r, p in zip(raw.columns, prof.columns, strict=True):
                if r.drifted != p.drifted:
                    raise RuntimeError(f"profile verdict differs: {r.column} {method} {r.score} vs {p.score}")
                worst = max(worst, abs(p.score - r.score) / abs(r.score))
    return worst


def dask_efficiency(profile, folder: Path, workers: int) -> tuple[float, float, float, float, bool]:
    """(single-machine seconds, the same on one core, Dask seconds, efficiency, verdicts equal) on the
    same files.

    Efficiency is the textbook one: the time on one core over (workers x the time on ``workers``
    one-thread worker processes). The one-core run limits Arrow's decoding threads to one, as Dask does
    in its workers (``OMP_NUM_THREADS=1``); the default single-machine run, whose Arrow decodes on every
    core, is printed beside it.
    """
    import pyarrow as pa
    from distributed import LocalCluster

    from airflow_mlops.core.drift import detect_drift
    from airflow_mlops.core.drift.current import summarize_path
    from airflow_mlops.core.drift.distributed import dataset_files, summarize_on_dask

    kinds = {k: v["kind"] for k, v in profile["columns"].items()}
    files = dataset_files(folder)
    t0 = time.perf_counter()
    single = summarize_path(folder, kinds, chunk_rows=500_000)
    t_single = time.perf_counter() - t0
    cores = pa.cpu_count()
    pa.set_cpu_count(1)
    try:
        t0 = time.perf_counter()
        summarize_path(folder, kinds, chunk_rows=500_000)
        t_one = time.perf_counter() - t0
    finally:
        pa.set_cpu_count(cores)
    with LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        summarize_on_dask(cluster.scheduler_address, files[:workers], kinds, chunk_rows=500_000)  # warm
        t0 = time.perf_counter()
        merged = summarize_on_dask(cluster.scheduler_address, files, kinds, chunk_rows=500_000)
        t_dask = time.perf_counter() - t0
    a, b = detect_drift(profile, single), detect_drift(profile, merged)
    same = a.drift_detected == b.drift_detected and [c.drifted for c in a.columns] == [
        c.drifted for c in b.columns
    ]
    return t_single, t_one, t_dask, t_one / (workers * t_dask), same


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--big-rows", type=int, default=10_000_000)
    ap.add_argument("--dask-workers", type=int, default=2)
    ap.add_argument("--no-evidently", action="store_true")
    args = ap.parse_args()
    if not args.no_evidently:
        ensure_bench_env()
    import tempfile

    import pandas as pd
    import scipy.spatial.distance  # imported once here, not timed in every child
    import scipy.stats  # noqa: F401

    import airflow_mlops.core.drift  # noqa: F401

    if not args.no_evidently:
        import evidently.presets  # noqa: F401

    print(
        f"pandas {pd.__version__}; {N_NUM} numeric + {N_CAT} categorical columns; cells = rows x 20 x 2 frames"
    )
    header = f"{'rows':>9} {'engine':<16} {'seconds':>8} {'Mcells/s':>9} {'vs evid.':>9} {'vs floor':>9} {'peak MB':>8}"
    print(header)
    last = {}
    all_agree = True
    profile = None
    for n in [int(s) for s in args.sizes.split(",")]:
        ref, cur = make_frames(n)
        inputs = int(ref.memory_usage(deep=True).sum() + cur.memory_usage(deep=True).sum())
        cells = n * (N_NUM + N_CAT) * 2
        _, t_floor, _ = in_child(floor_task, ref, cur)
        ours, t_ours, m_ours = in_child(ours_task, ref, cur)
        profile, t_prof_build, _ = in_child(profile_task, ref)
        ours_p, t_prof, m_prof = in_child(ours_profile_task, profile, cur)
        rows = [
            ("floor (sort+fact.)", t_floor, 0),
            ("ours (raw ref)", t_ours, m_ours),
            ("ours (profile)", t_prof, m_prof),
        ]
        t_ev = None
        if not args.no_evidently:
            ev, t_ev, m_ev = in_child(evidently_task, ref, cur)
            rows.append(("evidently 0.7.23", t_ev, m_ev))
            ok, diffs = agree(ours, ev)
            ok_p, diffs_p = agree(ours_p, ev)
            all_agree = all_agree and ok and ok_p
        for name, t, mem in rows:
            vs_ev = f"{t_ev / t:9.1f}" if t_ev else f"{'-':>9}"
            print(
                f"{n:>9} {name:<16} {t:8.3f} {cells / t / 1e6:9.1f} {vs_ev} {t / t_floor:9.2f} {mem / 2**20:8.0f}"
            )
        print(
            f"{n:>9} inputs {inputs / 2**20:.0f} MB; our peak over inputs: raw {m_ours / inputs:.2f}x, profile "
            f"{m_prof / inputs:.2f}x; profile built in {t_prof_build:.2f}s, "
            f"{len(__import__('json').dumps(profile)) / 1024:.0f} KB"
        )
        if not args.no_evidently:
            print(f"{n:>9} verdicts agree with Evidently: raw {ok}, profile {ok_p} {diffs + diffs_p}")
            print(f"{n:>9} dataset drift: ours {ours[1]}, evidently {ev[1]}")
        last = {"speedup": (t_ev / t_ours) if t_ev else float("nan"), "floor": t_ours / t_floor}
    err, _, _ = in_child(heavy_tail_error)
    print(f"profile vs raw reference on heavy tails (W, PSI, JS): largest relative difference {err:.2e}")
    extra = {"profile_err_max": f"{err:.4f}"}
    if args.big_rows and profile is not None:
        with tempfile.TemporaryDirectory() as tmp:
            small = write_parquet(args.big_rows // 10, Path(tmp))
            dt1, peak1, size1, _ = big_run(profile, small)
            big = write_parquet(args.big_rows, Path(tmp))
            dt, peak, size, detected = big_run(profile, big)
            print(
                f"{args.big_rows // 10} current rows x 20 from Parquet ({size1 / 2**20:.0f} MB) vs profile: "
                f"{dt1:.1f}s, peak {peak1 / 2**20:.0f} MB over the interpreter"
            )
            print(
                f"{args.big_rows} current rows x 20 from Parquet ({size / 2**20:.0f} MB on disk) vs profile: "
                f"{dt:.1f}s, peak {peak / 2**20:.0f} MB over the interpreter, drift {detected}"
            )
            extra["peak_mb_10m"] = f"{peak / 2**20:.0f}"
            extra["scaling_10m"] = f"{dt / (10 * dt1):.2f}"
            if args.dask_workers:
                t_single, t_one, t_dask, eff, same = dask_efficiency(profile, big, args.dask_workers)
                print(
                    f"dask: {args.big_rows} rows in {len(list(big.glob('*.parquet')))} files, single machine "
                    f"{t_single:.1f}s ({t_one:.1f}s on one core), {args.dask_workers} workers {t_dask:.1f}s "
                    f"(speedup {t_single / t_dask:.2f} over the single machine), verdicts equal {same}"
                )
                extra["dask_efficiency"] = f"{eff:.2f}"
                all_agree = all_agree and same
    print(
        f"drift_speedup_1m={last.get('speedup', float('nan')):.1f} floor_ratio_1m={last.get('floor', float('nan')):.2f} "
        f"verdicts_agree={'true' if all_agree else 'false'} " + " ".join(f"{k}={v}" for k, v in extra.items())
    )


if __name__ == "__main__":
    main()

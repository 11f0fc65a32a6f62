"""The drift statistics agree with scipy (and with Evidently's formulas) to 1e-9 on random data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from airflow_mlops.core.drift import stattests as st


def _dist(x: np.ndarray) -> st.NumericDist:
    return st.NumericDist.from_sorted(np.sort(x))


SIZES = [(7, 5), (300, 500), (1000, 1000), (2500, 800), (12_000, 9_000)]


@pytest.mark.parametrize(("n", "m"), SIZES)
@pytest.mark.parametrize("ties", [False, True])
def test_ks_and_wasserstein_match_scipy(n: int, m: int, ties: bool) -> None:
    rng = np.random.default_rng(n + m + ties)
    a, b = rng.normal(0, 1, n), rng.normal(0.1, 1.3, m)
    if ties:
        a, b = np.round(a, 1), np.round(b, 1)
    ref, cur = _dist(a), _dist(b)
    expected = stats.ks_2samp(a, b)
    assert st.ks_statistic(ref, cur) == pytest.approx(expected.statistic, abs=1e-9)
    assert st.ks(ref, cur) == pytest.approx(expected.pvalue, abs=1e-9)
    assert st.wasserstein(ref, cur) == pytest.approx(stats.wasserstein_distance(a, b), abs=1e-9)
    # Evidently: normed by the reference's population std, floored at 0.001.
    assert st.wasserstein_norm(ref, cur) == pytest.approx(
        stats.wasserstein_distance(a, b) / max(np.std(a), 0.001), abs=1e-9
    )


def test_value_count_distributions_give_the_same_statistics_as_raw() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 30, 4000).astype(float), rng.integers(2, 33, 3000).astype(float)
    va, ca = np.unique(a, return_counts=True)
    ref = st.NumericDist.from_counts(va, ca, float(np.std(a)))
    cur = _dist(b)
    assert st.ks_statistic(ref, cur) == pytest.approx(stats.ks_2samp(a, b).statistic, abs=1e-12)
    assert st.wasserstein(ref, cur) == pytest.approx(stats.wasserstein_distance(a, b), abs=1e-9)


def _counts(values) -> st.CategoricalDist:
    keys, counts = np.unique(np.asarray(values), return_counts=True)
    return st.CategoricalDist({k.item(): int(c) for k, c in zip(keys, counts, strict=True)})


@pytest.mark.parametrize("seed", range(5))
def test_chisquare_is_goodness_of_fit_against_reference_shares(seed: int) -> None:
    rng = np.random.default_rng(seed)
    cats = list("abcdef")
    r = rng.choice(cats, 700, p=[0.3, 0.2, 0.2, 0.1, 0.1, 0.1])
    c = rng.choice(cats, 450, p=[0.25, 0.25, 0.2, 0.1, 0.1, 0.1])
    rc, cc = _counts(r), _counts(c)
    f_obs = np.array([cc.counts.get(k, 0) for k in cats], dtype=float)
    f_exp = np.array([rc.counts.get(k, 0) for k in cats], dtype=float) * len(c) / len(r)
    assert st.chisquare(rc, cc) == pytest.approx(stats.chisquare(f_obs, f_exp).pvalue, abs=1e-9)
    ps = np.array([rc.counts[k] for k in cats]) / len(r)
    qs = np.array([cc.counts[k] for k in cats]) / len(c)
    assert st.jensenshannon_counts(rc, cc) == pytest.approx(jensenshannon(ps, qs), abs=1e-9)
    assert st.psi_counts(rc, cc) == pytest.approx(np.sum((ps - qs) * np.log(ps / qs)), abs=1e-9)


def test_unseen_category_makes_chisquare_p_zero() -> None:
    assert st.chisquare(st.CategoricalDist({"a": 50, "b": 50}), st.CategoricalDist({"a": 40, "c": 10})) == 0.0


def test_ztest_matches_the_two_proportion_formula() -> None:
    from scipy.stats import norm

    ref, cur = st.CategoricalDist({"no": 300, "yes": 200}), st.CategoricalDist({"no": 150, "yes": 150})
    p1, p2 = 200 / 500, 150 / 300
    p = (200 + 150) / 800
    z = (p1 - p2) / np.sqrt(p * (1 - p) * (1 / 500 + 1 / 300))
    assert st.ztest(ref, cur) == pytest.approx(2 * (1 - norm.cdf(abs(z))), abs=1e-12)
    # Both constant on the same value: no drift at all (Evidently's special case).
    assert st.ztest(st.CategoricalDist({1: 10}), st.CategoricalDist({1: 99})) == 1.0


def test_psi_fills_empty_bins_like_evidently() -> None:
    ref, cur = st.CategoricalDist({"a": 100}), st.CategoricalDist({"a": 50, "b": 50})
    r, c = np.array([1.0, 0.0001]), np.array([0.5, 0.5])
    assert st.psi_counts(ref, cur) == pytest.approx(np.sum((r - c) * np.log(r / c)), abs=1e-12)


def test_comparisons_follow_evidently() -> None:
    assert st.is_drifted("ks", 0.05, 0.05)  # p <= threshold
    assert not st.is_drifted("chisquare", 0.05, 0.05)  # p < threshold
    assert not st.is_drifted("z", 0.05, 0.05)
    assert st.is_drifted("wasserstein", 0.1, 0.1)  # distance >= threshold
    assert not st.is_drifted("jensenshannon", float("nan"), 0.1)


def test_benjamini_hochberg_matches_scipy() -> None:
    p = [0.01, 0.04, 0.03, 0.2, float("nan"), 0.001]
    got = st.benjamini_hochberg(p)
    expected = stats.false_discovery_control([0.01, 0.04, 0.03, 0.2, 0.001])
    np.testing.assert_allclose([g for g in got if not np.isnan(g)], expected, atol=1e-12)
    assert np.isnan(got[4])

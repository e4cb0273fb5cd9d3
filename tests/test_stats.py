"""Rank statistics and curve interpolation, against known values and their defining properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lagdsl.analysis.curves import first_reach, interpolate
from lagdsl.analysis.stats import Spread, argmin, kendall, pearson, ranks, spearman

# values computed with scipy.stats (spearmanr, kendalltau with its default tau-b, rankdata)
X = [3.1, 2.2, 2.2, 5.0, 4.4, 1.0, 3.1]
Y = [0.5, 0.7, 0.9, 0.1, 0.2, 1.5, 0.5]


def test_known_values() -> None:
    assert spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(0.8207826816681233, abs=1e-12)
    assert kendall([12, 2, 1, 12, 2], [1, 4, 7, 1, 0]) == pytest.approx(-0.4714045207910316, abs=1e-12)
    assert spearman(X, Y) == pytest.approx(-0.9908673886137246, abs=1e-12)
    assert kendall(X, Y) == pytest.approx(-0.9746794344808962, abs=1e-12)
    assert ranks(X) == [4.5, 2.5, 2.5, 7.0, 6.0, 1.0, 4.5]


def test_degenerate_samples_give_nan_and_mismatched_lengths_fail() -> None:
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    assert math.isnan(kendall([1, 2, 3], [4, 4, 4]))
    assert math.isnan(pearson([1.0], [2.0]))
    with pytest.raises(ValueError, match="differ in length"):
        kendall([1, 2], [1, 2, 3])


distinct = st.lists(st.integers(-(10**6), 10**6), min_size=2, max_size=12, unique=True)


@given(distinct)
def test_perfect_agreement_and_reversal(values: list[int]) -> None:
    doubled = [2 * v + 1 for v in values]
    assert spearman(values, doubled) == pytest.approx(1.0)
    assert kendall(values, doubled) == pytest.approx(1.0)
    assert spearman(values, [-v for v in values]) == pytest.approx(-1.0)
    assert kendall(values, [-v for v in values]) == pytest.approx(-1.0)


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=2, max_size=15))
def test_bounds_symmetry_and_rank_invariance(pairs: list[tuple[int, int]]) -> None:
    x, y = [float(a) for a, _ in pairs], [float(b) for _, b in pairs]
    for f in (spearman, kendall):
        r = f(x, y)
        assert math.isnan(r) or -1 - 1e-12 <= r <= 1 + 1e-12
        assert (math.isnan(r) and math.isnan(f(y, x))) or r == pytest.approx(f(y, x))
        # a strictly increasing transform changes no rank
        transformed = f([math.exp(v) for v in x], [v**3 for v in y])
        assert (math.isnan(r) and math.isnan(transformed)) or r == pytest.approx(transformed)


def test_argmin_takes_the_first_of_ties() -> None:
    assert argmin([3.0, 1.0, 1.0, 2.0]) == 1


def test_spread() -> None:
    s = Spread.of([1.0, 2.0, 3.0, math.nan])
    assert (s.mean, s.std, s.low, s.high, s.n) == (2.0, 1.0, 1.0, 3.0, 3)
    assert s.show(2) == "2.00 ± 1.00"
    assert Spread.of([]).show() == "n/a"
    assert Spread.of([5.0]).std == 0.0


def test_curve_interpolation_and_first_reach() -> None:
    xs, ys = [0.0, 10.0, 20.0, 30.0], [4.0, 3.0, 2.5, 2.0]
    assert interpolate(xs, ys, 5.0) == 3.5
    assert interpolate(xs, ys, -1.0) == 4.0 and interpolate(xs, ys, 99.0) == 2.0
    assert first_reach(xs, ys, 2.75) == pytest.approx(15.0)
    assert first_reach(xs, ys, 5.0) == 0.0
    assert first_reach(xs, ys, 1.9) is None
    # the first crossing counts, even if the curve goes up again
    assert first_reach([0, 1, 2, 3], [3.0, 2.0, 3.0, 1.0], 2.5) == pytest.approx(0.5)


# The hand-written statistics keep the report and the study free of numpy and scipy at import, and
# are exact on the few candidates a study has. Here they are checked against the libraries.
samples = st.integers(2, 12).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 5), min_size=n, max_size=n),  # small ranges: many ties
        st.lists(st.floats(-10, 10, allow_nan=False, width=32), min_size=n, max_size=n),
    )
)


@settings(deadline=None)
@given(samples)
@pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore:An input array is constant")
def test_ranks_and_correlations_equal_scipys(pair: tuple[list[int], list[float]]) -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    x, y = [float(v) for v in pair[0]], pair[1]
    assert ranks(x) == pytest.approx(list(scipy_stats.rankdata(x)))
    for ours, theirs in (
        (spearman(x, y), scipy_stats.spearmanr(x, y)[0]),
        (kendall(x, y), scipy_stats.kendalltau(x, y)[0]),
    ):
        if math.isnan(theirs):
            assert math.isnan(ours)
        else:
            assert ours == pytest.approx(theirs, abs=1e-9)


@settings(deadline=None)
@given(
    st.lists(st.floats(0, 1000, allow_nan=False), min_size=1, max_size=20, unique=True),
    st.floats(-100, 1100, allow_nan=False),
)
def test_interpolate_equals_numpys_interp(points: list[float], x: float) -> None:
    numpy = pytest.importorskip("numpy")
    xs = sorted(points)
    ys = [math.sin(v) for v in xs]
    assert interpolate(xs, ys, x) == pytest.approx(float(numpy.interp(x, xs, ys)), abs=1e-12)


# -- the study's evidence: bootstrap intervals and the paired test


def test_a_perfect_ranking_has_a_degenerate_interval_and_no_regret() -> None:
    from lagdsl.analysis.stats import bootstrap_interval, regret

    seeds = [([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])] * 5
    rho = bootstrap_interval(seeds, spearman, resamples=300)
    assert rho.low == pytest.approx(1.0) and rho.high == pytest.approx(1.0)
    loss = bootstrap_interval(seeds, regret, resamples=300)
    assert loss.low == 0.0 and loss.high == 0.0


def test_the_interval_widens_with_disagreeing_seeds_and_holds_the_mean() -> None:
    from lagdsl.analysis.stats import bootstrap_interval

    final = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    seeds = [(list(range(7)), final), (list(range(7))[::-1], final), ([0, 2, 1, 3, 5, 4, 6], final)]
    mean = sum(spearman(a, f) for a, f in seeds) / 3
    interval = bootstrap_interval(seeds, spearman, resamples=500)
    assert interval.low is not None and interval.high is not None
    assert interval.low < mean < interval.high and interval.high - interval.low > 0.5
    assert bootstrap_interval(seeds, spearman, resamples=500) == interval  # seeded: the same every time


def test_the_paired_test_is_the_exact_sign_flip_test() -> None:
    import itertools

    from lagdsl.analysis.stats import paired_greater

    first, second = [0.9, 0.7, 0.8, 0.4, 0.95], [0.5, 0.6, 0.9, 0.1, 0.3]
    test = paired_greater(first, second, resamples=300)
    diffs = [a - b for a, b in zip(first, second, strict=True)]
    observed = sum(diffs) / 5
    flips = [
        sum(s * d for s, d in zip(signs, diffs, strict=True)) / 5 for signs in itertools.product((1, -1), repeat=5)
    ]
    assert test.p_value == pytest.approx(sum(f >= observed - 1e-12 for f in flips) / 32)
    assert test.mean == pytest.approx(observed) and test.n == 5
    assert test.low is not None and test.high is not None and test.low <= observed <= test.high
    always = paired_greater([1.0] * 5, [0.0] * 5)
    assert always.p_value == pytest.approx(1 / 32)  # every seed agrees: the smallest p five seeds allow
    none = paired_greater([0.5, None, 0.2], [0.5, 0.3, None])
    assert none.n == 1 and none.p_value == 1.0

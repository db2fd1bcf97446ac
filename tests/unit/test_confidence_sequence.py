"""The pooled interval stays valid when looked at every night: a simulation in plain numpy.

Histories of 60 nights x 5 seeds of paired differences in the declared range (the default
difference_range, +-3 points) with true mean zero. The share
of histories in which the interval *ever* excludes zero is the error rate of a person who checks
the report every night. The betting confidence sequence keeps it at or below alpha; a naive
Student-t interval recomputed each night over all seeds so far does not (the control shows the
test can fail).
"""

import numpy as np
import pytest
from scipy import stats

from include.confidence_sequence import clip, confidence_sequence, ever_excludes, first_exclusion
from include.config import DEFAULTS

ALPHA = 0.05
NIGHTS, PER_NIGHT, HISTORIES = 60, 5, 4000
MC_SE = np.sqrt(ALPHA * (1 - ALPHA) / HISTORIES)  # Monte Carlo standard error of a share near alpha
R = DEFAULTS.difference_range


def _mean_zero(kind: str, rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    if kind == "narrow, like real seeds":  # sd 0.46 points, as the real runs' differences
        return np.clip(rng.normal(0.0, 0.0046, shape), -R, R)
    if kind == "uniform over the declared range":
        return rng.uniform(-R, R, shape)
    # skewed: small gains most seeds, a rare large loss (1 in 25); mean exactly zero, sd 0.46 points
    return np.where(rng.random(shape) < 0.96, 0.0046 * np.sqrt(0.04 / 0.96), -0.0046 * np.sqrt(0.96 / 0.04))


def naive_t_ever_excludes(x: np.ndarray, per_night: int, alpha: float) -> np.ndarray:
    """A two-sided t interval over all seeds so far, recomputed after every night."""
    n = np.arange(per_night, x.shape[1] + 1, per_night)
    s1 = np.cumsum(x, axis=1)[:, n - 1]
    s2 = np.cumsum(x ** 2, axis=1)[:, n - 1]
    mean = s1 / n
    sd = np.sqrt(np.maximum(s2 - n * mean ** 2, 0) / (n - 1))
    half = stats.t.ppf(1 - alpha / 2, n - 1) * sd / np.sqrt(n)
    return (np.abs(mean) > half).any(axis=1)


@pytest.mark.parametrize("kind", ["narrow, like real seeds", "uniform over the declared range",
                                  "skewed, rare large loss"])
def test_sequence_excludes_a_true_zero_at_most_alpha_of_the_time_while_the_naive_t_interval_does_more(kind):
    rng = np.random.default_rng(20261130)
    x = _mean_zero(kind, rng, (HISTORIES, NIGHTS * PER_NIGHT))
    assert abs(x.mean()) < 0.0002  # the simulated truth is zero
    sequence_rate = ever_excludes(x, 0.0, ALPHA, -R, R).mean()
    naive_rate = naive_t_ever_excludes(x, PER_NIGHT, ALPHA).mean()
    print(f"{kind}: sequence {sequence_rate:.4f}, naive nightly t {naive_rate:.4f} (alpha {ALPHA}, MC se {MC_SE:.4f})")
    assert sequence_rate <= ALPHA + 3 * MC_SE
    assert naive_rate > ALPHA + 3 * MC_SE  # the control: peeking every night breaks the t interval


def test_the_sequence_finds_a_real_difference():
    rng = np.random.default_rng(1)
    x = np.clip(rng.normal(0.0016, 0.0046, (HISTORIES, NIGHTS * PER_NIGHT)), -R, R)  # the measured effect
    assert ever_excludes(x, 0.0, ALPHA, -R, R).mean() > 0.95
    first = first_exclusion(x, -0.005, ALPHA, -R, R)  # "not worse" at the 0.5-point margin
    assert np.median(first) < 7 * PER_NIGHT  # within a week, as `make evidence-power` reports


def test_bounds_narrow_cover_the_mean_and_agree_with_the_capital_test():
    rng = np.random.default_rng(2)
    x = np.clip(rng.normal(0.3, 0.2, 200), -1, 1)
    cs = confidence_sequence(x, ALPHA)
    assert np.all(np.diff(cs.low) >= 0) and np.all(np.diff(cs.high) <= 0)  # running intersection
    assert np.all(cs.low <= cs.mean) and np.all(cs.mean <= cs.high)
    assert cs.high[-1] - cs.low[-1] < 0.25 < cs.high[4] - cs.low[4]
    t = int(np.argmax(cs.low > 0))  # first time zero is out, by the bounds ...
    assert cs.low[t] > 0 and cs.low[t - 1] <= 0
    assert ever_excludes(x[:t + 1], 0.0, ALPHA) and not ever_excludes(x[:t - 1], 0.0, ALPHA)  # ... and by capital


def test_small_spread_gives_a_narrower_sequence_than_large_spread():
    rng = np.random.default_rng(3)
    z = rng.standard_normal(300)
    narrow = confidence_sequence(np.clip(0.01 * z, -1, 1))
    wide = confidence_sequence(np.clip(0.3 * z, -1, 1))
    assert narrow.high[-1] - narrow.low[-1] < 0.5 * (wide.high[-1] - wide.low[-1])


@pytest.mark.parametrize("bad, match", [([0.1, 1.5], r"\[-1.0, 1.0\]"), ([0.1, np.nan], "finite"), ([], "non-empty")])
def test_values_outside_the_bounds_or_missing_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        confidence_sequence(np.array(bad))


def test_first_exclusion_is_where_the_capital_first_reaches_one_over_alpha():
    x = np.full((2, 50), 0.01)
    x[1] = 0.0
    first = first_exclusion(x, 0.0, ALPHA, -R, R)
    assert first[1] == 50  # never: the truth is zero
    assert 0 < first[0] < 50 and ever_excludes(x[0, :first[0] + 1], 0.0, ALPHA, -R, R)
    assert not ever_excludes(x[0, :first[0]], 0.0, ALPHA, -R, R)


def test_clip_moves_values_outside_the_range_to_its_edge_and_counts_them():
    values, n = clip(np.array([0.05, -0.01, -0.2]), -R, R)
    assert n == 2 and values.tolist() == [R, -0.01, -R]
    with pytest.raises(ValueError, match="finite"):
        clip(np.array([np.inf]), -R, R)


def _docs() -> str:
    from pathlib import Path

    return (Path(__file__).resolve().parents[2] / "docs" / "nightly.md").read_text(encoding="utf-8")


def _share(x: float) -> str:
    return f"{x * 100:.1f}".rstrip("0").rstrip(".") + "%"


def test_the_docs_power_table_is_what_make_evidence_power_prints():
    from benchmarks import evidence_power as ep

    pw = ep.power(ep.design(), 60, 4000, np.random.default_rng(20261207))  # the script's defaults, in its order
    docs = _docs()
    for name in ("not_worse", "improves"):
        p = pw[name]
        assert f"| {p['median_nights']:g} | {_share(p['within_30'])} | {_share(p['within_60'])} |" in docs, name


@pytest.mark.slow
def test_the_docs_width_figures_are_what_make_evidence_power_prints():
    from benchmarks import evidence_power as ep

    rng = np.random.default_rng(20261207)
    ep.power(ep.design(), 60, 4000, rng)  # drawn first by the script
    widths = ep.widths(ep.design(), 200, rng)
    text = " ".join(_docs().split())
    said = ", ".join(f"±{v:g} after {k}{' night' if k == '1' else ''}" for k, v in widths.items())
    assert f"in points: {said} " in text, said

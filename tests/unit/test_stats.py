"""Statistics against published worked examples (Student's sleep data as R's t.test reports it, and
an exact McNemar test from the literature), the seed's error-rate reduction formula, and every branch
of the verdict."""

import math

import numpy as np
import pytest

from include import stats

# Paired differences (transfer - scratch) from the issue's four re-runs of the seed recipe.
ISSUE_DIFFS = [0.9595 - 0.9640, 0.9615 - 0.9625, 0.9645 - 0.9575, 0.9670 - 0.9600]

# Student (1908) / Cushny & Peebles: extra hours of sleep of 10 patients under two drugs (R's `sleep`).
SLEEP_DRUG_1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
SLEEP_DRUG_2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]
SLEEP_DIFFS = [b - a for a, b in zip(SLEEP_DRUG_1, SLEEP_DRUG_2, strict=True)]


def test_t_interval_reproduces_r_paired_t_test_on_the_sleep_data():
    # R: with(sleep, t.test(extra[group == 2], extra[group == 1], paired = TRUE))
    #    t = 4.0621, df = 9, p-value = 0.002833; 95 percent CI 0.7001142 2.4598858; mean difference 1.58
    ci = stats.t_interval(SLEEP_DIFFS, 0.95)
    assert ci["mean"] == pytest.approx(1.58, abs=5e-12) and ci["n"] == 10 and ci["df"] == 9
    assert (ci["low"], ci["high"]) == (pytest.approx(0.7001142, abs=5e-8), pytest.approx(2.4598858, abs=5e-8))
    assert ci["mean"] / ci["se"] == pytest.approx(4.0621, abs=5e-5)
    assert ci["p_value"] == pytest.approx(0.002833, abs=5e-7)
    assert ci["t_critical"] == pytest.approx(2.262157, abs=5e-7)  # t(0.975, 9) in every t table: 2.262
    assert "Student-t" in ci["method"]


def test_noninferiority_reproduces_r_one_sided_t_test_on_the_sleep_data():
    # R: t.test(..., paired = TRUE, alternative = "greater"): p-value = 0.001416; a margin of 0 makes the
    # non-inferiority test that one-sided test, and its bound the two-sided 95% interval's lower bound.
    ni = stats.noninferiority(SLEEP_DIFFS, 0.0, 0.95)
    assert ni["p_value"] == pytest.approx(0.001416, abs=5e-7) and ni["t_statistic"] == pytest.approx(4.0621, abs=5e-5)
    assert ni["lower_bound"] == pytest.approx(0.7001142, abs=5e-8) and ni["holds"]
    assert ni["one_sided_alpha"] == pytest.approx(0.025)
    # Shifting the null by the margin: H0 mean <= -1 is t = (1.58 + 1) / se, and the bound does not move.
    wide = stats.noninferiority(SLEEP_DIFFS, 1.0, 0.95)
    assert wide["t_statistic"] == pytest.approx(4.0621 * 2.58 / 1.58, rel=2e-5)
    assert wide["lower_bound"] == pytest.approx(ni["lower_bound"], abs=1e-12)


def test_t_interval_99_percent_is_wider():
    ci95, ci99 = stats.t_interval(ISSUE_DIFFS, 0.95), stats.t_interval(ISSUE_DIFFS, 0.99)
    assert ci99["low"] < ci95["low"] < ci95["high"] < ci99["high"]


def test_single_seed_has_no_interval_and_empty_is_an_error():
    ci = stats.t_interval([0.004])
    assert ci["mean"] == 0.004 and ci["low"] is None and ci["high"] is None and ci["p_value"] is None
    with pytest.raises(ValueError, match="at least one"):
        stats.t_interval([])


def test_identical_differences_give_a_zero_width_interval():
    ci = stats.t_interval([0.01, 0.01, 0.01])
    assert ci["low"] == ci["high"] == pytest.approx(0.01) and ci["p_value"] == 0.0


def test_error_rate_reduction_formula():
    # The issue's extremes: seed 42 (96.40 -> 95.95) is -12.5%, seed 3 (96.00 -> 96.70) is +17.5%.
    assert stats.error_rate_reduction(0.9640, 0.9595) == pytest.approx(-0.125)
    assert stats.error_rate_reduction(0.9600, 0.9670) == pytest.approx(0.175)
    # The seed notebook's rounded figures: (3.76% - 3.36%) / 3.76%.
    assert stats.error_rate_reduction(0.9624, 0.9664) == pytest.approx(0.004 / 0.0376)
    assert stats.error_rate_reduction(0.9, 0.9) == 0.0
    assert stats.error_rate_reduction(1.0, 0.99) is None  # no scratch error to reduce


def _paired_predictions(both: int, a_only: int, b_only: int, neither: int):
    """Binary labels and two models' predictions with the given 2x2 correctness table."""
    y = np.zeros(both + a_only + b_only + neither, dtype=int)
    a = np.concatenate([np.zeros(both), np.zeros(a_only), np.ones(b_only), np.ones(neither)]).astype(int)
    b = np.concatenate([np.zeros(both), np.ones(a_only), np.zeros(b_only), np.ones(neither)]).astype(int)
    return y, a, b


def test_mcnemar_exact_on_a_constructed_table():
    y, a, b = _paired_predictions(both=1000, a_only=1, b_only=9, neither=40)
    res = stats.mcnemar_exact(y, a, b)
    assert (res["a_only_correct"], res["b_only_correct"]) == (1, 9)
    # Two-sided exact binomial: 2 * P(X <= 1 | n=10, p=1/2) = 2 * 11 / 1024.
    assert res["p_value"] == pytest.approx(22 / 1024, abs=1e-12)
    assert stats.mcnemar_exact(*_paired_predictions(500, 5, 5, 3))["p_value"] == pytest.approx(1.0)
    assert stats.mcnemar_exact(*_paired_predictions(500, 0, 0, 3))["p_value"] == 1.0  # no discordant pair
    # Concordant pairs do not matter, only the discordant ones.
    assert stats.mcnemar_exact(*_paired_predictions(10, 1, 9, 0))["p_value"] == pytest.approx(22 / 1024)


def test_mcnemar_exact_reproduces_a_published_example():
    # Fagerland, Lydersen & Laake (2013), BMC Med Res Methodol 13:91, airway hyper-responsiveness before and
    # after stem cell transplantation in 21 children: 1 yes/yes, 1 yes/no, 7 no/yes, 12 no/no.
    # Published: exact conditional McNemar p = 0.070.
    res = stats.mcnemar_exact(*_paired_predictions(both=1, a_only=1, b_only=7, neither=12))
    assert (res["a_only_correct"], res["b_only_correct"]) == (1, 7)
    assert round(res["p_value"], 3) == 0.070


def test_mcnemar_rejects_unpaired_predictions():
    with pytest.raises(ValueError, match="paired"):
        stats.mcnemar_exact(np.zeros(10), np.zeros(10), np.zeros(9))


@pytest.mark.parametrize("diffs", [ISSUE_DIFFS, [0.001, -0.001, 0.002, 0.0, 0.001], [-0.004, -0.006, -0.005],
                                   [0.02, 0.03, 0.025, 0.022]])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_noninferiority_decides_as_the_two_sided_interval_does(diffs, confidence):
    margin = 0.005
    ci = stats.t_interval(diffs, confidence)
    ni = stats.noninferiority(diffs, margin, confidence)
    assert ni["lower_bound"] == pytest.approx(ci["low"], abs=1e-15)
    assert ni["t_statistic"] == pytest.approx((ci["mean"] + margin) / ci["se"], rel=1e-12)
    # The interval rule and the test agree: lower bound > -margin exactly when p < alpha.
    assert ni["holds"] == (ci["low"] > -margin) == (ni["p_value"] < (1 - confidence) / 2)


def test_noninferiority_needs_an_interval():
    ni = stats.noninferiority([0.01], 0.005)
    assert ni["holds"] is False and ni["p_value"] is None and ni["lower_bound"] is None


def test_noninferiority_with_identical_differences():
    assert stats.noninferiority([0.01, 0.01, 0.01], 0.005)["p_value"] == 0.0
    at_margin = stats.noninferiority([-0.005] * 3, 0.005)
    assert at_margin["holds"] is False and at_margin["p_value"] == 1.0 and at_margin["t_statistic"] is None


def _verdict(diffs, margin=0.005, saving=0.3):
    return stats.verdict(stats.t_interval(diffs, 0.95), margin, saving, (0.962, 0.963))


def test_verdict_improves_only_when_the_interval_is_above_zero():
    v = _verdict([0.010, 0.012, 0.011, 0.009, 0.013])
    assert v["kind"] == "improves"
    assert v["text"].startswith("Transfer learning improves test accuracy with 30% less data")
    assert "95% t interval [+" in v["text"] and "over 5 seeds" in v["text"]


def test_verdict_non_inferior():
    v = _verdict([0.001, -0.001, 0.002, 0.0, 0.001])
    assert v["kind"] == "non_inferior" and "improves" not in v["text"]
    assert "not worse than scratch with 30% less data" in v["text"] and "-0.50-point" in v["text"]
    assert "transfer 96.30% vs scratch 96.20%" in v["text"]


def test_verdict_non_inferior_but_significantly_lower_says_so():
    v = _verdict([-0.002, -0.0021, -0.0019, -0.002])
    assert v["kind"] == "non_inferior" and "significantly below zero" in v["text"]


def test_verdict_no_difference_with_the_issues_four_seeds():
    ci = stats.t_interval(ISSUE_DIFFS)
    v = stats.verdict(ci, 0.005, 0.3)
    assert v["kind"] == "no_difference"
    assert v["text"].startswith("No significant difference at this sample size")
    assert f"[{ci['low'] * 100:+.2f}, {ci['high'] * 100:+.2f}]" in v["text"]


def test_verdict_worse_is_not_called_no_difference():
    v = _verdict([-0.02, -0.021, -0.019, -0.022, -0.02])
    assert v["kind"] == "worse" and v["text"].startswith("Transfer learning is worse than scratch")


def test_verdict_single_seed_is_inconclusive_and_same_data_is_worded_so():
    assert _verdict([0.004])["kind"] == "inconclusive"
    assert "on the same data" in _verdict([0.010, 0.012, 0.011], saving=0.0)["text"]


def test_verdict_kind_always_follows_the_interval():
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(300):
        n = int(rng.integers(2, 8))
        diffs = rng.normal(rng.uniform(-0.02, 0.02), rng.uniform(0.0005, 0.01), size=n)
        ci = stats.t_interval(diffs)
        kind = stats.verdict(ci, 0.005, 0.3)["kind"]
        seen.add(kind)
        expected = ("improves" if ci["low"] > 0 else "non_inferior" if ci["low"] > -0.005 else
                    "worse" if ci["high"] < 0 else "no_difference")
        assert kind == expected
    assert seen == {"improves", "non_inferior", "worse", "no_difference"}
    assert not math.isnan(stats.t_interval([0.1, 0.1])["low"])

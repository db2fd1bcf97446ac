"""Statistics over seeds: paired differences with t intervals, non-inferiority, McNemar, the verdict.

Every interval here is a two-sided Student-t interval over seeds (df = n - 1). With five seeds a
percentile bootstrap of the mean is too narrow (it ignores the uncertainty in the spread), so we do
not use one. The non-inferiority rule "lower bound of the two-sided 95% interval above -margin" is
the same decision as a one-sided t test of H0: difference <= -margin at alpha = 2.5%.
The tests and intervals are scipy.stats' own (ttest_1samp, its confidence_interval(), binomtest).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

INTERVAL_METHOD = "two-sided Student-t interval over seeds (df = n - 1)"


def error_rate_reduction(acc_scratch: float, acc_transfer: float) -> float | None:
    """The seed's formula: ((1-acc_scratch) - (1-acc_transfer)) / (1-acc_scratch).

    Undefined (None) when scratch makes no error at all: there is no error to reduce.
    """
    err = 1.0 - acc_scratch
    if err <= 0:
        return None
    return ((1.0 - acc_scratch) - (1.0 - acc_transfer)) / err


def mean_sd(values: Sequence[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=float)
    if len(a) == 0:
        raise ValueError("mean_sd needs at least one value")
    return {"mean": float(a.mean()), "sd": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "n": len(a)}


def _ttest(values: np.ndarray, popmean: float, alternative: str, confidence: float) -> tuple[float, float, Any]:
    """scipy's one-sample t test: (t statistic, p-value, confidence interval of the mean)."""
    from scipy import stats

    with warnings.catch_warnings():
        # Identical seeds are a legitimate outcome (zero spread): scipy warns about precision loss and
        # returns t = +-inf, or NaN when the mean is exactly popmean. Callers handle both.
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.ttest_1samp(values, popmean, alternative=alternative)
        return float(res.statistic), float(res.pvalue), res.confidence_interval(confidence)


def t_interval(values: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """Mean with a two-sided Student-t interval and the two-sided p-value against 0.

    With a single value there is no spread to estimate: bounds and p-value are None.
    """
    from scipy import stats

    d = np.asarray(values, dtype=float)
    n = len(d)
    if n == 0:
        raise ValueError("t_interval needs at least one value")
    out: dict[str, Any] = {"method": INTERVAL_METHOD, "confidence": confidence, "n": n, "mean": float(d.mean()),
                           "sd": None, "se": None, "df": None, "t_critical": None, "low": None, "high": None,
                           "p_value": None}
    if n < 2:
        return out
    _, p, ci = _ttest(d, 0.0, "two-sided", confidence)
    sd = float(d.std(ddof=1))
    out.update(sd=sd, se=sd / math.sqrt(n), df=n - 1,
               t_critical=float(stats.t.ppf(0.5 + confidence / 2, n - 1)), low=float(ci.low),
               high=float(ci.high), p_value=1.0 if math.isnan(p) else p)  # NaN: every value exactly 0
    return out


def noninferiority(diffs: Sequence[float], margin: float, confidence: float = 0.95) -> dict[str, Any]:
    """Transfer is "not worse" when the two-sided interval's lower bound is above -margin.

    The lower bound of a two-sided (1 - a) interval is the bound of a one-sided test at level a/2,
    so this is a one-sided t test of H0: mean difference <= -margin at alpha = (1 - confidence)/2.
    The one-sided p-value is reported alongside; p < alpha exactly when the bound clears -margin.
    """
    d = np.asarray(diffs, dtype=float)
    alpha = (1 - confidence) / 2
    out: dict[str, Any] = {"margin": margin, "rule": "lower bound of the two-sided interval > -margin",
                           "one_sided_alpha": alpha, "lower_bound": None, "holds": False,
                           "t_statistic": None, "p_value": None}
    if len(d) < 2:
        return out
    t_stat, p, ci = _ttest(d, -margin, "greater", 1 - alpha)
    low = float(ci.low)
    out.update(lower_bound=low, holds=bool(low > -margin), t_statistic=t_stat if math.isfinite(t_stat) else None,
               p_value=1.0 if math.isnan(p) else p)  # NaN: zero spread exactly at -margin
    return out


def mcnemar_exact(y_true: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray) -> dict[str, Any]:
    """Exact McNemar test on paired predictions: a two-sided binomial test on the discordant pairs."""
    from scipy.stats import binomtest

    y_true, pred_a, pred_b = (np.asarray(v) for v in (y_true, pred_a, pred_b))
    if not (y_true.shape == pred_a.shape == pred_b.shape):
        raise ValueError(f"McNemar needs paired predictions of one test set; got shapes {y_true.shape}, "
                         f"{pred_a.shape}, {pred_b.shape}")
    ok_a, ok_b = pred_a == y_true, pred_b == y_true
    b = int((ok_a & ~ok_b).sum())  # a right, b wrong
    c = int((~ok_a & ok_b).sum())  # a wrong, b right
    p = 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5).pvalue)
    return {"a_only_correct": b, "b_only_correct": c, "p_value": p}


def verdict(diff_ci: dict[str, Any], margin: float, data_saving: float,
            accuracies: tuple[float, float] | None = None) -> dict[str, str]:
    """One sentence worded by the evidence (transfer - scratch test accuracy, in points).

    - "improves" only when the interval lies above zero;
    - "not worse than scratch with N% less data" when the lower bound clears -margin;
    - "worse" when the interval lies below zero and outside the margin (saying "no difference"
      there would hide a significant loss);
    - otherwise "no significant difference at this sample size".
    `accuracies` = (mean scratch, mean transfer) test accuracy, quoted in the sentence.
    """
    m, lo, hi = diff_ci["mean"], diff_ci["low"], diff_ci["high"]
    pct = f"{diff_ci.get('confidence', 0.95):.0%}"
    nums = ""
    if accuracies is not None:
        nums = f"transfer {accuracies[1] * 100:.2f}% vs scratch {accuracies[0] * 100:.2f}%, "
    nums += f"mean difference {m * 100:+.2f} points"
    nums += (f", {pct} t interval [{lo * 100:+.2f}, {hi * 100:+.2f}] over {diff_ci['n']} seeds" if lo is not None
             else " from a single seed (no interval)")
    less = f"with {data_saving:.0%} less data" if data_saving > 1e-9 else "on the same data"
    margin_txt = f"{margin * 100:.2f}"
    if lo is None:
        return {"kind": "inconclusive",
                "text": f"Inconclusive: one seed cannot answer the question ({nums}). Run several seeds."}
    if lo > 0:
        return {"kind": "improves", "text": f"Transfer learning improves test accuracy {less} ({nums})."}
    if lo > -margin:
        below = (" The difference is significantly below zero, but smaller than the margin." if hi < 0 else "")
        return {"kind": "non_inferior",
                "text": f"Transfer learning is not worse than scratch {less} ({nums}; the lower bound is above "
                        f"the -{margin_txt}-point non-inferiority margin).{below}"}
    if hi < 0:
        return {"kind": "worse", "text": f"Transfer learning is worse than scratch {less} ({nums})."}
    return {"kind": "no_difference",
            "text": f"No significant difference at this sample size ({nums}); the interval is too wide to "
                    f"show that transfer {less} is within {margin_txt} points of scratch."}

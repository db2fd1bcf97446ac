"""Statistics over seeds: paired differences with intervals, McNemar's exact test, the verdict."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np


def error_rate_reduction(acc_scratch: float, acc_transfer: float) -> float:
    """The seed's formula: ((1-acc_scratch) - (1-acc_transfer)) / (1-acc_scratch)."""
    err = 1.0 - acc_scratch
    if err <= 0:
        return 0.0 if acc_transfer >= acc_scratch else float("-inf")
    return ((1.0 - acc_scratch) - (1.0 - acc_transfer)) / err


def mean_sd(values: Sequence[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=float)
    return {"mean": float(a.mean()), "sd": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "n": int(len(a))}


def paired_t_interval(diffs: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """Mean paired difference with a Student-t interval over seeds (None bounds for a single seed)."""
    from scipy import stats

    d = np.asarray(diffs, dtype=float)
    n = len(d)
    mean = float(d.mean())
    if n < 2:
        return {"method": "paired t", "mean": mean, "low": None, "high": None, "n": n, "p_value": None,
                "confidence": confidence}
    sd = float(d.std(ddof=1))
    se = sd / math.sqrt(n)
    t = float(stats.t.ppf(0.5 + confidence / 2, n - 1))
    if se == 0:
        p = 1.0 if mean == 0 else 0.0
    else:
        p = float(2 * stats.t.sf(abs(mean / se), n - 1))
    return {"method": "paired t", "mean": mean, "low": mean - t * se, "high": mean + t * se, "n": n, "sd": sd,
            "p_value": p, "confidence": confidence}


def bootstrap_interval(values: Sequence[float], confidence: float = 0.95, n_boot: int = 10000,
                       seed: int = 0) -> dict[str, Any]:
    """Percentile bootstrap of the mean (used for the error-rate reduction, a ratio)."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return {"method": "percentile bootstrap", "mean": float(v.mean()), "low": None, "high": None, "n": len(v)}
    rng = np.random.default_rng(seed)
    means = rng.choice(v, size=(n_boot, len(v)), replace=True).mean(axis=1)
    lo, hi = np.quantile(means, [0.5 - confidence / 2, 0.5 + confidence / 2])
    return {"method": "percentile bootstrap", "mean": float(v.mean()), "low": float(lo), "high": float(hi),
            "n": int(len(v)), "confidence": confidence}


def mcnemar_exact(y_true: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray) -> dict[str, Any]:
    """Exact McNemar test on paired predictions: a binomial test on the discordant pairs."""
    from scipy.stats import binomtest

    y_true, pred_a, pred_b = (np.asarray(v) for v in (y_true, pred_a, pred_b))
    ok_a, ok_b = pred_a == y_true, pred_b == y_true
    b = int((ok_a & ~ok_b).sum())  # a right, b wrong
    c = int((~ok_a & ok_b).sum())  # a wrong, b right
    p = 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5).pvalue)
    return {"a_only_correct": b, "b_only_correct": c, "p_value": p}


def verdict(diff_ci: dict[str, Any], margin: float, data_saving: float) -> dict[str, str]:
    """One sentence worded by the evidence (transfer - scratch accuracy, in points)."""
    m, lo, hi = diff_ci["mean"], diff_ci["low"], diff_ci["high"]
    pct = f"{diff_ci.get('confidence', 0.95):.0%}"
    nums = (f"mean difference {m * 100:+.2f} points" +
            (f", {pct} CI [{lo * 100:+.2f}, {hi * 100:+.2f}] over {diff_ci['n']} seeds" if lo is not None
             else f" from a single seed (no interval)"))
    less = f"{data_saving:.0%} less data"
    if lo is None:
        return {"kind": "inconclusive",
                "text": f"Inconclusive: one seed cannot answer the question ({nums}). Run several seeds."}
    if lo > 0:
        return {"kind": "improves", "text": f"Transfer learning improves test accuracy with {less} ({nums})."}
    if lo > -margin:
        return {"kind": "non_inferior",
                "text": f"Transfer learning is not worse than scratch with {less}: {nums}, above the "
                        f"-{margin * 100:.2f}-point non-inferiority margin."}
    if hi < 0:
        return {"kind": "worse", "text": f"Transfer learning is worse than scratch with {less} ({nums})."}
    return {"kind": "no_difference",
            "text": f"No significant difference at this sample size ({nums}); the interval is too wide to "
                    f"show transfer is within {margin * 100:.2f} points of scratch with {less}."}

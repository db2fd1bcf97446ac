"""Anytime-valid confidence sequence for the mean of bounded values, by betting (hedged capital).

Construction: Waudby-Smith, I. and Ramdas, A. (2024), "Estimating means of bounded random
variables by betting", Journal of the Royal Statistical Society B 86(1):1-27 (arXiv:2010.09686),
Section 4, the hedged capital process with predictable plug-in (PrPl) bets:

    K_t(m) = theta * prod_i (1 + l+_i(m) (x_i - m)) + (1 - theta) * prod_i (1 - l-_i(m) (x_i - m))
    l+_i(m) = min(l_i, c / m),   l-_i(m) = min(l_i, c / (1 - m))
    l_i = sqrt(2 log(2/alpha) / (s2_{i-1} * i * log(1 + i)))
    mu_t = (1/2 + sum_{i<=t} x_i) / (t + 1),  s2_t = (1/4 + sum_{i<=t} (x_i - mu_i)^2) / (t + 1)

for x in [0, 1] (values in [lo, hi] are rescaled). Under mean m each product is a non-negative
martingale, so by Ville's inequality P(exists t: K_t(m) >= 1/alpha) <= alpha: the set
{m : max_{s<=t} K_s(m) < 1/alpha} covers the true mean at every t at once, however often it is
looked at. The bets shrink with the running variance estimate s2, so the sequence narrows fast
when the values spread little. Bounds are taken on a grid and widened by one grid step outward.

Why not a library: `confseq` (Howard, Waudby-Smith, Ramdas) is the reference implementation, but
its last release (0.0.11, 2023) is a C++ source build and pins pytest as a run-time dependency;
`expectation` needs Python >= 3.12. The formulas above are short and tested by simulation
(tests/unit/test_confidence_sequence.py).

The range is the assumption: a bet can never stake more than the range allows (a value at the far
edge must not ruin it), so excluding a mean d away needs on the order of log(2/alpha) * range / d
observations however small the spread is. The pooled evidence therefore declares a range of
plausible per-seed differences (the `difference_range` setting) instead of the trivial [-1, 1];
`clip` counts and clips values outside it, and the estimand is then the mean of the clipped values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

THETA = 0.5  # equal weight on betting for and against m
C_TRUNCATION = 0.75  # bets stay in [0, c/m]: one step never loses more than 3/4 of the capital
METHOD = ("betting confidence sequence (hedged capital, predictable plug-in bets; Waudby-Smith & Ramdas 2024), "
          "anytime-valid")


@dataclass(frozen=True)
class Sequence:
    """Bounds after each observation (running intersection), on the original scale."""
    low: np.ndarray
    high: np.ndarray
    mean: np.ndarray
    alpha: float


def _scale(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    if not np.all(np.isfinite(x)):
        raise ValueError("the values must be finite numbers")
    if x.size and (x.min() < lo or x.max() > hi):
        raise ValueError(f"every value must lie in [{lo}, {hi}]; got {x.min()} to {x.max()}")
    return (x - lo) / (hi - lo)


def bets(y: np.ndarray, alpha: float) -> np.ndarray:
    """Predictable plug-in bet sizes l_t for y in [0, 1] along the last axis (before truncation)."""
    t = np.arange(1, y.shape[-1] + 1, dtype=float)
    mu = (0.5 + np.cumsum(y, axis=-1)) / (t + 1)
    s2 = (0.25 + np.cumsum((y - mu) ** 2, axis=-1)) / (t + 1)
    s2_prev = np.concatenate([np.full((*y.shape[:-1], 1), 0.25), s2[..., :-1]], axis=-1)  # predictable
    return np.sqrt(2 * np.log(2 / alpha) / (s2_prev * t * np.log1p(t)))


def log_capital(y: np.ndarray, m: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """log K_t(m) for every t: y, lam shaped (..., T); m broadcastable to y's leading shape + (1,)."""
    lp = np.minimum(lam, C_TRUNCATION / m)
    lm = np.minimum(lam, C_TRUNCATION / (1 - m))
    up = np.cumsum(np.log1p(lp * (y - m)), axis=-1)
    down = np.cumsum(np.log1p(-lm * (y - m)), axis=-1)
    return np.logaddexp(np.log(THETA) + up, np.log(1 - THETA) + down)


def clip(x: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, int]:
    """Values outside [lo, hi] moved to the nearer edge, and how many were moved."""
    x = np.asarray(x, dtype=float)
    if not np.all(np.isfinite(x)):
        raise ValueError("the values must be finite numbers")
    return np.clip(x, lo, hi), int(np.count_nonzero((x < lo) | (x > hi)))


def first_exclusion(x: np.ndarray, value: float, alpha: float, lo: float = -1.0, hi: float = 1.0) -> np.ndarray:
    """Index of the first observation after which the sequence over the last axis of `x` excludes
    `value` (its capital reached 1/alpha); x.shape[-1] where it never does (vectorised)."""
    y = _scale(x, lo, hi)
    m = (value - lo) / (hi - lo)
    if not 0 < m < 1:
        return np.zeros(y.shape[:-1], dtype=int)  # a bound itself is never an interior mean
    hit = log_capital(y, np.asarray(m), bets(y, alpha)) >= np.log(1 / alpha)
    return np.where(hit.any(axis=-1), hit.argmax(axis=-1), y.shape[-1])


def ever_excludes(x: np.ndarray, value: float, alpha: float, lo: float = -1.0, hi: float = 1.0) -> np.ndarray:
    """Whether the sequence over the last axis of `x` excludes `value` at some time (vectorised)."""
    return first_exclusion(x, value, alpha, lo, hi) < np.shape(x)[-1]


def confidence_sequence(x: np.ndarray, alpha: float = 0.05, lo: float = -1.0, hi: float = 1.0,
                        grid_step: float = 1e-4, chunk: int = 2048) -> Sequence:
    """The (1 - alpha) confidence sequence for the mean of the 1-D observations `x`, in order.

    Each grid value m is rejected from time t on once its capital has reached 1/alpha; the
    bounds at t are the outermost values not rejected yet, one grid step wider.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    y = _scale(x, lo, hi)
    if y.ndim != 1 or y.size == 0:
        raise ValueError("confidence_sequence needs a non-empty 1-D sequence of observations")
    n_grid = round((hi - lo) / grid_step)
    grid = np.arange(1, n_grid) / n_grid  # interior points of [0, 1]
    lam = bets(y, alpha)
    low = np.full(y.size, np.inf)
    high = np.full(y.size, -np.inf)
    for start in range(0, grid.size, chunk):
        m = grid[start:start + chunk, None]
        alive = np.maximum.accumulate(log_capital(y[None, :], m, lam[None, :]), axis=1) < np.log(1 / alpha)
        any_alive = alive.any(axis=0)
        first = np.where(any_alive, m[alive.argmax(axis=0), 0], np.inf)
        last = np.where(any_alive, m[alive.shape[0] - 1 - alive[::-1].argmax(axis=0), 0], -np.inf)
        low, high = np.minimum(low, first), np.maximum(high, last)
    step = 1 / n_grid
    empty = low > high  # every grid value rejected (possible only with tiny grids): keep the last width
    low = np.where(empty, np.nan, np.clip(low - step, 0, 1))
    high = np.where(empty, np.nan, np.clip(high + step, 0, 1))
    mean = np.cumsum(y) / np.arange(1, y.size + 1)

    def back(v: np.ndarray) -> np.ndarray:
        return lo + v * (hi - lo)

    return Sequence(low=back(low), high=back(high), mean=back(mean), alpha=alpha)

"""Power and validity of the pooled nightly evidence, by simulation (plain numpy, no training).

`make evidence-power`: JSON on stdout, a table on stderr. For the default nightly design (the
default `seeds` count of fresh seeds a night plus the sentinel once, the default confidence,
margin and `difference_range`) and the project's own confidence-sequence code
(include/confidence_sequence.py, the capital that decides the pooled bounds):

- power at the measured effect (per-seed difference mean +0.16 points, sd 0.46 points): the
  median number of nights until the verdict reads "not worse" (lower bound above -margin) and
  "improves" (lower bound above zero), and the share of histories that get there within 30 and
  60 nights; the median half-width of the pooled interval after some nights (the figures in
  docs/nightly.md come from here);
- validity: the share of histories whose interval *ever* excludes the true mean within 60 nights,
  at true means 0 and -0.5 points, for three shapes (normal; skewed with rare large losses, same
  mean and sd; uniform over the declared range). It must be at most alpha + 3 Monte Carlo s.e.

A night's verdict is read after its last seed; the capital of a value that has crossed 1/alpha
stays rejected (the running intersection), so "first night" is the night holding the crossing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from include.confidence_sequence import confidence_sequence, first_exclusion
from include.config import DEFAULTS

EFFECT_MEAN, EFFECT_SD = 0.0016, 0.0046  # measured per-seed difference: +0.16 points, sd 0.46 points
TRUE_MEANS = (0.0, -0.005)
SKEW_P = 0.04  # skewed shape: a large loss in 1 seed of 25, small gains otherwise
WIDTH_NIGHTS = (1, 5, 10, 20, 30, 60)


def design() -> dict[str, float | int]:
    """The default nightly design: each night's fresh seeds; the sentinel adds one seed on night 1."""
    return {"seeds_per_night": len(DEFAULTS.seeds), "first_night_extra": 1, "alpha": 1 - DEFAULTS.confidence,
            "margin": DEFAULTS.noninferiority_margin, "difference_range": DEFAULTS.difference_range}


def draw(shape: str, mean: float, sd: float, r: float, rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    if shape == "normal":
        return rng.normal(mean, sd, size)
    if shape == "skewed":  # two points with the given mean and sd: rare large loss b, small gain a
        a, b = mean + sd * np.sqrt(SKEW_P / (1 - SKEW_P)), mean - sd * np.sqrt((1 - SKEW_P) / SKEW_P)
        return np.where(rng.random(size) < SKEW_P, b, a)
    if shape == "uniform":  # over the declared range, shortened at one end to give the mean
        lo, hi = (-r, r + 2 * mean) if mean <= 0 else (-r + 2 * mean, r)
        return rng.uniform(lo, hi, size)
    raise ValueError(shape)


def night_of(index: np.ndarray, d: dict, nights: int) -> np.ndarray:
    """The night (1-based) holding observation `index` (0-based); inf where it is past the last night."""
    ends = d["first_night_extra"] + d["seeds_per_night"] * np.arange(1, nights + 1) - 1
    n = np.searchsorted(ends, index) + 1.0
    return np.where(n > nights, np.inf, n)


def power(d: dict, nights: int, histories: int, rng: np.random.Generator) -> dict:
    r = d["difference_range"]
    t = d["first_night_extra"] + d["seeds_per_night"] * nights
    x = np.clip(rng.normal(EFFECT_MEAN, EFFECT_SD, (histories, t)), -r, r)
    out = {}
    for name, bound in (("not_worse", -d["margin"]), ("improves", 0.0)):
        n = night_of(first_exclusion(x, bound, d["alpha"], -r, r), d, nights)
        out[name] = {"median_nights": float(np.median(n)), "within_30": float(np.mean(n <= 30)),
                     "within_60": float(np.mean(n <= 60))}
    return out


def widths(d: dict, histories: int, rng: np.random.Generator) -> dict[str, float]:
    """Median half-width (points) of the pooled interval after some nights, from the grid bounds."""
    r, nights = d["difference_range"], max(WIDTH_NIGHTS)
    t = d["first_night_extra"] + d["seeds_per_night"] * nights
    half = []
    for _ in range(histories):
        cs = confidence_sequence(np.clip(rng.normal(EFFECT_MEAN, EFFECT_SD, t), -r, r), d["alpha"], -r, r,
                                 grid_step=1e-5)
        idx = [d["first_night_extra"] + d["seeds_per_night"] * k - 1 for k in WIDTH_NIGHTS]
        half.append((cs.high[idx] - cs.low[idx]) / 2 * 100)
    return {str(k): round(float(v), 2) for k, v in zip(WIDTH_NIGHTS, np.median(half, axis=0), strict=True)}


def validity(d: dict, nights: int, histories: int, rng: np.random.Generator) -> list[dict]:
    r, alpha = d["difference_range"], d["alpha"]
    t = d["first_night_extra"] + d["seeds_per_night"] * nights
    limit = alpha + 3 * np.sqrt(alpha * (1 - alpha) / histories)
    rows = []
    for shape in ("normal", "skewed", "uniform"):
        for mean in TRUE_MEANS:
            x = draw(shape, mean, EFFECT_SD, r, rng, (histories, t))
            outside = int(np.count_nonzero(np.abs(x) > r))
            rate = float(np.mean(first_exclusion(np.clip(x, -r, r), mean, alpha, -r, r) < t))
            rows.append({"shape": shape, "true_mean_points": mean * 100, "ever_excludes": rate, "limit": float(limit),
                         "ok": bool(rate <= limit), "sample_mean_points": float(x.mean() * 100),
                         "sample_sd_points": float(x.std() * 100), "values_outside_range": outside})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--histories", type=int, default=4000, help="simulated histories for power")
    ap.add_argument("--validity-histories", type=int, default=10000, help="simulated histories per shape and mean")
    ap.add_argument("--width-histories", type=int, default=200)
    ap.add_argument("--nights", type=int, default=60)
    ap.add_argument("--seed", type=int, default=20261207)
    args = ap.parse_args()
    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    d = design()
    pw = power(d, args.nights, args.histories, rng)
    res = {"design": d, "effect": {"mean_points": EFFECT_MEAN * 100, "sd_points": EFFECT_SD * 100},
           "histories": {"power": args.histories, "validity": args.validity_histories, "widths": args.width_histories},
           "nights": args.nights, "power": pw, "half_width_points_after_nights": widths(d, args.width_histories, rng),
           "validity": validity(d, args.nights, args.validity_histories, rng)}
    res["targets"] = {"median_nights_not_worse_le_7": bool(pw["not_worse"]["median_nights"] <= 7),
                      "median_nights_improves_le_30": bool(pw["improves"]["median_nights"] <= 30),
                      "ever_exclusion_le_alpha_plus_3se": all(v["ok"] for v in res["validity"])}
    res["seconds"] = round(time.perf_counter() - t0, 1)
    _table(res)
    json.dump(res, sys.stdout, indent=2)
    print()
    return 0 if all(res["targets"].values()) else 1


def _table(res: dict) -> None:
    d, p = res["design"], res["power"]
    w = sys.stderr.write
    w(f"Design: {d['seeds_per_night']} fresh seeds a night (+ the sentinel once), alpha {d['alpha']:.2f}, "
      f"margin {d['margin'] * 100:.2f} points, declared range +-{d['difference_range'] * 100:.2f} points\n")
    w(f"Power at mean {res['effect']['mean_points']:+.2f}, sd {res['effect']['sd_points']:.2f} points "
      f"({res['histories']['power']} histories of {res['nights']} nights):\n")
    w(f"  {'verdict':<10} {'median nights':>14} {'within 30':>10} {'within 60':>10}\n")
    for k in ("not_worse", "improves"):
        w(f"  {k:<10} {p[k]['median_nights']:>14g} {p[k]['within_30']:>10.3f} {p[k]['within_60']:>10.3f}\n")
    w("Median half-width of the pooled interval, points, after nights: " + ", ".join(
        f"{k}: +-{v}" for k, v in res["half_width_points_after_nights"].items()) + "\n")
    w(f"Validity ({res['histories']['validity']} histories each; limit alpha + 3 MC s.e.):\n")
    w(f"  {'shape':<8} {'true mean':>9} {'ever excludes':>14} {'limit':>7} {'ok':>4}\n")
    for v in res["validity"]:
        w(f"  {v['shape']:<8} {v['true_mean_points']:>+9.2f} {v['ever_excludes']:>14.4f} {v['limit']:>7.4f} "
          f"{'yes' if v['ok'] else 'NO':>4}\n")
    w(f"Targets met: {res['targets']}  ({res['seconds']} s)\n")


if __name__ == "__main__":
    sys.exit(main())

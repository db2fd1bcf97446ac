"""Turn the per-task results into the metrics document: the comparison, the curve, the verdict."""

from __future__ import annotations

from typing import Any

import numpy as np

from include import artifacts, stats
from include.config import ExperimentConfig

# The seed notebook's single-run figures, shown next to ours.
SEED_REFERENCE = {"scratch_accuracy": 0.9624, "transfer_accuracy": 0.9664, "error_rate_reduction": 0.119,
                  "transfer_fraction": 0.7, "scratch_fraction": 1.0}
SCHEMA_VERSION = 1


def headline_fraction(cfg: ExperimentConfig) -> float:
    """The seed's comparison point is transfer at 70%; otherwise the largest fraction asked for."""
    return 0.7 if 0.7 in cfg.fractions else max(cfg.fractions)


def _by(results: list[dict[str, Any]], fraction: float) -> dict[int, dict[str, Any]]:
    return {int(r["seed"]): r for r in results if abs(float(r["fraction"]) - fraction) < 1e-9}


def _summary(rows: dict[int, dict[str, Any]]) -> dict[str, Any]:
    seeds = sorted(rows)
    acc = [rows[s]["test_accuracy"] for s in seeds]
    return {
        "n_train": int(rows[seeds[0]]["n_train"]),
        "test_accuracy": stats.mean_sd(acc),
        "test_loss": stats.mean_sd([rows[s]["test_loss"] for s in seeds]),
        "per_seed": {str(s): {"test_accuracy": rows[s]["test_accuracy"], "test_loss": rows[s]["test_loss"],
                              "epochs_run": rows[s]["epochs_run"], "wall_seconds": rows[s]["wall_seconds"],
                              "n_train": rows[s]["n_train"]} for s in seeds},
        "epochs_run": rows[seeds[0]]["epochs_run"],
        "wall_seconds": {k: float(np.mean([rows[s]["wall_seconds"][k] for s in seeds]))
                         for k in rows[seeds[0]]["wall_seconds"]},
    }


def compare(a: dict[int, dict[str, Any]], b: dict[int, dict[str, Any]], y_test: np.ndarray,
            cfg: ExperimentConfig) -> dict[str, Any]:
    """Paired comparison of scratch rows `a` and transfer rows `b` over their common seeds."""
    seeds = sorted(set(a) & set(b))
    diffs = [b[s]["test_accuracy"] - a[s]["test_accuracy"] for s in seeds]
    err = [stats.error_rate_reduction(a[s]["test_accuracy"], b[s]["test_accuracy"]) for s in seeds]
    mcn = {}
    for s in seeds:
        pa = artifacts.load_npy(a[s]["predictions_path"], mmap=False)
        pb = artifacts.load_npy(b[s]["predictions_path"], mmap=False)
        mcn[str(s)] = stats.mcnemar_exact(y_test, pa, pb)
    finite = [e for e in err if np.isfinite(e)]
    return {
        "seeds": seeds,
        "difference": {**stats.paired_t_interval(diffs, cfg.confidence),
                       "per_seed": {str(s): d for s, d in zip(seeds, diffs)}},
        "error_rate_reduction": {**stats.bootstrap_interval(finite, cfg.confidence),
                                 "per_seed": {str(s): e for s, e in zip(seeds, err)}},
        "mcnemar": mcn,
    }


def build_metrics(cfg: ExperimentConfig, manifest: dict[str, Any], scratch: list[dict[str, Any]],
                  transfer: list[dict[str, Any]], y_test: np.ndarray) -> dict[str, Any]:
    frac = headline_fraction(cfg)
    sc_full, tr_head = _by(scratch, 1.0), _by(transfer, frac)
    head = compare(sc_full, tr_head, y_test, cfg)
    ci = head["difference"]
    non_inferior = ci["low"] is not None and ci["low"] > -cfg.noninferiority_margin
    headline = {
        "comparison": f"transfer on {frac:.0%} of the training set vs scratch on 100%",
        "transfer_fraction": frac,
        **head,
        "noninferiority": {"margin": cfg.noninferiority_margin, "holds": bool(non_inferior)},
        "verdict": stats.verdict(ci, cfg.noninferiority_margin, 1.0 - frac),
        "seed_reference": SEED_REFERENCE,
    }
    curve = []
    for f in sorted(set(cfg.fractions)):
        sc, tr = _by(scratch, f), _by(transfer, f)
        point = {"fraction": f, "scratch": _summary(sc), "transfer": _summary(tr)}
        point["n_train"] = point["transfer"]["n_train"]
        point.update({k: v for k, v in compare(sc, tr, y_test, cfg).items() if k != "seeds"})
        curve.append(point)
    tta = {}
    for name, rows in (("scratch", sc_full), ("transfer", tr_head)):
        per_seed = {str(s): r["time_to_accuracy"] for s, r in sorted(rows.items())}
        def avg(key: str) -> float | None:
            vals = [v[key] for v in per_seed.values() if v[key] is not None]
            return float(np.mean(vals)) if len(vals) == len(per_seed) else None
        tta[name] = {"per_seed": per_seed, "mean": {k: avg(k) for k in
                                                     ("epochs_to_target", "seconds_to_target", "epochs_to_best",
                                                      "seconds_to_best", "best_val_accuracy")},
                     "reached_target": sum(v["epochs_to_target"] is not None for v in per_seed.values())}
    return {
        "schema_version": SCHEMA_VERSION,
        "config": cfg.to_dict(),
        "data": {k: manifest[k] for k in ("source", "sha256", "counts", "binary_classes", "pretrain_classes")},
        "models": {"scratch": _summary(sc_full), "transfer": _summary(tr_head)},
        "headline": headline,
        "verdict": headline["verdict"],
        "curve": curve,
        "time_to_accuracy": tta,
        "results": [{k: v for k, v in r.items()} for r in scratch + transfer],
    }

"""Turn the per-task results into the metrics document: the comparison, the curve, the verdict."""

from __future__ import annotations

from typing import Any

import numpy as np

from include import artifacts, stats
from include.config import ExperimentConfig
from include.results import ModelResult

# The seed notebook's single-run figures, shown next to ours.
SEED_REFERENCE = {"scratch_accuracy": 0.9624, "transfer_accuracy": 0.9664, "error_rate_reduction": 0.119,
                  "transfer_fraction": 0.7, "scratch_fraction": 1.0}
SCHEMA_VERSION = 2  # 2: t interval for the error-rate reduction, accuracy_table, timings, trend


def headline_fraction(cfg: ExperimentConfig) -> float:
    """The seed's comparison point is transfer at 70%; otherwise the largest fraction asked for."""
    return 0.7 if 0.7 in cfg.fractions else max(cfg.fractions)


def _by(results: list[ModelResult], fraction: float) -> dict[int, ModelResult]:
    return {r.seed: r for r in results if abs(r.fraction - fraction) < 1e-9}


def _summary(rows: dict[int, ModelResult]) -> dict[str, Any]:
    seeds = sorted(rows)
    acc = [rows[s].test_accuracy for s in seeds]
    return {
        "n_train": rows[seeds[0]].n_train,
        "test_accuracy": stats.mean_sd(acc),
        "test_loss": stats.mean_sd([rows[s].test_loss for s in seeds]),
        "per_seed": {str(s): {"test_accuracy": rows[s].test_accuracy, "test_loss": rows[s].test_loss,
                              "epochs_run": dict(rows[s].epochs_run), "wall_seconds": dict(rows[s].wall_seconds),
                              "n_train": rows[s].n_train} for s in seeds},
        "epochs_run": dict(rows[seeds[0]].epochs_run),
        "wall_seconds": {k: float(np.mean([rows[s].wall_seconds[k] for s in seeds]))
                         for k in rows[seeds[0]].wall_seconds},
    }


def compare(a: dict[int, ModelResult], b: dict[int, ModelResult], y_test: np.ndarray,
            cfg: ExperimentConfig) -> dict[str, Any]:
    """Paired comparison of scratch rows `a` and transfer rows `b` over their common seeds."""
    seeds = sorted(set(a) & set(b))
    diffs = [b[s].test_accuracy - a[s].test_accuracy for s in seeds]
    err = [stats.error_rate_reduction(a[s].test_accuracy, b[s].test_accuracy) for s in seeds]
    mcn = {}
    if not seeds:
        raise ValueError("no seed has both a scratch and a transfer result to compare; check the upstream tasks")
    for s in seeds:
        pa = artifacts.load_npy(a[s].predictions_path, mmap=False)
        pb = artifacts.load_npy(b[s].predictions_path, mmap=False)
        mcn[str(s)] = stats.mcnemar_exact(y_test, pa, pb)
    defined = [e for e in err if e is not None]  # undefined where scratch made no test error
    err_ci = (stats.t_interval(defined, cfg.confidence) if defined else
              {"method": stats.INTERVAL_METHOD, "confidence": cfg.confidence, "n": 0, "mean": None, "low": None,
               "high": None})
    return {
        "seeds": seeds,
        "difference": {**stats.t_interval(diffs, cfg.confidence),
                       "per_seed": {str(s): d for s, d in zip(seeds, diffs, strict=True)}},
        "error_rate_reduction": {**err_ci, "per_seed": {str(s): e for s, e in zip(seeds, err, strict=True)},
                                 "n_undefined": len(err) - len(defined)},
        "mcnemar": mcn,
    }


def _time_to_accuracy(rows: dict[int, ModelResult]) -> dict[str, Any]:
    """Per seed and mean; a mean over "time to target" is only given when every seed reached it."""
    per_seed = {str(s): r.time_to_accuracy.model_dump() for s, r in sorted(rows.items())}

    def avg(key: str) -> float | None:
        vals = [v[key] for v in per_seed.values() if v[key] is not None]
        return float(np.mean(vals)) if vals and len(vals) == len(per_seed) else None

    return {"per_seed": per_seed,
            "mean": {k: avg(k) for k in ("epochs_to_target", "seconds_to_target", "epochs_to_best",
                                         "seconds_to_best", "best_val_accuracy")},
            "reached_target": sum(v["epochs_to_target"] is not None for v in per_seed.values()),
            "n_seeds": len(per_seed)}


def accuracy_table(cfg: ExperimentConfig, scratch: list[ModelResult],
                   transfer: list[ModelResult]) -> list[dict[str, Any]]:
    """Per-seed test accuracy of every (model, fraction), scratch on 100% included."""
    rows = []
    for model, results, fractions in (("scratch", scratch, cfg.scratch_fractions), ("transfer", transfer,
                                                                                    tuple(sorted(cfg.fractions)))):
        for f in fractions:
            by = _by(results, f)
            if not by:
                raise ValueError(f"no {model} result for fraction {f:g}; check the upstream tasks")
            acc = {str(s): by[s].test_accuracy for s in sorted(by)}
            rows.append({"model": model, "fraction": f, "n_train": next(iter(by.values())).n_train,
                         "per_seed": acc, **stats.mean_sd(list(acc.values()))})
    return rows


def fit_timings(scratch: list[ModelResult], transfer: list[ModelResult]) -> list[dict[str, Any]]:
    """model.fit wall seconds per mapped task instance (summed over that task's fractions)."""
    out: dict[tuple[str, int], float] = {}
    for r in scratch:
        out[("train_scratch", r.seed)] = out.get(("train_scratch", r.seed), 0.0) + r.wall_seconds["train"]
    for r in transfer:
        out[("pretrain", r.seed)] = r.wall_seconds["pretrain"]  # one pretrained model per seed
        for phase, task_id in (("head", "transfer.head"), ("finetune", "transfer.finetune")):
            out[(task_id, r.seed)] = out.get((task_id, r.seed), 0.0) + r.wall_seconds[phase]
    order = {"pretrain": 0, "train_scratch": 1, "transfer.head": 2, "transfer.finetune": 3}
    return [{"task_id": t, "seed": s, "fit_seconds": v} for (t, s), v in sorted(out.items(),
                                                                              key=lambda kv: (order[kv[0][0]],
                                                                                              kv[0][1]))]


def build_metrics(cfg: ExperimentConfig, manifest: dict[str, Any], scratch: list[ModelResult],
                  transfer: list[ModelResult], y_test: np.ndarray) -> dict[str, Any]:
    frac = headline_fraction(cfg)
    sc_full, tr_headline = _by(scratch, 1.0), _by(transfer, frac)
    headline_comparison = compare(sc_full, tr_headline, y_test, cfg)
    ci = headline_comparison["difference"]
    models = {"scratch": _summary(sc_full), "transfer": _summary(tr_headline)}
    accs = (models["scratch"]["test_accuracy"]["mean"], models["transfer"]["test_accuracy"]["mean"])
    headline = {
        "comparison": f"transfer on {frac:.0%} of the training set vs scratch on 100%",
        "transfer_fraction": frac,
        "data_saving": 1.0 - frac,
        **headline_comparison,
        "noninferiority": stats.noninferiority(list(ci["per_seed"].values()), cfg.noninferiority_margin,
                                              cfg.confidence),
        "verdict": stats.verdict(ci, cfg.noninferiority_margin, 1.0 - frac, accs),
        "seed_reference": SEED_REFERENCE,
    }
    curve = []
    for f in sorted(set(cfg.fractions)):
        sc, tr = _by(scratch, f), _by(transfer, f)
        point = {"fraction": f, "scratch": _summary(sc), "transfer": _summary(tr)}
        point["n_train"] = point["transfer"]["n_train"]
        point.update({k: v for k, v in compare(sc, tr, y_test, cfg).items() if k != "seeds"})
        curve.append(point)
    return {
        "schema_version": SCHEMA_VERSION,
        "config": cfg.to_dict(),
        "data": {k: manifest[k] for k in ("source", "sha256", "counts", "binary_classes", "pretrain_classes",
                                               "dataset")},
        "models": models,
        "headline": headline,
        "verdict": headline["verdict"],
        "accuracy_table": accuracy_table(cfg, scratch, transfer),
        "curve": curve,
        "time_to_accuracy": {"target_val_accuracy": cfg.target_val_accuracy,
                             "models": {"scratch": _time_to_accuracy(sc_full),
                                        "transfer": _time_to_accuracy(tr_headline)}},
        "results": [r.to_dict() for r in scratch + transfer],
    }

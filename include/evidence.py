"""Turn the per-task results into the metrics document: the comparison, the curve, the verdict.

This module computes every section of metrics.json from the run's own results (include/report/document.py
names the rule): `run_evidence` the statistical ones, `timings` the timings, `document` assembles the
whole document once tasks/nightly.py has computed the nightly section. Callers gather inputs and write.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np

from include import artifacts, seeding, stats
from include.config import ExperimentConfig
from include.report import document as doc
from include.results import ModelResult

# The seed notebook's single-run figures, shown next to ours.
SEED_REFERENCE = {"scratch_accuracy": 0.9624, "transfer_accuracy": 0.9664, "error_rate_reduction": 0.119,
                  "transfer_fraction": 0.7, "scratch_fraction": 1.0}
SCHEMA_VERSION = doc.SCHEMA_VERSION


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


def _histories(results: list[ModelResult], fraction: float) -> list[dict[str, Any]]:
    return [artifacts.read_json(r.history_path) for r in results if abs(r.fraction - fraction) < 1e-9]


def learning_curve_summary(histories: list[dict[str, Any]], key: str = "val_accuracy") -> dict[str, Any]:
    """Per-epoch mean, min and max over seeds of one model's histories (both phases, in order)."""
    curves = [[r[key] for ph in h["phases"] for r in ph["epochs"]] for h in histories]
    n = min(len(c) for c in curves)
    a = np.array([c[:n] for c in curves])
    return {"metric": key, "n_seeds": len(curves), "epoch": list(range(1, n + 1)), "mean": a.mean(0).tolist(),
            "min": a.min(0).tolist(), "max": a.max(0).tolist(),
            "phases": [{"phase": ph["phase"].split("[")[0], "epochs": len(ph["epochs"])}
                       for ph in histories[0]["phases"]]}


def confusion(results: list[ModelResult], fraction: float, y_test: np.ndarray) -> dict[str, Any]:
    """2x2 test confusion matrices (rows: true label 0, 1) per seed and summed over seeds."""
    from sklearn.metrics import confusion_matrix

    per_seed = {str(r.seed): confusion_matrix(y_test, artifacts.load_npy(r.predictions_path, mmap=False),
                                              labels=[0, 1]).tolist()
                for r in sorted(results, key=lambda r: r.seed) if abs(r.fraction - fraction) < 1e-9}
    summed = np.sum([np.array(v) for v in per_seed.values()], axis=0).astype(int).tolist()
    return {"fraction": fraction, "summed": summed, "per_seed": per_seed}


def timings(cfg: ExperimentConfig, scratch: list[ModelResult], transfer: list[ModelResult],
            af: dict[str, Any] | None, compare_seconds: float, finished_at: datetime) -> dict[str, Any]:
    """The timings section: Airflow's task instances (as compare_report read them) and model.fit seconds."""
    af = af or {"dag_run_started_at": None, "task_instances": None, "error": "not run by Airflow"}
    tis = af["task_instances"]
    if tis is not None:  # a mapped task's map index i is the i-th chunk of seeds_per_task seeds
        chunks = seeding.seed_chunks(cfg.seeds, cfg.seeds_per_task)
        order = ["split_data", "pretrain", "train_scratch", "transfer.head", "transfer.finetune"]

        def seeds_of(t: dict[str, Any]) -> list[int] | None:
            return chunks[t["map_index"]] if 0 <= t["map_index"] < len(chunks) else None

        tis = sorted(({**t, "seeds": seeds_of(t),
                       "seed": s[0] if (s := seeds_of(t)) is not None and len(s) == 1 else None} for t in tis),
                     key=lambda t: (order.index(t["task_id"]) if t["task_id"] in order else len(order),
                                    t["task_id"], t["map_index"]))
    elapsed = None
    if af["dag_run_started_at"]:
        elapsed = (finished_at - datetime.fromisoformat(af["dag_run_started_at"])).total_seconds()
    return {"dag_run_started_at": af["dag_run_started_at"],
            "report_finished_at": finished_at.isoformat(timespec="seconds"),
            "run_elapsed_seconds": elapsed, "compare_report_seconds": compare_seconds,
            "task_instances": tis, "task_instances_error": af["error"],
            "fit_seconds": fit_timings(scratch, transfer)}


def run_evidence(cfg: ExperimentConfig, manifest: dict[str, Any], scratch: list[ModelResult],
                 transfer: list[ModelResult], y_test: np.ndarray, run_id: str, run: str, finished_at: str,
                 provenance: dict[str, Any]) -> doc.RunEvidence:
    """Every section the run's own results decide; histories and predictions are read from their files."""
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
        # Tonight's own t verdict: the report's headline verdict is the pooled one (`document`).
        "verdict": {**stats.verdict(ci, cfg.noninferiority_margin, 1.0 - frac, accs), "basis": "tonight"},
        "seed_reference": SEED_REFERENCE,
    }
    curve = []
    for f in sorted(set(cfg.fractions)):
        sc, tr = _by(scratch, f), _by(transfer, f)
        point = {"fraction": f, "scratch": _summary(sc), "transfer": _summary(tr)}
        point["n_train"] = point["transfer"]["n_train"]
        point.update({k: v for k, v in compare(sc, tr, y_test, cfg).items() if k != "seeds"})
        curve.append(point)
    labels = [manifest["binary_classes"]["0"], manifest["binary_classes"]["1"]]
    return doc.RunEvidence.model_validate({
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id, "run": run, "finished_at": finished_at,
        "config": cfg.to_dict(),
        "data": {k: manifest[k] for k in ("source", "sha256", "counts", "binary_classes", "pretrain_classes",
                                               "dataset")},
        "models": models,
        "headline": headline,
        "accuracy_table": accuracy_table(cfg, scratch, transfer),
        "curve": curve,
        "time_to_accuracy": {"target_val_accuracy": cfg.target_val_accuracy,
                             "models": {"scratch": _time_to_accuracy(sc_full),
                                        "transfer": _time_to_accuracy(tr_headline)}},
        # The numbers behind the figures go into metrics.json too.
        "learning_curves": {"scratch": learning_curve_summary(_histories(scratch, 1.0)),
                            "transfer": learning_curve_summary(_histories(transfer, frac))},
        "confusion_matrices": {"labels": labels, "scratch": confusion(scratch, 1.0, y_test),
                               "transfer": confusion(transfer, frac, y_test)},
        "results": [r.to_dict() for r in scratch + transfer],
        "provenance": provenance,
    })


def document(ev: doc.RunEvidence, nightly: doc.Nightly, trend: list[dict[str, Any]],
             run_timings: dict[str, Any]) -> doc.MetricsDocument:
    """The whole document: the run's evidence, the nights around it, and the pooled verdict as its headline."""
    return doc.MetricsDocument.model_validate({
        **{name: getattr(ev, name) for name in ev.model_fields_set},
        "verdict": {**nightly.pooled.verdict.model_dump(exclude_unset=True), "basis": "pooled"},
        "trend": trend, "nightly": nightly, "timings": run_timings})

"""Steps 2-4: pretrain (8 classes), scratch baseline (2 classes), two-phase transfer."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from include import artifacts
from include.artifacts import RunPaths
from include.config import ExperimentConfig

from tasks.common import frac_tag

log = logging.getLogger("tl.train")


class Split:
    """Read-only view of the split manifest; arrays are memory-mapped, never decoded again."""

    def __init__(self, manifest_path: str | Path) -> None:
        self.path = Path(manifest_path)
        try:
            self.manifest = artifacts.read_json(self.path)
        except (OSError, ValueError) as exc:  # missing or damaged: only re-running split_data helps
            raise artifacts.BadArtifactError(f"{self.path}: split manifest is missing or unreadable ({exc}). "
                                             "Clear and re-run split_data for this run.") from exc

    def array(self, name: str) -> np.ndarray:
        return artifacts.load_npy(self.manifest["arrays"][name])

    def target_train(self, seed: int, fraction: float) -> tuple[np.ndarray, np.ndarray]:
        idx = artifacts.load_npy(self.manifest["subsets"][f"seed{seed}_frac{frac_tag(fraction)}"], mmap=False)
        return np.asarray(self.array("target_x_train")[idx]), np.asarray(self.array("target_y_train")[idx])

    def target_val(self) -> tuple[np.ndarray, np.ndarray]:
        return self.array("target_x_val"), self.array("target_y_val")

    def target_test(self) -> tuple[np.ndarray, np.ndarray]:
        return self.array("target_x_test"), self.array("target_y_test")


def _evaluate_and_save(model: Any, split: Split, paths: RunPaths, stem: str) -> dict[str, Any]:
    from include.training import evaluate

    x_te, y_te = split.target_test()
    ev = evaluate(model, x_te, y_te)
    pred_path = artifacts.save_npy(paths.models / f"{stem}.predictions.npy", ev["predictions"])
    model_path = artifacts.save_model(model, paths.models / f"{stem}.keras")
    return {"test_accuracy": ev["accuracy"], "test_loss": ev["loss"],
            "model_path": str(model_path), "predictions_path": str(pred_path)}


def pretrain(cfg: ExperimentConfig, manifest: str, seed: int, paths: RunPaths) -> dict[str, Any]:
    from include.networks import build_mlp, compile_model
    from include.training import configure_tensorflow, evaluate, fit

    split = Split(manifest)
    paths.ensure(paths.models)
    configure_tensorflow(seed)
    model = compile_model(build_mlp(len(cfg.pretrain_labels), name="pretrain"), cfg.pretrain_lr,
                          cfg.steps_per_execution)
    x_tr, y_tr = split.array("pretrain_x_train"), split.array("pretrain_y_train")
    val = (split.array("pretrain_x_val"), split.array("pretrain_y_val"))
    hist = fit(model, x_tr, y_tr, val, cfg.pretrain_epochs, cfg.batch_size, phase=f"pretrain[seed={seed}]")
    ev = evaluate(model, *val)
    stem = f"pretrain_seed{seed}"
    history_path = artifacts.write_json(paths.models / f"{stem}.history.json", {"phases": [hist]})
    model_path = artifacts.save_model(model, paths.models / f"{stem}.keras")
    log.info("pretrain seed=%d: val_accuracy=%.4f on %d examples in %.1fs", seed, ev["accuracy"], len(y_tr),
             hist["wall_seconds"])
    return {"seed": seed, "model_path": str(model_path), "history_path": str(history_path),
            "val_accuracy": ev["accuracy"], "n_train": int(len(y_tr)), "epochs_run": hist["epochs_run"],
            "wall_seconds": {"pretrain": hist["wall_seconds"]}}


def train_scratch(cfg: ExperimentConfig, manifest: str, seed: int, fraction: float, paths: RunPaths) -> dict[str, Any]:
    from include.networks import build_mlp, compile_model
    from include.training import configure_tensorflow, fit, time_to_accuracy

    split = Split(manifest)
    paths.ensure(paths.models)
    configure_tensorflow(seed)
    model = compile_model(build_mlp(1, name="scratch"), cfg.scratch_lr, cfg.steps_per_execution)
    x_tr, y_tr = split.target_train(seed, fraction)
    hist = fit(model, x_tr, y_tr, split.target_val(), cfg.scratch_epochs, cfg.batch_size,
               phase=f"scratch[seed={seed},fraction={fraction:g}]")
    stem = f"scratch_seed{seed}_frac{frac_tag(fraction)}"
    result = _evaluate_and_save(model, split, paths, stem)
    history_path = artifacts.write_json(paths.models / f"{stem}.history.json", {"phases": [hist]})
    log.info("scratch seed=%d fraction=%g: test_accuracy=%.4f on %d examples", seed, fraction,
             result["test_accuracy"], len(y_tr))
    return {"model": "scratch", "seed": seed, "fraction": fraction, "n_train": int(len(y_tr)),
            "history_path": str(history_path), "epochs_run": {"train": hist["epochs_run"]},
            "wall_seconds": {"train": hist["wall_seconds"]},
            "time_to_accuracy": time_to_accuracy(hist["epochs"], cfg.target_val_accuracy), **result}


def transfer_head(cfg: ExperimentConfig, manifest: str, pretrained: dict[str, Any], fraction: float,
                  paths: RunPaths) -> dict[str, Any]:
    """Phase 1: new sigmoid head on the pretrained body, body frozen."""
    from include.networks import compile_model, replace_head, set_trainable
    from include.training import configure_tensorflow, fit

    seed = int(pretrained["seed"])
    split = Split(manifest)
    paths.ensure(paths.models)
    configure_tensorflow(seed)
    base = artifacts.load_model(pretrained["model_path"])
    model = set_trainable(replace_head(base, 1), trainable=False)
    compile_model(model, cfg.head_lr, cfg.steps_per_execution)
    x_tr, y_tr = split.target_train(seed, fraction)
    hist = fit(model, x_tr, y_tr, split.target_val(), cfg.head_epochs, cfg.batch_size,
               phase=f"transfer.head[seed={seed},fraction={fraction:g}]")
    stem = f"transfer_head_seed{seed}_frac{frac_tag(fraction)}"
    history_path = artifacts.write_json(paths.models / f"{stem}.history.json", {"phases": [hist]})
    model_path = artifacts.save_model(model, paths.models / f"{stem}.keras")
    return {"seed": seed, "fraction": fraction, "n_train": int(len(y_tr)), "model_path": str(model_path),
            "history_path": str(history_path), "epochs_run": hist["epochs_run"],
            "wall_seconds": hist["wall_seconds"], "pretrain_wall_seconds": pretrained["wall_seconds"]["pretrain"]}


def transfer_finetune(cfg: ExperimentConfig, manifest: str, head: dict[str, Any], paths: RunPaths) -> dict[str, Any]:
    """Phase 2: unfreeze every layer, recompile, train on the same subset."""
    from include.networks import compile_model, set_trainable
    from include.training import configure_tensorflow, fit, time_to_accuracy

    seed, fraction = int(head["seed"]), float(head["fraction"])
    split = Split(manifest)
    paths.ensure(paths.models)
    configure_tensorflow(seed)
    model = set_trainable(artifacts.load_model(head["model_path"]), trainable=True)
    compile_model(model, cfg.finetune_lr, cfg.steps_per_execution)
    x_tr, y_tr = split.target_train(seed, fraction)
    hist = fit(model, x_tr, y_tr, split.target_val(), cfg.finetune_epochs, cfg.batch_size,
               phase=f"transfer.finetune[seed={seed},fraction={fraction:g}]", epoch_offset=head["epochs_run"])
    head_hist = artifacts.read_json(head["history_path"])["phases"][0]
    for rec in hist["epochs"]:  # one clock across both phases, for time-to-accuracy
        rec["elapsed_s"] += head["wall_seconds"]
    stem = f"transfer_seed{seed}_frac{frac_tag(fraction)}"
    result = _evaluate_and_save(model, split, paths, stem)
    history_path = artifacts.write_json(paths.models / f"{stem}.history.json", {"phases": [head_hist, hist]})
    log.info("transfer seed=%d fraction=%g: test_accuracy=%.4f on %d examples", seed, fraction,
             result["test_accuracy"], len(y_tr))
    return {"model": "transfer", "seed": seed, "fraction": fraction, "n_train": int(len(y_tr)),
            "history_path": str(history_path),
            "epochs_run": {"head": head["epochs_run"], "finetune": hist["epochs_run"]},
            "wall_seconds": {"head": head["wall_seconds"], "finetune": hist["wall_seconds"],
                             "pretrain": head["pretrain_wall_seconds"]},
            "time_to_accuracy": time_to_accuracy(head_hist["epochs"] + hist["epochs"], cfg.target_val_accuracy),
            **result}


# -- per-seed entry points for the mapped tasks: every fraction of one seed, in one process -------
def scratch_for_seed(cfg: ExperimentConfig, job: dict[str, Any], paths: RunPaths) -> list[dict[str, Any]]:
    return [train_scratch(cfg, job["manifest"], int(job["seed"]), f, paths) for f in cfg.scratch_fractions]


def head_for_seed(cfg: ExperimentConfig, job: dict[str, Any], pretrained: dict[str, Any],
                  paths: RunPaths) -> list[dict[str, Any]]:
    if int(pretrained["seed"]) != int(job["seed"]):
        raise ValueError(f"pretrained model of seed {pretrained['seed']} handed to seed {job['seed']}")
    return [transfer_head(cfg, job["manifest"], pretrained, f, paths) for f in cfg.fractions]


def finetune_for_seed(cfg: ExperimentConfig, job: dict[str, Any], heads: list[dict[str, Any]],
                      paths: RunPaths) -> list[dict[str, Any]]:
    return [transfer_finetune(cfg, job["manifest"], h, paths) for h in heads]

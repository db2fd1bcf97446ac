"""Step 1: read the IDX files once, make the seed's stratified splits, standardise, save as .npy."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from include import artifacts, splits
from include.artifacts import RunPaths
from include.config import CLASS_NAMES, ConfigError, ExperimentConfig
from include.data import DataError, load_fashion_mnist

from tasks.common import frac_tag

log = logging.getLogger("tl.split_data")


def _check_sizes(cfg: ExperimentConfig, y_pre: np.ndarray, y_tgt: np.ndarray, y_test: np.ndarray) -> None:
    for label in cfg.target_labels:
        if not (y_tgt == label).any():
            raise DataError(f"Target class {CLASS_NAMES[label]!r} has no training examples in the data; "
                            "check the data files or choose other target_classes.")
        if not (y_test == label).any():
            raise DataError(f"Target class {CLASS_NAMES[label]!r} has no test examples in the data; "
                            "check the data files or choose other target_classes.")
    for label in cfg.pretrain_labels:
        if not (y_pre == label).any():
            raise DataError(f"Pretraining class {CLASS_NAMES[label]!r} has no training examples in the data; "
                            "check the data files: every class must be present.")
    for name, size, available, n_classes in (("pretrain_val_size", cfg.pretrain_val_size, len(y_pre), 8),
                                             ("target_val_size", cfg.target_val_size, len(y_tgt), 2)):
        if size < n_classes or size > available - n_classes:
            raise ConfigError(f"{name}={size} does not fit {available} available examples: it must leave at "
                              f"least one example per class on each side. Use a value below {available - n_classes}.")
    n_train = len(y_tgt) - cfg.target_val_size
    smallest = min(cfg.fractions)
    if round(smallest * n_train) < 2 * 2:
        raise ConfigError(f"fraction {smallest} of {n_train} binary training examples leaves fewer than 2 per "
                          "class; use a larger fraction.")


def run(cfg: ExperimentConfig, paths: RunPaths) -> list[dict[str, Any]]:
    paths.ensure(paths.data)
    ds = load_fashion_mnist(cfg.data_dir, verify_checksums=cfg.verify_checksums)
    x_pre, y_pre = splits.select_classes(ds.x_train, ds.y_train, cfg.pretrain_labels)
    x_tgt, y_tgt = splits.select_classes(ds.x_train, ds.y_train, cfg.target_labels)
    x_test, y_test = splits.select_classes(ds.x_test, ds.y_test, cfg.target_labels)
    _check_sizes(cfg, y_pre, y_tgt, y_test)

    out: dict[str, str] = {}

    def save(name: str, arr: np.ndarray) -> None:
        out[name] = str(artifacts.save_npy(paths.data / f"{name}.npy", arr))

    # Pretraining set: the 8 other classes, 5,000 stratified for validation (random_state 42).
    tr, va = splits.stratified_holdout(y_pre, cfg.pretrain_val_size, cfg.split_random_state)
    (xs_tr, xs_va), _ = splits.standardise(x_pre[tr], x_pre[va])
    y_pre_enc = splits.encode_labels(y_pre, cfg.pretrain_labels)
    save("pretrain_x_train", xs_tr), save("pretrain_y_train", y_pre_enc[tr])
    save("pretrain_x_val", xs_va), save("pretrain_y_val", y_pre_enc[va])

    # Binary set: 3,000 stratified for validation; test = the test images of the two classes.
    tr, va = splits.stratified_holdout(y_tgt, cfg.target_val_size, cfg.split_random_state)
    (xt_tr, xt_va, xt_te), stats = splits.standardise(x_tgt[tr], x_tgt[va], x_test)
    y_tgt_enc = splits.encode_labels(y_tgt, cfg.target_labels)
    save("target_x_train", xt_tr), save("target_y_train", y_tgt_enc[tr])
    save("target_x_val", xt_va), save("target_y_val", y_tgt_enc[va])
    save("target_x_test", xt_te), save("target_y_test", splits.encode_labels(y_test, cfg.target_labels))

    # One stratified subset per (seed, fraction), shared by scratch and transfer for a paired comparison.
    subsets: dict[str, str] = {}
    for seed in cfg.seeds:
        for fraction in cfg.scratch_fractions:
            idx = splits.stratified_subset(y_tgt_enc[tr], fraction, seed)
            key = f"seed{seed}_frac{frac_tag(fraction)}"
            subsets[key] = str(artifacts.save_npy(paths.data / "subsets" / f"{key}.npy", idx.astype(np.int64)))

    ordered = sorted(cfg.target_labels)
    manifest = {
        "run": paths.run,
        "arrays": out,
        "subsets": subsets,
        "source": ds.source,
        "sha256": ds.sha256,
        "binary_classes": {"0": CLASS_NAMES[ordered[0]], "1": CLASS_NAMES[ordered[1]]},
        "pretrain_classes": [CLASS_NAMES[i] for i in cfg.pretrain_labels],
        "counts": {"pretrain_train": int(len(xs_tr)), "pretrain_val": int(len(xs_va)),
                   "target_train": int(len(xt_tr)), "target_val": int(len(xt_va)), "target_test": int(len(xt_te))},
        "standardisation": stats,
        "config": cfg.to_dict(),
    }
    manifest_path = artifacts.write_json(paths.data / "split.json", manifest)
    log.info("Split: %s", manifest["counts"])
    # One job per seed: the unit of dynamic task mapping downstream.
    return [{"manifest": str(manifest_path), "seed": seed} for seed in cfg.seeds]

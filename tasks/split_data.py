"""Step 1: read the dataset once (any registered format), make the seed's stratified splits, standardise,
save as .npy; the manifest names the dataset, its classes and its input shape."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from include import artifacts, seeding
from include.artifacts import RunPaths
from include.config import ConfigError, ExperimentConfig
from include.data import DataError, Dataset, ReadOptions, load_dataset, splits
from include.results import SplitJob
from include.store import publish_dir
from tasks.common import frac_tag

log = logging.getLogger("tl.split_data")


# The fewest training images a class may have: one for the validation hold-out, two left for the
# stratified subsets (one in, one out at a fraction below 1).
MIN_PER_CLASS = 3


def _check_sizes(cfg: ExperimentConfig, ds: Dataset, labels: tuple[tuple[int, ...], tuple[int, ...]],
                 y_pre: np.ndarray, y_tgt: np.ndarray, y_test: np.ndarray) -> None:
    names, (targets, pretrain) = ds.class_names, labels
    for label in targets:
        if not (y_test == label).any():
            raise DataError(f"Target class {names[label]!r} has no test examples in the data ({ds.source}); "
                            "check the data files or choose other target_classes.")
    for kind, y, chosen, fix in (("Target", y_tgt, targets, "check the data files or choose other target_classes"),
                                 ("Pretraining", y_pre, pretrain, "check the data files: every class must be "
                                                                  "present, or name pretrain_classes")):
        for label in chosen:
            n = int((y == label).sum())
            if n == 0:
                raise DataError(f"{kind} class {names[label]!r} has no training examples in the data "
                                f"({ds.source}); {fix}.")
            if n < MIN_PER_CLASS:
                raise DataError(f"{kind} class {names[label]!r} has {n} training image(s) in {ds.source}; the "
                                f"stratified splits need at least {MIN_PER_CLASS} per class. Add images of it, "
                                "or choose other classes.")
    for name, size, available, n_classes in (("pretrain_val_size", cfg.pretrain_val_size, len(y_pre), len(pretrain)),
                                             ("target_val_size", cfg.target_val_size, len(y_tgt), len(targets))):
        if size < n_classes or size > available - n_classes:
            raise ConfigError(f"{name}={size} does not fit {available} available examples: it must leave at "
                              f"least one example per class on each side. Use a value below {available - n_classes}.")
    n_train = len(y_tgt) - cfg.target_val_size
    smallest = min(cfg.fractions)
    if round(smallest * n_train) < 2 * 2:
        raise ConfigError(f"fraction {smallest} of {n_train} binary training examples leaves fewer than 2 per "
                          "class; use a larger fraction.")


# Bump when the split, the encoding or the standardisation changes what is written: a new version
# gets a new store key, so no run ever reads arrays that the current code would not produce.
SPLIT_CODE_VERSION = 2  # 2: labels by class name, any reader; the read options join the key
ARRAY_NAMES = ("pretrain_x_train", "pretrain_y_train", "pretrain_x_val", "pretrain_y_val", "target_x_train",
               "target_y_train", "target_x_val", "target_y_val", "target_x_test", "target_y_test")


def read_options(cfg: ExperimentConfig) -> ReadOptions:
    return ReadOptions(verify_checksums=cfg.verify_checksums, image_size=tuple(cfg.image_size) or None,  # type: ignore[arg-type]
                       test_share=cfg.test_share, random_state=cfg.split_random_state)


def store_key(cfg: ExperimentConfig, data_sha256: dict[str, str],
              labels: tuple[tuple[int, ...], tuple[int, ...]]) -> tuple[str, dict[str, Any]]:
    """The split arrays' identity: the data's content hashes and how it was read, the split settings,
    the split code version."""
    spec = {"data_sha256": dict(sorted(data_sha256.items())), "target_labels": sorted(labels[0]),
            "pretrain_labels": sorted(labels[1]), "image_size": list(cfg.image_size), "test_share": cfg.test_share,
            "pretrain_val_size": cfg.pretrain_val_size,
            "target_val_size": cfg.target_val_size, "split_random_state": cfg.split_random_state,
            "split_code_version": SPLIT_CODE_VERSION}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:32], spec


def _build_arrays(folder: Path, cfg: ExperimentConfig, ds: Dataset, spec: dict[str, Any]) -> None:
    """Make the seed's splits and write them, with their counts and statistics, into `folder`."""
    target_labels, pretrain_labels = tuple(spec["target_labels"]), tuple(spec["pretrain_labels"])
    x_pre, y_pre = splits.select_classes(ds.x_train, ds.y_train, pretrain_labels)
    x_tgt, y_tgt = splits.select_classes(ds.x_train, ds.y_train, target_labels)
    x_test, y_test = splits.select_classes(ds.x_test, ds.y_test, target_labels)
    out: dict[str, np.ndarray] = {}
    # Pretraining set: the other classes (Fashion-MNIST: 8), 5,000 stratified for validation (random_state 42).
    tr, va = splits.stratified_holdout(y_pre, cfg.pretrain_val_size, cfg.split_random_state)
    (out["pretrain_x_train"], out["pretrain_x_val"]), _ = splits.standardise(x_pre[tr], x_pre[va])
    y_pre_enc = splits.encode_labels(y_pre, pretrain_labels)
    out["pretrain_y_train"], out["pretrain_y_val"] = y_pre_enc[tr], y_pre_enc[va]
    # Binary set: 3,000 stratified for validation; test = the test images of the two classes.
    tr, va = splits.stratified_holdout(y_tgt, cfg.target_val_size, cfg.split_random_state)
    (out["target_x_train"], out["target_x_val"], out["target_x_test"]), stats = splits.standardise(
        x_tgt[tr], x_tgt[va], x_test)
    y_tgt_enc = splits.encode_labels(y_tgt, target_labels)
    out["target_y_train"], out["target_y_val"] = y_tgt_enc[tr], y_tgt_enc[va]
    out["target_y_test"] = splits.encode_labels(y_test, target_labels)
    for name in ARRAY_NAMES:
        np.save(folder / f"{name}.npy", out[name], allow_pickle=False)
    counts = {"pretrain_train": len(out["pretrain_y_train"]), "pretrain_val": len(out["pretrain_y_val"]),
              "target_train": len(out["target_y_train"]), "target_val": len(out["target_y_val"]),
              "target_test": len(out["target_y_test"])}
    sizes = {name: (folder / f"{name}.npy").stat().st_size for name in ARRAY_NAMES}
    artifacts.write_json(folder / "store.json", {"spec": spec, "counts": counts, "standardisation": stats,
                                                 "sizes": sizes})


def _intact(entry: Path) -> dict[str, Any] | None:
    """The entry's metadata if every array is there at its recorded size, else None."""
    try:
        meta = artifacts.read_json(entry / "store.json")
        ok = all((entry / f"{n}.npy").stat().st_size == meta["sizes"][n] for n in ARRAY_NAMES)
    except (OSError, ValueError, KeyError):
        return None
    return meta if ok else None


def stored_split(cfg: ExperimentConfig, ds: Dataset, store: Path,
                 labels: tuple[tuple[int, ...], tuple[int, ...]]) -> tuple[Path, dict[str, Any]]:
    """The store entry for this data and these settings: reused when present, else built and published."""
    key, spec = store_key(cfg, ds.sha256, labels)
    entry = store / key
    meta = _intact(entry)
    if meta is None:
        if entry.exists():  # damaged (say, a file deleted by hand): set aside, retention removes it later
            log.warning("Split store entry %s is damaged; rebuilding it", entry)
            os.rename(entry, entry.with_name(f".{key}.damaged-{os.getpid()}.tmp"))
        built = publish_dir(entry, lambda folder: _build_arrays(folder, cfg, ds, spec))
        log.info("Split arrays %s %s", "written to" if built else "published by a concurrent run at", entry)
        meta = _intact(entry)
        if meta is None:
            raise artifacts.BadArtifactError(f"{entry}: split store entry is incomplete right after publishing; "
                                             "remove it and re-run split_data.")
    else:
        log.info("Split arrays reused from %s (same data hashes, split settings and code version)", entry)
    os.utime(entry)  # last use, for retention
    return entry, meta


def run(cfg: ExperimentConfig, paths: RunPaths) -> list[dict[str, Any]]:
    """Split arrays from the content store; this run's subsets and manifest under data/<run>/.

    A failure removes this run's data/<run>/ (scratch only this run uses); the store is never half-written.
    """
    try:
        return _run(cfg, paths)
    except BaseException:
        shutil.rmtree(paths.data, ignore_errors=True)
        raise


def _run(cfg: ExperimentConfig, paths: RunPaths) -> list[dict[str, Any]]:
    paths.ensure(paths.data)
    ds = load_dataset(cfg.data_dir, cfg.data_format, read_options(cfg))
    labels = splits.class_labels(cfg.target_classes, cfg.pretrain_classes, ds.class_names)
    _, y_pre = splits.select_classes(ds.x_train, ds.y_train, labels[1])
    _, y_tgt = splits.select_classes(ds.x_train, ds.y_train, labels[0])
    _, y_test = splits.select_classes(ds.x_test, ds.y_test, labels[0])
    _check_sizes(cfg, ds, labels, y_pre, y_tgt, y_test)
    entry, meta = stored_split(cfg, ds, paths.split_store, labels)

    # One stratified subset per (seed, fraction), shared by scratch and transfer for a paired comparison.
    y_train = artifacts.load_npy(entry / "target_y_train.npy", mmap=False)
    subsets: dict[str, str] = {}
    for seed in cfg.seeds:
        for fraction in cfg.scratch_fractions:
            idx = splits.stratified_subset(y_train, fraction, seed)
            key = f"seed{seed}_frac{frac_tag(fraction)}"
            subsets[key] = str(artifacts.save_npy(paths.data / "subsets" / f"{key}.npy", idx.astype(np.int64)))

    names, ordered = ds.class_names, sorted(labels[0])
    manifest = {
        "run": paths.run,
        "arrays": {name: str(entry / f"{name}.npy") for name in ARRAY_NAMES},
        "store_entry": str(entry),
        "subsets": subsets,
        "source": ds.source,
        "sha256": ds.sha256,
        "binary_classes": {"0": names[ordered[0]], "1": names[ordered[1]]},
        # In encoded order: output unit i of the pretrained model is pretrain_classes[i].
        "pretrain_classes": [names[i] for i in sorted(labels[1])],
        # What the model builders read: one image's shape and the class counts come from the data.
        "dataset": {"name": ds.name, "format": ds.format, "class_names": list(names),
                    "input_shape": list(ds.input_shape), "n_pretrain_classes": len(labels[1]),
                    "n_target_classes": len(labels[0])},
        "counts": meta["counts"],
        "standardisation": meta["standardisation"],
        "config": cfg.to_dict(),
    }
    manifest_path = artifacts.write_json(paths.data / "split.json", manifest)
    log.info("Split: %s", manifest["counts"])
    # One job per chunk of seeds_per_task seeds: the unit of dynamic task mapping downstream.
    return [SplitJob(manifest=str(manifest_path), seeds=list(chunk)).to_dict() for chunk in seed_chunks(cfg)]


def seed_chunks(cfg: ExperimentConfig) -> list[tuple[int, ...]]:
    """The seeds in order, cut into chunks of seeds_per_task: each chunk's models train as one batch."""
    return [tuple(chunk) for chunk in seeding.seed_chunks(cfg.seeds, cfg.seeds_per_task)]

"""Class choice by name, class selection, stratified hold-outs and subsets, and standardisation: pure numpy/sklearn."""

from __future__ import annotations

import numpy as np

from include.config_errors import ConfigError


def class_labels(target_classes: tuple[str, ...], pretrain_classes: tuple[str, ...],
                 class_names: tuple[str, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(target labels, pretraining labels) by name, in data whose label i is class_names[i].
    Empty pretrain_classes: every class but the targets."""
    for setting, names, choose in (("target_classes", target_classes, "two of"),
                                   ("pretrain_classes", pretrain_classes, "from")):
        for name in names:
            if name not in class_names:
                raise ConfigError(f"Unknown class name {name!r} in {setting}: not a class of the data. "
                                  f"Choose {choose} {list(class_names)}.")
    targets = tuple(class_names.index(c) for c in target_classes)
    pretrain = (tuple(class_names.index(c) for c in pretrain_classes) if pretrain_classes
                else tuple(i for i in range(len(class_names)) if i not in targets))
    if len(pretrain) < 2:
        raise ConfigError(f"Only {len(pretrain)} class(es) are left to pretrain on besides target_classes "
                          f"{list(target_classes)}; the data has {list(class_names)}. Pretraining needs at "
                          "least two classes: use data with more classes.")
    return targets, pretrain


def select_classes(x: np.ndarray, y: np.ndarray, labels: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    mask = np.isin(y, labels)
    return x[mask], y[mask]


def encode_labels(y: np.ndarray, labels: tuple[int, ...]) -> np.ndarray:
    """Map labels to 0..k-1 in ascending label order, as sklearn's LabelEncoder does in the seed."""
    ordered = np.array(sorted(labels))
    codes = np.searchsorted(ordered, y)
    if len(y) and not np.array_equal(ordered[np.clip(codes, 0, len(ordered) - 1)], y):
        raise ValueError(f"labels outside {sorted(labels)} cannot be encoded")
    return codes.astype(np.int32)


def stratified_holdout(y: np.ndarray, val_size: int, random_state: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a stratified train/validation split, exactly as the seed's train_test_split call."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    train_idx, val_idx = train_test_split(idx, test_size=val_size, random_state=random_state, stratify=y)
    return train_idx, val_idx


def stratified_subset(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of a stratified `fraction` of y (all of it for 1.0). Same seed, same subset."""
    idx = np.arange(len(y))
    if fraction >= 1.0:
        return idx
    from sklearn.model_selection import train_test_split

    chosen, _ = train_test_split(idx, train_size=fraction, random_state=seed, stratify=y)
    return np.sort(chosen)


def standardise(train: np.ndarray, *others: np.ndarray) -> tuple[list[np.ndarray], dict[str, float]]:
    """Scale by the per-pixel mean and std of `train`; return float32 arrays.

    Statistics are computed in float64 as in the seed; the result is cast to float32, which is
    what Keras trains in anyway. Pixels that never vary (std 0) are divided by 1, not 0.
    """
    mean = train.mean(axis=0, keepdims=True, dtype=np.float64)
    std = train.std(axis=0, keepdims=True, dtype=np.float64)
    constant = std == 0
    std = np.where(constant, 1.0, std)
    scaled = [_scale(a, mean, std) for a in (train, *others)]
    return scaled, {"mean_of_means": float(mean.mean()), "zero_std_pixels": int(constant.sum())}


def _scale(a: np.ndarray, mean: np.ndarray, std: np.ndarray, rows: int = 4096) -> np.ndarray:
    """float32((a - mean) / std), in blocks of rows: the same values as one whole-array expression,
    without its two full-size float64 temporaries (270 MB each for the pretraining set)."""
    out = np.empty(a.shape, dtype=np.float32)
    for start in range(0, len(a), rows):
        block = slice(start, start + rows)
        out[block] = (a[block] - mean) / std
    return out

"""Tiny synthetic Fashion-MNIST-shaped IDX files for fast tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from include.data import FILES, write_idx


def make_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each class gets its own bright block, plus noise: learnable in one epoch, not trivially constant."""
    x = rng.integers(0, 60, size=(len(labels), 28, 28), dtype=np.uint8)
    for i, lab in enumerate(labels):
        r, c = divmod(int(lab), 4)
        x[i, 2 + 8 * r: 8 + 8 * r, 2 + 6 * c: 8 + 6 * c] = 200
    return x


def write_tiny_fashion_mnist(folder: Path, train_per_class: int = 40, test_per_class: int = 10,
                             seed: int = 0) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, per in (("train", train_per_class), ("test", test_per_class)):
        y = np.repeat(np.arange(10, dtype=np.uint8), per)
        rng.shuffle(y)
        write_idx(folder / FILES[f"{split}_images"], make_images(y, rng))
        write_idx(folder / FILES[f"{split}_labels"], y)
    return folder


# Settings that fit the tiny data: small hold-outs, one epoch, checksums off (not the official files).
TINY_CONF = {
    "seeds": [42, 7],
    "fractions": [0.5, 1.0],
    "pretrain_epochs": 1, "scratch_epochs": 1, "head_epochs": 1, "finetune_epochs": 1,
    "pretrain_val_size": 40, "target_val_size": 20,
    "batch_size": 16,
    "verify_checksums": False,
}

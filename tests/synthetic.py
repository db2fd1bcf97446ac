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


def tiny_arrays(train_per_class: int = 40, test_per_class: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """The tiny data set's four arrays, in the order write_tiny_fashion_mnist writes them."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, per in (("train", train_per_class), ("test", test_per_class)):
        y = np.repeat(np.arange(10, dtype=np.uint8), per)
        rng.shuffle(y)
        out[f"x_{split}"], out[f"y_{split}"] = make_images(y, rng), y
    return out


def write_tiny_npz(path: Path, names: list[str] | None = None, **arrays: np.ndarray) -> Path:
    """The tiny data set as NPZ in Keras' layout (arrays override), labels.txt beside it when `names`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{**tiny_arrays(), **arrays})
    if names is not None:
        (path.parent / "labels.txt").write_text("".join(f"{n}\n" for n in names))
    return path


def write_tiny_image_folder(folder: Path, train_per_class: int = 40, test_per_class: int = 10,
                            names: tuple[str, ...] = tuple(f"class{i}" for i in range(10))) -> Path:
    """The tiny data set as PNGs: folder/train/<name>/<index>.png and folder/test/<name>/<index>.png."""
    from PIL import Image

    folder = Path(folder)
    arrays = tiny_arrays(train_per_class, test_per_class)
    for split in ("train", "test"):
        for name in names:
            (folder / split / name).mkdir(parents=True, exist_ok=True)
        for i, (img, label) in enumerate(zip(arrays[f"x_{split}"], arrays[f"y_{split}"], strict=True)):
            Image.fromarray(img, mode="L").save(folder / split / names[label] / f"{i:05d}.png")
    return folder


def png_bomb(path: Path, width: int = 100_000, height: int = 100_000) -> Path:
    """A few-hundred-byte PNG whose header declares width x height grey pixels (10 G by default):
    a decompression bomb that a reader must refuse from the header, before decoding anything."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + bytes(width)
    idat = zlib.compress(row * 4)  # a few rows only: the header alone must get the file refused
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                           + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return Path(path)

"""What every dataset reader shares: the Dataset it returns, its options, the size limits, the
class-names file, hashing while reading, and the registry that maps a format name to its reader.

Adding a format is one module with a `@register("name", detect=...)` reader function, imported in
include/data/__init__.py (docs/experiment.md shows one).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# The largest Fashion-MNIST file declares 47 MB of pixels. Any reader refuses data that declares more
# than this in all (a header, an NPZ member, a folder's image sizes times their count) before reading
# it, so memory stays bounded by this, whatever a file claims.
MAX_PAYLOAD = 1 << 30
LABELS_FILE = "labels.txt"  # one class name a line, line i names label i; beside the data
MAX_LABELS_BYTES = 1 << 20


class DataError(ValueError):
    """Missing or bad input data: a permanent error, retrying cannot fix it."""


@dataclass(frozen=True)
class ReadOptions:
    """The settings that change how data is read (ExperimentConfig's Data section)."""

    verify_checksums: bool = True
    image_size: tuple[int, int] | None = None  # declared resize (height, width); None: one size required
    test_share: float | None = None  # image folder without train/ and test/: held-out share per class
    random_state: int = 42
    allow_download: bool = True


@dataclass(frozen=True)
class Dataset:
    x_train: np.ndarray  # (n, height, width) grey or (n, height, width, 3) RGB
    y_train: np.ndarray  # label i names class_names[i]
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    sha256: dict[str, str]  # content hashes: the data's identity in the split store and experiment key
    class_names: tuple[str, ...] = ()
    name: str = ""
    format: str = ""

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x_train.shape[1:])


@dataclass(frozen=True)
class Reader:
    name: str
    read: Callable[[Path, ReadOptions], Dataset]
    detect: Callable[[Path], bool]
    what: str  # one line for messages: what a path of this format looks like


READERS: dict[str, Reader] = {}


def register(name: str, detect: Callable[[Path], bool], what: str) -> Callable[[Any], Any]:
    """Decorator: make `read(path, options) -> Dataset` the reader of format `name`."""
    def wrap(read: Callable[[Path, ReadOptions], Dataset]) -> Callable[[Path, ReadOptions], Dataset]:
        READERS[name] = Reader(name, read, detect, what)
        return read
    return wrap


@dataclass
class Hasher:
    """SHA-256 of the bytes as they are read, so no file is read twice to be hashed."""

    digest: Any = field(default_factory=hashlib.sha256)

    def update(self, data: bytes | memoryview | np.ndarray) -> bytes | memoryview | np.ndarray:
        view = memoryview(np.ascontiguousarray(data)).cast("B") if isinstance(data, np.ndarray) else data
        self.digest.update(view)
        return data

    def hex(self) -> str:
        return self.digest.hexdigest()


def read_labels_file(folder: Path, sha256: dict[str, str]) -> tuple[str, ...] | None:
    """Class names from `labels.txt` beside the data (hashed into sha256["labels"]), or None if absent."""
    path = folder / LABELS_FILE
    if not path.is_file():
        return None
    if path.stat().st_size > MAX_LABELS_BYTES:
        raise DataError(f"{path}: {path.stat().st_size} bytes, more than a class-names file needs "
                        f"({MAX_LABELS_BYTES}); write one class name a line.")
    raw = path.read_bytes()
    sha256["labels"] = hashlib.sha256(raw).hexdigest()
    try:
        names = tuple(line.strip() for line in raw.decode("utf-8").splitlines() if line.strip())
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc}); write one class name a line.") from exc
    if len(set(names)) != len(names):
        raise DataError(f"{path}: a class name appears twice; each line must name a different class.")
    return names


def check_labels(y: np.ndarray, n_classes: int, where: Path, what: str) -> None:
    if y.ndim != 1:
        raise DataError(f"{where}: {what} have shape {y.shape}; labels must be one integer per image (rank 1).")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{where}: {what} are {y.dtype}; labels must be integers 0..{n_classes - 1}.")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
        raise DataError(f"{where}: {what} hold label {bad}, outside 0..{n_classes - 1} "
                        f"({n_classes} classes); fix the labels or the class-names file {LABELS_FILE}.")


def resize_images(x: np.ndarray, size: tuple[int, int], where: Path) -> np.ndarray:
    """Every image to (height, width) with Pillow's bilinear filter: the declared resize of array formats."""
    from PIL import Image

    if x.shape[1:3] == tuple(size):
        return x
    if x.dtype != np.uint8:
        raise DataError(f"{where}: images are {x.dtype}; image_size resizes uint8 images only. "
                        "Store the pixels as uint8, or leave image_size empty.")
    out = np.empty((len(x), *size, *x.shape[3:]), dtype=np.uint8)
    for i, img in enumerate(x):
        out[i] = np.asarray(Image.fromarray(img).resize((size[1], size[0]), Image.Resampling.BILINEAR))
    return out

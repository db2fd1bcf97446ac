"""Datasets: one reader per format, each returning a Dataset (arrays, class names, content hashes).

- idx.py: the four IDX files, gzipped or not (Fashion-MNIST's official hashes checked);
- npz.py: Keras' layout, x_train, y_train, x_test, y_test, read without pickle;
- images.py: one sub-folder per class, under train/ and test/ or with a held-out share;
- splits.py: class selection, stratified hold-outs and subsets, standardisation.

Importing a reader module registers it (base.register); `load_dataset` picks one by name or by
detection.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from include.data import images, npz  # noqa: F401  (importing registers the reader)
from include.data.base import READERS, DataError, Dataset, ReadOptions, resize_images
from include.data.idx import (
    DEBIAN_DIR,
    FILES,
    HOW_TO_PROVIDE,
    KERAS_CACHE_DIR,
    OFFICIAL_SHA256,
    FashionMNIST,
    find_data_dir,
    load_fashion_mnist,
    read_idx,
    write_idx,
)

__all__ = ["DEBIAN_DIR", "FILES", "HOW_TO_PROVIDE", "KERAS_CACHE_DIR", "OFFICIAL_SHA256", "READERS", "DataError",
           "Dataset", "FashionMNIST", "ReadOptions", "detect_format", "find_data_dir", "load_dataset",
           "load_fashion_mnist", "read_idx", "write_idx"]


def detect_format(path: Path) -> str:
    """The first registered format whose detector accepts `path`."""
    if not path.exists():
        raise DataError(f"{path}: data folder does not exist (nor a file of that name). Give an IDX folder, an "
                        f".npz file or an image folder in data_dir. {HOW_TO_PROVIDE}")
    # The image folder's test (any sub-folder) is the loosest: it goes last, after any added format.
    for name in sorted(READERS, key=lambda n: n == "images"):
        if READERS[name].detect(path):
            return name
    kinds = "; ".join(f"{name}: {r.what}" for name, r in READERS.items())
    raise DataError(f"{path}: not a dataset this pipeline can read. It takes {kinds}. "
                    "Set data_format to say which one you meant, for a precise message.")


def load_dataset(path: str | os.PathLike | None, data_format: str = "auto",
                 options: ReadOptions | None = None) -> Dataset:
    """Read the dataset at `path` (None: Fashion-MNIST from the default locations) in `data_format`."""
    options = options or ReadOptions()
    chosen = Path(path).expanduser() if path else None
    if chosen is None and data_format not in ("auto", "idx"):
        raise DataError(f"data_format={data_format!r} needs a data_dir: the path of the data to read.")
    if chosen is None or data_format == "idx":  # the default search and its messages (find_data_dir)
        data_format = "idx"
    elif data_format == "auto":
        data_format = detect_format(chosen)
    if data_format not in READERS:
        raise DataError(f"data_format={data_format!r} is not a known format; use one of {sorted(READERS)}.")
    ds = READERS[data_format].read(chosen, options)  # type: ignore[arg-type]
    return _resized(ds, options.image_size) if options.image_size else ds


def _resized(ds: Dataset, size: tuple[int, int]) -> Dataset:
    """The declared resize for readers that do not resize while reading (the image folder does)."""
    where = Path(ds.source)
    return dataclasses.replace(ds, x_train=resize_images(ds.x_train, size, where),
                               x_test=resize_images(ds.x_test, size, where))

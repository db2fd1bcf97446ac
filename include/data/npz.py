"""The NPZ reader: Keras' own layout, x_train, y_train, x_test, y_test in one .npz file.

Read without pickle (allow_pickle=False) and member by member: each member's header is read first
and refused if it holds objects or declares more than MAX_PAYLOAD bytes, so memory stays bounded by
what the headers declare. Class names come from labels.txt beside the file, else "0", "1", ....
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import BinaryIO

import numpy as np
from numpy.lib import format as npy_format

from include.data.base import (
    MAX_PAYLOAD,
    DataError,
    Dataset,
    Hasher,
    ReadOptions,
    check_labels,
    read_labels_file,
    register,
)

KEYS = ("x_train", "y_train", "x_test", "y_test")
HOW_TO_WRITE = ("Write it with numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...): images "
                "(n, height, width) or (n, height, width, 1 or 3), labels one integer per image.")


def is_npz(path: Path) -> bool:
    return path.is_file() and path.suffix == ".npz"


def _read_member(zf: zipfile.ZipFile, key: str, path: Path, hasher: Hasher, budget: int) -> np.ndarray:
    try:
        fh: BinaryIO = zf.open(f"{key}.npy")  # type: ignore[assignment]
    except KeyError:
        raise DataError(f"{path}: no array named {key!r} (it holds {sorted(zf.namelist())}). {HOW_TO_WRITE}") from None
    with fh:
        try:
            version = npy_format.read_magic(fh)
            header = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}
            if version not in header:
                raise ValueError(f".npy format version {version}, this reader takes 1.0 and 2.0")
            shape, fortran, dtype = header[version](fh)
        except ValueError as exc:
            raise DataError(f"{path}: member {key!r} is not a readable .npy array ({exc}). {HOW_TO_WRITE}") from exc
        if dtype.hasobject:
            raise DataError(f"{path}: {key!r} holds Python objects (dtype {dtype}), which load only by unpickling; "
                            f"refused, as pickled data can run code. {HOW_TO_WRITE}")
        declared = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if declared > budget:
            raise DataError(f"{path}: {key!r} declares shape {shape} of {dtype} ({declared} bytes), more than the "
                            f"{MAX_PAYLOAD} bytes this reader accepts in all; the file is corrupt or too large.")
        hasher.update(f"{key}{shape}{dtype.str}{fortran}".encode())
        out = np.empty(shape, dtype=dtype, order="F" if fortran else "C")
        view = memoryview(out.reshape(-1, order="A")).cast("B") if out.size else memoryview(b"")
        got = fh.readinto(view) if out.size else 0  # type: ignore[attr-defined]
        while out.size and got < declared:
            n = fh.readinto(view[got:])  # type: ignore[attr-defined]
            if not n:
                raise DataError(f"{path}: {key!r} declares {declared} bytes but holds {got}; the file is truncated.")
            got += n
        hasher.update(view)
    return out


@register("npz", detect=is_npz, what="an .npz file with x_train, y_train, x_test, y_test")
def read_npz(path: Path, options: ReadOptions) -> Dataset:
    if not path.is_file():
        raise DataError(f"{path}: file not found. Give the path of an .npz file. {HOW_TO_WRITE}")
    hashers = {key: Hasher() for key in KEYS}
    arrays: dict[str, np.ndarray] = {}
    budget = MAX_PAYLOAD
    try:
        with zipfile.ZipFile(path) as zf:
            for key in KEYS:
                arrays[key] = _read_member(zf, key, path, hashers[key], budget)
                budget -= arrays[key].nbytes
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz (zip) file ({exc.__class__.__name__}: {exc}). "
                        f"{HOW_TO_WRITE}") from exc
    sha256 = {key: h.hex() for key, h in hashers.items()}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[3] not in (1, 3)):
            raise DataError(f"{path}: x_{split} has shape {x.shape}; images must be (n, height, width) or "
                            f"(n, height, width, 1 or 3). {HOW_TO_WRITE}")
        if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
            raise DataError(f"{path}: x_{split} is {x.dtype}; pixels must be integers or floats.")
        if y.ndim != 1 or len(y) != len(x):
            raise DataError(f"{path}: y_{split} has shape {y.shape} for {len(x)} images in x_{split}; give one "
                            "integer label per image (rank 1, same length).")
    if arrays["x_test"].shape[1:] != arrays["x_train"].shape[1:]:
        raise DataError(f"{path}: x_test images have shape {arrays['x_test'].shape[1:]}, x_train images "
                        f"{arrays['x_train'].shape[1:]}; both must have one size.")
    if arrays["x_train"].ndim == 4 and arrays["x_train"].shape[3] == 1:  # grey with a channel axis: drop it
        arrays["x_train"], arrays["x_test"] = arrays["x_train"][..., 0], arrays["x_test"][..., 0]
    top = max(int(arrays[k].max(initial=0)) if np.issubdtype(arrays[k].dtype, np.integer) else 0
              for k in ("y_train", "y_test"))
    names = read_labels_file(path.parent, sha256) or tuple(str(i) for i in range(top + 1))
    for key in ("y_train", "y_test"):
        check_labels(arrays[key], len(names), path, key)
    return Dataset(arrays["x_train"], arrays["y_train"].astype(np.int64), arrays["x_test"],
                   arrays["y_test"].astype(np.int64), str(path), sha256, class_names=names,
                   name=path.stem, format="npz")

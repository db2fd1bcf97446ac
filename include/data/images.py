"""The image-folder reader: one sub-folder per class, under train/ and test/, or directly under the
folder with a declared held-out share (test_share). Class names are the sub-folder names: label i is
line i of labels.txt in the folder when there is one (it must list exactly the sub-folders), else
the i-th name in sorted order. Images are read in file-name order across classes (ties: label
order), so an export that names files by their index keeps the original order.

Two passes. The first opens each file's header only (size and mode, no pixels; Pillow refuses a
decompression bomb here) and sums the declared pixels, refused above MAX_PAYLOAD before any decoding.
The second reads each file once, hashing its bytes as it goes, and decodes it into the one array.
Images must share one size and a grey or RGB mode, unless image_size declares a resize (then each
is resized, and converted to grey if every image is grey, else to RGB).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np

from include.data.base import MAX_PAYLOAD, DataError, Dataset, Hasher, ReadOptions, read_labels_file, register

GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})
TAKEN_MODES = ("L", "RGB")  # decoded as they are; any other mode needs a declared image_size
MAX_FILE_BYTES = 64 << 20  # one image file; a bigger one is not a training image


def is_image_folder(path: Path) -> bool:
    return path.is_dir() and any(p.is_dir() and not p.name.startswith(".") for p in path.iterdir())


def _class_files(root: Path) -> dict[str, list[Path]]:
    """{class name: sorted image files} of root's sub-folders; an empty class folder is an error."""
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{root}: no class sub-folders. Put each class's images in a sub-folder named after it.")
    out = {}
    for folder in classes:
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise DataError(f"{folder}: class folder {folder.name!r} holds no images; add images or remove it.")
        out[folder.name] = files
    return out


def _header(path: Path) -> tuple[tuple[int, int], str]:
    """(height, width) and mode from the file's header; nothing decoded yet."""
    from PIL import Image

    if path.stat().st_size > MAX_FILE_BYTES:
        raise DataError(f"{path}: {path.stat().st_size} bytes, more than {MAX_FILE_BYTES} for one image.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # Pillow's limit, not just a warning
            with Image.open(path) as img:
                return (img.height, img.width), img.mode
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"{path}: refused as a decompression bomb ({exc}). Remove the file or shrink it.") from exc
    except (OSError, SyntaxError, ValueError) as exc:  # UnidentifiedImageError is an OSError
        raise DataError(f"{path}: not a readable image ({exc}). Remove or replace the file.") from exc


def _plan(split: dict[str, list[Path]], options: ReadOptions, where: Path) -> tuple[tuple[int, int], str]:
    """The one (size, mode) of every image: checked, or chosen by the declared resize."""
    seen: dict[tuple[tuple[int, int], str], Path] = {}
    for files in split.values():
        for f in files:
            seen.setdefault(_header(f), f)
    if options.image_size:
        modes = {mode for _, mode in seen}
        return tuple(options.image_size), "L" if modes <= GREY_MODES else "RGB"  # type: ignore[return-value]
    if len(seen) > 1:
        (a, fa), (b, fb) = list(seen.items())[:2]
        raise DataError(f"{where}: images differ in size or mode: {fa} is {a[0][1]}x{a[0][0]} {a[1]}, {fb} is "
                        f"{b[0][1]}x{b[0][0]} {b[1]}. Make them one size and mode, or declare image_size "
                        "[height, width] to resize them all.")
    (size, mode), first = next(iter(seen.items()))
    if mode not in TAKEN_MODES:
        raise DataError(f"{first}: image mode {mode}; this reader takes grey (L) or RGB images as they are. "
                        "Convert them, or declare image_size to convert while resizing.")
    return size, mode


def _decode(path: Path, size: tuple[int, int], mode: str, hasher: Hasher) -> np.ndarray:
    from PIL import Image

    raw = path.read_bytes()
    hasher.update(path.name.encode())
    hasher.update(raw)
    try:
        with Image.open(io.BytesIO(raw)) as img:
            img = img.convert(mode) if img.mode != mode else img
            if (img.height, img.width) != size:
                img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            return np.asarray(img, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as exc:  # a truncated file fails here, at decoding
        raise DataError(f"{path}: not a readable image ({exc}). Remove or replace the file.") from exc


def _read_split(split: dict[str, list[Path]], names: tuple[str, ...], size: tuple[int, int], mode: str,
                hasher: Hasher) -> tuple[np.ndarray, np.ndarray]:
    order = sorted((f.name, names.index(name), f) for name, files in split.items() for f in files)
    x = np.empty((len(order), *size, *(() if mode == "L" else (3,))), dtype=np.uint8)
    y = np.empty(len(order), dtype=np.int64)
    for i, (_, label, f) in enumerate(order):
        hasher.update(f"{label}:".encode())
        x[i], y[i] = _decode(f, size, mode, hasher), label
    return x, y


def _class_order(path: Path, found: tuple[str, ...], sha256: dict[str, str]) -> tuple[str, ...]:
    names = read_labels_file(path, sha256)
    if names is None:
        return found
    if sorted(names) != sorted(found):
        raise DataError(f"{path / 'labels.txt'}: lists {list(names)} but the class folders are {list(found)}; "
                        "list each class folder once, in label order, or remove the file.")
    return names


def _check_budget(splits: list[dict[str, list[Path]]], size: tuple[int, int], mode: str, where: Path) -> None:
    n = sum(len(files) for split in splits for files in split.values())
    declared = n * size[0] * size[1] * (1 if mode == "L" else 3)
    if declared > MAX_PAYLOAD:
        raise DataError(f"{where}: {n} images of {size[1]}x{size[0]} {mode} are {declared} bytes of pixels, more "
                        f"than the {MAX_PAYLOAD} this reader holds in memory; use fewer or smaller images.")


def _held_out(y: np.ndarray, share: float, random_state: int, names: tuple[str, ...], where: Path) -> tuple:
    from sklearn.model_selection import train_test_split

    counts = np.bincount(y, minlength=len(names))
    if counts.min() < 2:
        raise DataError(f"{where}: class {names[int(counts.argmin())]!r} has {int(counts.min())} image(s); "
                        f"holding out test_share={share} per class needs at least 2 in every class.")
    try:
        return train_test_split(np.arange(len(y)), test_size=share, random_state=random_state, stratify=y)
    except ValueError as exc:
        raise DataError(f"{where}: test_share={share} cannot hold out a stratified test set ({exc}). "
                        "Use a share that leaves at least one image of each class on each side.") from exc


@register("images", detect=is_image_folder,
          what="a folder of class sub-folders of images (under train/ and test/, or with test_share)")
def read_image_folder(path: Path, options: ReadOptions) -> Dataset:
    if not path.is_dir():
        raise DataError(f"{path}: folder not found. Give a folder of class sub-folders of images.")
    has_splits = (path / "train").is_dir() and (path / "test").is_dir()
    if not has_splits and options.test_share is None:
        raise DataError(f"{path}: no train/ and test/ sub-folders and no test_share. Split the images into "
                        "train/<class>/ and test/<class>/, or set test_share (e.g. 0.2) to hold out a share.")
    parts = [_class_files(path / "train"), _class_files(path / "test")] if has_splits else [_class_files(path)]
    if has_splits and list(parts[1]) != list(parts[0]):
        raise DataError(f"{path}: train/ has classes {list(parts[0])} but test/ has {list(parts[1])}; both "
                        "need the same class folders.")
    sha256: dict[str, str] = {}
    names = _class_order(path, tuple(parts[0]), sha256)
    size, mode = _plan({f"{i}:{k}": v for i, p in enumerate(parts) for k, v in p.items()}, options, path)
    _check_budget(parts, size, mode, path)
    hashers = {"train": Hasher(), "test": Hasher()} if has_splits else {"images": Hasher()}
    read = [_read_split(p, names, size, mode, h) for p, h in zip(parts, hashers.values(), strict=True)]
    if has_splits:
        (x_train, y_train), (x_test, y_test) = read
    else:
        x, y = read[0]
        tr, te = _held_out(y, options.test_share, options.random_state, names, path)  # type: ignore[arg-type]
        x_train, y_train, x_test, y_test = x[tr], y[tr], x[te], y[te]
    sha256.update({k: h.hex() for k, h in hashers.items()})
    return Dataset(x_train, y_train, x_test, y_test, str(path), sha256, class_names=names, name=path.name,
                   format="images")

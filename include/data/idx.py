"""The IDX reader: finding, reading and verifying the four IDX files, gzipped or not.

IDX format (http://yann.lecun.com/exdb/mnist/): a big-endian header of two zero bytes, a type
byte (0x08 = uint8), a dimension count, then one uint32 per dimension, then the data.
The known Fashion-MNIST files are checked against their official SHA-256 values; other IDX data
(MNIST, say) turns verify_checksums off and names its classes in labels.txt beside the files.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import math
import os
import zlib
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from include.data.base import MAX_PAYLOAD, DataError, Dataset, ReadOptions, read_labels_file, register
from include.settings import CLASS_NAMES

log = logging.getLogger(__name__)

FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}

# SHA-256 of the *decompressed* content. Gzip bytes differ between the upstream release and the
# Debian package (different compressor settings), the content does not.
OFFICIAL_SHA256: dict[str, str] = {
    "train_images": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train_labels": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "test_images": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "test_labels": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
KERAS_CACHE_DIR = Path.home() / ".keras" / "datasets" / "fashion-mnist"
IMAGE_MAGIC = 0x00000803  # uint8, 3 dimensions
LABEL_MAGIC = 0x00000801  # uint8, 1 dimension
IMAGE_SHAPE = (28, 28)
# A header declaring more is corrupt or hostile; refusing it up front bounds the reader's memory.
MAX_IDX_PAYLOAD = MAX_PAYLOAD
READ_CHUNK = 1 << 20  # decompress and hash 1 MiB at a time: no copy of the whole file in memory

HOW_TO_PROVIDE = (
    "Provide the four Fashion-MNIST files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
    "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) in one of three ways: "
    "(1) name their folder with the data_dir param or the TL_DATA_DIR environment variable; "
    "(2) on Debian/Ubuntu run `sudo apt-get install dataset-fashion-mnist` "
    f"(installs to {DEBIAN_DIR}); "
    "(3) let Keras download them once, when online: "
    "`python -c 'import keras; keras.datasets.fashion_mnist.load_data()'` "
    f"(caches to {KERAS_CACHE_DIR})."
)


FashionMNIST = Dataset  # the name callers used before the readers were grouped


def _bad(path: Path, what: str) -> DataError:
    return DataError(f"{path}: {what}. {HOW_TO_PROVIDE}")


def _read_exact(fh: BinaryIO, n: int) -> bytes:
    """Up to n bytes (fewer only at the end of the stream): gzip's read() may return short chunks."""
    parts, got = [], 0
    while got < n:
        part = fh.read(n - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def _read_header(path: Path, fh: BinaryIO, expected_magic: int | None) -> tuple[bytes, tuple[int, ...]]:
    head = _read_exact(fh, 4)
    if len(head) < 4:
        raise _bad(path, f"IDX header is truncated ({len(head)} bytes)")
    magic = int.from_bytes(head, "big")
    if head[:2] != b"\x00\x00" or head[2] != 0x08:
        raise _bad(path, f"wrong IDX magic number 0x{magic:08x} (expected 0x0000080N for uint8 data)")
    if expected_magic is not None and magic != expected_magic:
        raise _bad(path, f"wrong IDX magic number 0x{magic:08x}, expected 0x{expected_magic:08x}")
    raw_dims = _read_exact(fh, 4 * head[3])
    if len(raw_dims) < 4 * head[3]:
        raise _bad(path, "IDX header is truncated")
    dims = tuple(int.from_bytes(raw_dims[i:i + 4], "big") for i in range(0, len(raw_dims), 4))
    return head + raw_dims, dims


def _open(path: Path) -> BinaryIO:
    """gzip.open for a .gz name, a plain binary file otherwise: both stream and read the same."""
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # type: ignore[return-value]


def read_idx(path: Path | str, expected_magic: int | None = None) -> tuple[np.ndarray, str]:
    """Read one IDX file, gzipped or not; return the array and the SHA-256 of its decompressed content.

    Streams: memory is bounded by the size the header declares (refused above MAX_IDX_PAYLOAD), not
    by what the gzip stream expands to. It decompresses the declared payload plus one byte, which
    tells a file with trailing data (e.g. a decompression bomb behind a valid header) from a good one.
    """
    path = Path(path)
    if not path.is_file():
        raise _bad(path, "file not found")
    if path.stat().st_size == 0:
        raise _bad(path, "file is empty")
    try:
        with _open(path) as fh:
            header, dims = _read_header(path, fh, expected_magic)
            declared = math.prod(dims) if dims else 0
            if declared > MAX_IDX_PAYLOAD:
                raise _bad(path, f"IDX header declares shape {dims} ({declared} bytes of data), more than the "
                                 f"{MAX_IDX_PAYLOAD} bytes this reader accepts; the file is corrupt or not "
                                 "Fashion-MNIST")
            digest = hashlib.sha256(header)
            payload = np.empty(declared, dtype=np.uint8)
            got = _read_payload(fh, memoryview(payload), digest)
            if got < declared:
                raise _bad(path, f"IDX header declares shape {dims} ({declared} bytes of data) but the file holds "
                                 f"{got} bytes; the file is truncated or corrupt")
            if fh.read(1):
                raise _bad(path, f"IDX header declares shape {dims} ({declared} bytes of data) but the file holds "
                                 "more data after it; the file is corrupt (or a decompression bomb) and was not "
                                 "read further")
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise _bad(path, f"not a readable gzip file ({exc.__class__.__name__}: {exc}); "
                         "it is truncated or corrupt") from exc
    return payload.reshape(dims), digest.hexdigest()


def _read_payload(fh: BinaryIO, out: memoryview, digest: Any) -> int:
    """Decompress into `out` chunk by chunk, hashing each chunk; return the bytes read (short at EOF)."""
    got = 0
    while got < len(out):
        n = fh.readinto(out[got:got + READ_CHUNK])
        if not n:
            break
        digest.update(out[got:got + n])
        got += n
    return got


def candidate_dirs(explicit: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """The search order. An explicit folder (param, then TL_DATA_DIR) wins and is not second-guessed."""
    chosen = explicit or os.environ.get("TL_DATA_DIR") or None
    if chosen:
        return [("explicit folder", Path(chosen).expanduser())]
    return [("Debian package", DEBIAN_DIR), ("Keras cache", KERAS_CACHE_DIR)]


def file_for(folder: Path, key: str) -> Path:
    """The file of `key` in folder: the .gz name, else the same name un-gzipped, else the .gz name."""
    gz = folder / FILES[key]
    plain = gz.with_suffix("")
    return plain if not gz.is_file() and plain.is_file() else gz


def _complete(folder: Path) -> bool:
    return all(file_for(folder, key).is_file() for key in FILES)


def is_idx_folder(path: Path) -> bool:
    """Any one of the four files marks an IDX folder: reading it then names a missing one precisely."""
    return path.is_dir() and any(file_for(path, key).is_file() for key in FILES)


def find_data_dir(explicit: str | os.PathLike | None = None, allow_download: bool = True) -> Path:
    dirs = candidate_dirs(explicit)
    if len(dirs) == 1:  # explicit: fail fast with the exact problem, never fall back silently
        folder = dirs[0][1]
        if not folder.is_dir():
            raise DataError(f"{folder}: data folder does not exist. {HOW_TO_PROVIDE}")
        for key in FILES:
            if not file_for(folder, key).is_file():
                raise _bad(folder / FILES[key], "file not found in the data folder")
        return folder
    for _, folder in dirs:
        if _complete(folder):
            return folder
    if allow_download:
        try:
            import keras

            log.info("Fashion-MNIST not found locally; trying a Keras download into %s", KERAS_CACHE_DIR)
            keras.datasets.fashion_mnist.load_data()
        except Exception as exc:  # offline, DNS failure, proxy...: report it with the alternatives
            raise DataError(
                f"Fashion-MNIST not found in {[str(d) for _, d in dirs]} and the Keras download failed "
                f"({exc.__class__.__name__}: {exc}). {HOW_TO_PROVIDE}"
            ) from exc
        if _complete(KERAS_CACHE_DIR):
            return KERAS_CACHE_DIR
    raise DataError(f"Fashion-MNIST not found in {[str(d) for _, d in dirs]}. {HOW_TO_PROVIDE}")


def load_fashion_mnist(data_dir: str | os.PathLike | None = None, verify_checksums: bool = True,
                       allow_download: bool = True) -> Dataset:
    return read_idx_folder(Path(data_dir) if data_dir else None,
                           ReadOptions(verify_checksums=verify_checksums, allow_download=allow_download))


@register("idx", detect=is_idx_folder, what="a folder with the four IDX files (train-images-idx3-ubyte[.gz], ...)")
def read_idx_folder(path: Path | None, options: ReadOptions) -> Dataset:
    """The four IDX files of `path` (None: the default search). Class names: labels.txt beside them,
    else Fashion-MNIST's."""
    folder = find_data_dir(path, allow_download=options.allow_download)
    arrays: dict[str, np.ndarray] = {}
    hashes: dict[str, str] = {}
    for key in FILES:
        magic = IMAGE_MAGIC if key.endswith("images") else LABEL_MAGIC
        arrays[key], hashes[key] = read_idx(file_for(folder, key), magic)
        if options.verify_checksums and hashes[key] != OFFICIAL_SHA256[key]:
            raise _bad(file_for(folder, key), f"content SHA-256 {hashes[key][:16]}... does not match the official "
                                              f"Fashion-MNIST value {OFFICIAL_SHA256[key][:16]}...; the file is "
                                              "corrupt or not Fashion-MNIST (other IDX data: set verify_checksums "
                                              "off and name its classes in labels.txt)")
    official = hashes == OFFICIAL_SHA256
    names = read_labels_file(folder, hashes) or CLASS_NAMES
    shape = arrays["train_images"].shape[1:]
    for split in ("train", "test"):
        x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        xf, yf = file_for(folder, f"{split}_images"), file_for(folder, f"{split}_labels")
        if x.ndim != 3 or x.shape[1:] != shape or (official and shape != IMAGE_SHAPE):
            raise _bad(xf, f"images have shape {x.shape[1:]}, expected {shape if x.ndim == 3 else IMAGE_SHAPE}")
        if y.ndim != 1 or len(y) != len(x):
            raise _bad(yf, f"{len(y)} labels for {len(x)} images in {xf.name}; image and label counts must match")
        if len(y) and int(y.max()) >= len(names):
            raise _bad(yf, f"label {int(y.max())} is outside 0..{len(names) - 1}")
    log.info("Loaded IDX data from %s: %d train, %d test images", folder,
             len(arrays["train_labels"]), len(arrays["test_labels"]))
    return Dataset(arrays["train_images"], arrays["train_labels"], arrays["test_images"], arrays["test_labels"],
                   str(folder), hashes, class_names=tuple(names),
                   name="Fashion-MNIST" if official else folder.name, format="idx")


def write_idx(path: Path | str, array: np.ndarray) -> None:
    """Write a uint8 array as a gzipped IDX file (for synthetic test data and fixtures)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.tobytes())

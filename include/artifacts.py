"""The artifact store: run-scoped folders under one root, atomic writes, safe model loading."""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent


class ArtifactError(OSError):
    """The artifact root cannot be used (missing permissions, full disk, bad path)."""


class BadArtifactError(ArtifactError):
    """An upstream artifact is missing, corrupt or unsafe: retrying this task cannot fix it."""


# Write errors no retry fixes: full disk or quota, no permission, read-only or non-folder path.
PERMANENT_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EPERM, errno.EROFS,
                          errno.ENOTDIR}


def artifact_root() -> Path:
    """TL_ARTIFACT_ROOT, else the repository folder (models/, reports/, data/ live under it)."""
    return Path(os.environ.get("TL_ARTIFACT_ROOT") or REPO_ROOT).expanduser().resolve()


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_UMASK_LOCK = threading.Lock()
# Names the store itself uses next to the run folders: a run must never be filed under them.
_RESERVED = {"champion", "history.jsonl", "history.jsonl.lock", "splits"}


def safe_run_id(run_id: str) -> str:
    """A file-name-safe folder name for an Airflow run_id; distinct run ids stay distinct."""
    if not run_id:
        raise ValueError("run_id is empty")
    cleaned = _UNSAFE.sub("_", run_id).strip("._-")[:100] or "run"
    if cleaned != run_id or cleaned.lower() in _RESERVED:  # hash keeps cleaned-alike ids and reserved names apart
        cleaned = f"{cleaned}-{hashlib.sha256(run_id.encode()).hexdigest()[:8]}"
    return cleaned


@dataclass(frozen=True)
class RunPaths:
    root: Path
    run: str

    @classmethod
    def for_run(cls, run_id: str, root: Path | None = None) -> RunPaths:
        return cls(root=(root or artifact_root()), run=safe_run_id(run_id))

    @property
    def models(self) -> Path:
        return self.root / "models" / self.run

    @property
    def reports(self) -> Path:
        return self.root / "reports" / self.run

    @property
    def data(self) -> Path:
        return self.root / "data" / self.run

    @property
    def split_store(self) -> Path:
        """Split arrays stored once per content (data hashes + split settings + split code version),
        shared read-only by every run: data/splits/<key>/."""
        return self.root / "data" / "splits"

    @property
    def reports_root(self) -> Path:
        return self.root / "reports"

    @property
    def champion(self) -> Path:
        return self.root / "models" / "champion"

    def ensure(self, *folders: Path) -> None:
        for folder in folders or (self.models, self.reports, self.data):
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ArtifactError(
                    f"Cannot create {folder} ({exc.strerror}). Set TL_ARTIFACT_ROOT to a writable folder "
                    f"with free space (now {self.root})."
                ) from exc


def current_umask() -> int:
    """The process's umask. Reading it means setting it and setting it back (`os` has no getter): the
    lock keeps two threads that save at once from restoring each other's temporary value."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _remove_stale_temps(final: Path) -> None:
    """Delete temp files a killed earlier writer of `final` left behind.

    Safe because each final path has one writer at a time: a task try owns its run-scoped files,
    and the shared ones (history, champion) are written under their flock.
    """
    for stale in final.parent.glob(f".{glob.escape(final.name)}.*.tmp*"):
        stale.unlink(missing_ok=True)


@contextmanager
def atomic_path(final: Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to `final`; on success move it into place with os.replace.

    A crash leaves the old file (or none), never half of a new one; the temp file is removed on
    failure. `suffix` keeps extensions that writers insist on (Keras wants `.keras`).
    """
    final = Path(final)

    def permanent(exc: OSError) -> ArtifactError:
        return ArtifactError(f"Cannot write {final} ({exc.strerror or exc}). Free space or choose a writable "
                             f"TL_ARTIFACT_ROOT.")

    try:  # creating the folder or the temp file fails first on a read-only or full file system
        final.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(final)
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f".tmp{suffix}", dir=final.parent)
    except OSError as exc:
        if exc.errno in PERMANENT_WRITE_ERRNOS:
            raise permanent(exc) from exc
        raise
    # mkstemp makes 0600 files; published artifacts get the usual umask-based mode so that the
    # api-server or a worker running as another user can read them.
    os.fchmod(fd, 0o666 & ~current_umask())
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, final)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        if exc.errno in PERMANENT_WRITE_ERRNOS and not isinstance(exc, ArtifactError):
            raise permanent(exc) from exc
        raise
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_bytes(path: Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def read_json(path: Path | str) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def save_npy(path: Path, array: Any) -> Path:
    import numpy as np

    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, array, allow_pickle=False)
    return Path(path)


def load_npy(path: Path | str, mmap: bool = True) -> Any:
    import numpy as np

    return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)


def save_model(model: Any, path: Path) -> Path:
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
    return Path(path)


def load_model(path: Path | str) -> Any:
    """Load a .keras file with safe_mode on: Lambda layers and other arbitrary code are refused."""
    import zipfile

    import keras

    path = Path(path)
    rerun = "Clear and re-run the upstream task that writes it."
    if not path.is_file():
        raise BadArtifactError(f"{path}: model file not found. {rerun}")
    # Keras reports a damaged archive as "File not found"; say what is really wrong.
    try:
        with zipfile.ZipFile(path) as zf:
            damaged = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise BadArtifactError(f"{path}: model file is corrupt or truncated ({exc}). {rerun}") from exc
    if damaged is not None:
        raise BadArtifactError(f"{path}: model file is corrupt (bad CRC in {damaged}). {rerun}")
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:
        if "safe_mode" in str(exc):  # Keras refuses Lambda layers and other embedded code
            raise BadArtifactError(f"{path}: refused to load: the file carries Python code (e.g. a Lambda "
                                   f"layer), which Keras safe mode does not run. Only load models this pipeline "
                                   f"trained; {rerun} ({exc})") from exc
        raise BadArtifactError(f"{path}: cannot load the model ({exc.__class__.__name__}: {exc}). The file is "
                               f"corrupt or not a model of this pipeline. {rerun}") from exc

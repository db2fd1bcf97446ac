"""Content-addressed folders shared by runs: built under a temporary name, published read-only by rename."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from include.artifacts import PERMANENT_WRITE_ERRNOS, ArtifactError, current_umask


def publish_dir(final: Path, build: Callable[[Path], None]) -> bool:
    """Build a folder under a temporary name next to `final`, make its files read-only, rename it into
    place. Returns False when another writer published `final` first (ours is then discarded).

    rename(2) of a folder onto an existing non-empty one fails, so concurrent builders of the same
    content are safe: readers only ever see a whole folder, and the first one to finish wins.
    """
    final = Path(final)

    def permanent(exc: OSError) -> ArtifactError:
        return ArtifactError(f"Cannot write {final} ({exc.strerror or exc}). Free space or choose a writable "
                             f"TL_ARTIFACT_ROOT.")

    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    except OSError as exc:
        if exc.errno in PERMANENT_WRITE_ERRNOS:
            raise permanent(exc) from exc
        raise
    try:
        build(tmp)
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
                f.chmod(0o444)  # shared by runs: nobody writes into a published folder
        os.chmod(tmp, 0o755 & ~current_umask())
        try:
            os.rename(tmp, final)
            return True
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):  # another writer won the race
                shutil.rmtree(tmp, ignore_errors=True)
                return False
            raise
    except OSError as exc:  # a full disk while building: nothing stays behind, and no retry helps
        shutil.rmtree(tmp, ignore_errors=True)
        if exc.errno in PERMANENT_WRITE_ERRNOS and not isinstance(exc, ArtifactError):
            raise permanent(exc) from exc
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

"""Memory is bounded by what an IDX header declares, not by what its gzip stream expands to.

A decompression bomb: a valid Fashion-MNIST-sized header and payload, then 2 GiB of zeros, in a
~2 MB gzip file. The reader runs in a fresh interpreter started by a small launcher: Linux carries a
parent's peak RSS into a forked child's ru_maxrss, so the launcher (no numpy, ~10 MiB) reads the
reader's peak from RUSAGE_CHILDREN instead of pytest's own hundreds of MiB leaking in. Reading the
whole stream (the reader before streaming) peaks above 2 GiB.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from tests.reliability.helpers import python

pytestmark = pytest.mark.unit

DECLARED_SHAPE = (60000, 28, 28)  # the real training-images file: 47,040,000 bytes of pixels
TRAILING = 2 << 30  # 2 GiB of zeros after the declared payload
MEMBER = 64 << 20  # written as gzip members of 64 MiB each
MiB = 1 << 20

READER = r"""
import json, sys
import psutil
from include.data import DataError, read_idx
before = psutil.Process().memory_info().rss
try:
    read_idx(sys.argv[1])
    error = None
except DataError as exc:
    error = str(exc)
print(json.dumps({"error": error, "rss_before": before}), flush=True)
"""

LAUNCHER = r"""
import json, resource, subprocess, sys
out = subprocess.run([sys.executable, "-c", sys.argv[1], sys.argv[2]], capture_output=True, text=True)
assert out.returncode == 0, out.stderr[-3000:]
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux
print("RESULT " + json.dumps({**json.loads(out.stdout.splitlines()[-1]), "peak_rss": peak}), flush=True)
"""


def write_bomb(path: Path, shape: tuple[int, ...], trailing_bytes: int) -> tuple[int, bytes]:
    """A valid gzipped IDX file, then `trailing_bytes` of zeros; returns (declared size, zeros member).

    The zeros go in as repeated gzip members (a multi-member file is one stream to every gzip reader):
    one 64 MiB compression, not 2 GiB of work or memory.
    """
    declared = 1
    for d in shape:
        declared *= d
    header = bytes([0, 0, 0x08, len(shape)]) + b"".join(d.to_bytes(4, "big") for d in shape)
    zeros = gzip.compress(bytes(MEMBER), compresslevel=9)
    with open(path, "wb") as fh:
        fh.write(gzip.compress(header + bytes(declared), compresslevel=9))
        for _ in range(trailing_bytes // MEMBER):
            fh.write(zeros)
    return declared, zeros


def test_decompression_bomb_is_refused_within_the_declared_memory(tmp_path):
    bomb = tmp_path / "train-images-idx3-ubyte.gz"
    declared, zeros = write_bomb(bomb, DECLARED_SHAPE, TRAILING)
    size = bomb.stat().st_size
    assert size < 4 * MiB  # small on disk, and it really expands: its last 32 members are 64 MiB of zeros each
    assert bomb.read_bytes()[-len(zeros) * (TRAILING // MEMBER):] == zeros * (TRAILING // MEMBER)
    assert gzip.decompress(zeros) == bytes(MEMBER)

    res = python(LAUNCHER, READER, str(bomb))
    assert res["error"] is not None, "the bomb was accepted"
    assert str(bomb) in res["error"] and "more data after it" in res["error"]
    assert "declares shape (60000, 28, 28) (47040000 bytes of data)" in res["error"]
    # The interpreter with numpy loaded, plus the declared payload, plus 16 MiB of slack (gzip buffers,
    # allocator). Reading the whole stream would need over 2 GiB.
    bound = res["rss_before"] + declared + 16 * MiB
    print(f"\nbomb: {size} bytes of gzip, declared payload {declared} bytes, {TRAILING >> 30} GiB of zeros after "
          f"it; peak RSS {res['peak_rss'] / MiB:.1f} MiB, bound {bound / MiB:.1f} MiB "
          f"(RSS before the read {res['rss_before'] / MiB:.1f} MiB)")
    assert res["peak_rss"] < bound

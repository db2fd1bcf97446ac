"""IDX parsing and data discovery on good and bad files."""

import gzip

import numpy as np
import pytest

from include.data import DataError, read_idx, write_idx
from include.data import idx as data
from tests.synthetic import write_tiny_fashion_mnist


def test_roundtrip_reads_what_was_written(tmp_path):
    arr = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    write_idx(tmp_path / "x.gz", arr)
    out, digest = read_idx(tmp_path / "x.gz", data.IMAGE_MAGIC)
    assert out.shape == (2, 28, 28) and np.array_equal(out, arr)
    import hashlib
    assert digest == hashlib.sha256(gzip.decompress((tmp_path / "x.gz").read_bytes())).hexdigest()


def test_truncated_file_names_file_and_fixes(tmp_path):
    p = tmp_path / "train-images-idx3-ubyte.gz"
    write_idx(p, np.zeros((5, 28, 28), np.uint8))
    raw = gzip.decompress(p.read_bytes())
    p.write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(DataError) as err:
        read_idx(p)
    msg = str(err.value)
    assert str(p) in msg and "truncated" in msg and "TL_DATA_DIR" in msg and "dataset-fashion-mnist" in msg


def test_truncated_gzip_stream(tmp_path):
    p = tmp_path / "labels.gz"
    write_idx(p, np.zeros(1000, np.uint8))
    p.write_bytes(p.read_bytes()[:20])
    with pytest.raises(DataError, match="gzip"):
        read_idx(p)


def test_wrong_magic(tmp_path):
    p = tmp_path / "labels.gz"
    write_idx(p, np.zeros(10, np.uint8))  # 0x801
    with pytest.raises(DataError, match="magic"):
        read_idx(p, data.IMAGE_MAGIC)
    p.write_bytes(gzip.compress(b"\x12\x34\x08\x01" + (10).to_bytes(4, "big") + bytes(10)))
    with pytest.raises(DataError, match="magic"):
        read_idx(p)


def test_count_mismatch_between_images_and_labels(tmp_path):
    folder = write_tiny_fashion_mnist(tmp_path)
    write_idx(folder / data.FILES["train_labels"], np.zeros(7, np.uint8))
    with pytest.raises(DataError, match="image and label counts must match"):
        data.load_fashion_mnist(folder, verify_checksums=False)


def test_wrong_image_size(tmp_path):
    folder = write_tiny_fashion_mnist(tmp_path)
    write_idx(folder / data.FILES["test_images"], np.zeros((100, 32, 32), np.uint8))
    with pytest.raises(DataError, match=r"expected \(28, 28\)"):
        data.load_fashion_mnist(folder, verify_checksums=False)


def test_checksum_mismatch_is_refused_for_synthetic_data(tmp_path):
    folder = write_tiny_fashion_mnist(tmp_path)
    with pytest.raises(DataError, match="does not match the official"):
        data.load_fashion_mnist(folder, verify_checksums=True)


def test_explicit_folder_missing_does_not_fall_back(tmp_path, monkeypatch):
    monkeypatch.delenv("TL_DATA_DIR", raising=False)
    with pytest.raises(DataError, match="does not exist") as err:
        data.find_data_dir(tmp_path / "nope")
    assert "apt-get install dataset-fashion-mnist" in str(err.value)


def test_env_var_is_used(tmp_path, monkeypatch):
    folder = write_tiny_fashion_mnist(tmp_path)
    monkeypatch.setenv("TL_DATA_DIR", str(folder))
    assert data.find_data_dir(None) == folder
    ds = data.load_fashion_mnist(None, verify_checksums=False)
    assert ds.x_train.shape == (400, 28, 28) and ds.y_test.shape == (100,)


def test_nothing_found_offline_lists_the_three_ways(tmp_path, monkeypatch):
    monkeypatch.delenv("TL_DATA_DIR", raising=False)
    monkeypatch.setattr(data, "DEBIAN_DIR", tmp_path / "a")
    monkeypatch.setattr(data, "KERAS_CACHE_DIR", tmp_path / "b")
    with pytest.raises(DataError) as err:
        data.find_data_dir(None, allow_download=False)
    msg = str(err.value)
    assert "data_dir" in msg and "apt-get" in msg and "keras.datasets.fashion_mnist" in msg


@pytest.mark.realdata
def test_real_files_match_official_hashes():
    ds = data.load_fashion_mnist(data.DEBIAN_DIR, verify_checksums=True)
    assert ds.x_train.shape == (60000, 28, 28) and ds.x_test.shape == (10000, 28, 28)
    assert np.bincount(ds.y_train).tolist() == [6000] * 10
    assert ds.sha256 == data.OFFICIAL_SHA256


def test_trailing_data_after_the_declared_payload_is_refused(tmp_path):
    p = tmp_path / "labels.gz"
    p.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + (10).to_bytes(4, "big") + bytes(11)))
    with pytest.raises(DataError, match=r"declares shape \(10,\) \(10 bytes of data\).*more data after it") as err:
        read_idx(p)
    assert str(p) in str(err.value)


def test_header_declaring_more_than_the_limit_is_refused_before_reading(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "MAX_IDX_PAYLOAD", 1000)
    p = tmp_path / "images.gz"
    write_idx(p, np.zeros((2, 28, 28), np.uint8))  # 1568 bytes
    with pytest.raises(DataError, match=r"declares shape \(2, 28, 28\) \(1568 bytes of data\), more than the 1000"):
        read_idx(p)


def test_streaming_reader_spans_chunks_and_gzip_members(tmp_path, monkeypatch):
    """Several read chunks and a file of two gzip members (as `cat a.gz b.gz` makes) read as one stream."""
    monkeypatch.setattr(data, "READ_CHUNK", 100)
    arr = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    raw = bytes([0, 0, 8, 3]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape) + arr.tobytes()
    p = tmp_path / "x.gz"
    p.write_bytes(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]))
    out, digest = read_idx(p, data.IMAGE_MAGIC)
    import hashlib
    assert np.array_equal(out, arr) and digest == hashlib.sha256(raw).hexdigest()

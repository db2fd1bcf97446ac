"""The dataset readers (include/data): IDX gzipped or not, NPZ, image folders, and the format registry,
on tiny synthetic files written to tmp_path."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from include.data import FILES, READERS, DataError, Dataset, ReadOptions, base, detect_format, load_dataset, npz
from include.data import images as images_reader
from include.settings import CLASS_NAMES
from tests.synthetic import (
    png_bomb,
    tiny_arrays,
    write_tiny_fashion_mnist,
    write_tiny_image_folder,
    write_tiny_npz,
)

pytestmark = pytest.mark.unit
UNCHECKED = ReadOptions(verify_checksums=False)
ARRAYS = ("x_train", "y_train", "x_test", "y_test")


def _same_arrays(ds: Dataset, ref: dict[str, np.ndarray]) -> bool:
    return all(np.array_equal(getattr(ds, k), ref[k]) for k in ARRAYS)


# -- IDX -------------------------------------------------------------------------------------------
def test_idx_gzipped_and_plain_give_the_same_arrays_and_hashes(tmp_path):
    gz = write_tiny_fashion_mnist(tmp_path / "gz")
    plain = tmp_path / "plain"
    plain.mkdir()
    for name in FILES.values():
        (plain / name.removesuffix(".gz")).write_bytes(gzip.decompress((gz / name).read_bytes()))
    a, b = load_dataset(gz, options=UNCHECKED), load_dataset(plain, options=UNCHECKED)
    assert detect_format(plain) == "idx" and b.format == "idx"
    assert _same_arrays(b, tiny_arrays()) and a.sha256 == b.sha256
    assert a.class_names == CLASS_NAMES and a.input_shape == (28, 28)


def test_idx_class_names_from_labels_file_join_the_hashes(tmp_path):
    folder = write_tiny_fashion_mnist(tmp_path / "idx")
    (folder / "labels.txt").write_text("".join(f"c{i}\n" for i in range(10)))
    ds = load_dataset(folder, options=UNCHECKED)
    assert ds.class_names == tuple(f"c{i}" for i in range(10)) and "labels" in ds.sha256
    (folder / "labels.txt").write_text("".join(f"c{i}\n" for i in range(9)))  # label 9 left unnamed
    with pytest.raises(DataError, match=r"label 9 is outside 0\.\.8"):
        load_dataset(folder, options=UNCHECKED)


# -- NPZ -------------------------------------------------------------------------------------------
def test_npz_round_trip_with_numeric_names_and_content_hashes(tmp_path):
    path = write_tiny_npz(tmp_path / "d" / "tiny.npz")
    ds = load_dataset(path)
    assert detect_format(path) == "npz" and ds.format == "npz" and ds.name == "tiny"
    assert _same_arrays(ds, tiny_arrays()) and ds.class_names == tuple(str(i) for i in range(10))
    assert set(ds.sha256) == set(ARRAYS)
    x = tiny_arrays()["x_test"]
    x[0, 0, 0] ^= 1
    changed = load_dataset(write_tiny_npz(tmp_path / "e" / "tiny.npz", x_test=x))
    assert changed.sha256["x_test"] != ds.sha256["x_test"] and changed.sha256["x_train"] == ds.sha256["x_train"]


def test_npz_labels_file_names_classes_and_channel_axis_is_dropped(tmp_path):
    a = tiny_arrays()
    path = write_tiny_npz(tmp_path / "tiny.npz", names=[f"n{i}" for i in range(10)],
                          x_train=a["x_train"][..., None], x_test=a["x_test"][..., None])
    ds = load_dataset(path)
    assert ds.class_names[3] == "n3" and ds.input_shape == (28, 28) and "labels" in ds.sha256


def test_npz_rgb_float_pixels_are_kept(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((6, 5, 4, 3)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2])
    ds = load_dataset(write_tiny_npz(tmp_path / "rgb.npz", x_train=x, y_train=y, x_test=x, y_test=y))
    assert ds.input_shape == (5, 4, 3) and ds.x_train.dtype == np.float32 and ds.class_names == ("0", "1", "2")


@pytest.mark.parametrize("arrays, match", [
    ({"x_train": np.zeros((400, 784), np.uint8)}, r"x_train has shape \(400, 784\); images must be"),
    ({"x_test": np.zeros((100, 28, 28, 2), np.uint8)}, r"x_test has shape \(100, 28, 28, 2\)"),
    ({"y_train": np.zeros(399, np.uint8)}, r"y_train has shape \(399,\) for 400 images"),
    ({"y_test": np.zeros((100, 1), np.uint8)}, r"y_test has shape \(100, 1\)"),
    ({"y_train": np.full(400, -1)}, r"y_train hold label -1, outside 0\.\.9"),
    ({"y_train": np.zeros(400, np.float32)}, r"y_train are float32; labels must be integers"),
    ({"x_test": np.zeros((100, 27, 27), np.uint8)}, r"x_test images have shape \(27, 27\)"),
])
def test_npz_wrong_rank_length_or_labels_are_named(tmp_path, arrays, match):
    with pytest.raises(DataError, match=match):
        load_dataset(write_tiny_npz(tmp_path / "bad.npz", **arrays))


def test_npz_label_beyond_the_labels_file_is_out_of_range(tmp_path):
    y = tiny_arrays()["y_train"].astype(np.int64)
    y[0] = 12
    with pytest.raises(DataError, match=r"y_train hold label 12, outside 0\.\.9.*labels\.txt"):
        load_dataset(write_tiny_npz(tmp_path / "bad.npz", names=[str(i) for i in range(10)], y_train=y))


def test_npz_object_arrays_are_refused_without_unpickling(tmp_path):
    objs = np.empty(400, dtype=object)
    objs[:] = [{"label": 1}] * 400
    with pytest.raises(DataError, match=r"'y_train' holds Python objects.*refused"):
        load_dataset(write_tiny_npz(tmp_path / "obj.npz", y_train=objs))


def test_npz_missing_array_and_not_a_zip(tmp_path):
    path = tmp_path / "three.npz"
    a = tiny_arrays()
    np.savez(path, x_train=a["x_train"], y_train=a["y_train"], x_test=a["x_test"])
    with pytest.raises(DataError, match=r"no array named 'y_test'.*numpy\.savez"):
        load_dataset(path)
    path.write_bytes(b"not a zip file at all")
    with pytest.raises(DataError, match=r"not a readable \.npz \(zip\) file"):
        load_dataset(path)


def test_npz_declared_size_over_the_limit_is_refused_before_reading(tmp_path, monkeypatch):
    monkeypatch.setattr(npz, "MAX_PAYLOAD", 100_000)  # x_train declares 313,600 bytes
    with pytest.raises(DataError, match=r"'x_train' declares shape \(400, 28, 28\).*more than the 100000"):
        load_dataset(write_tiny_npz(tmp_path / "big.npz"))


# -- image folders ---------------------------------------------------------------------------------
def test_image_folder_train_test_gives_the_same_arrays(tmp_path):
    folder = write_tiny_image_folder(tmp_path / "img")
    ds = load_dataset(folder)
    assert detect_format(folder) == "images" and ds.format == "images" and ds.name == "img"
    assert _same_arrays(ds, tiny_arrays())  # file-name order across classes keeps the original order
    assert ds.class_names == tuple(f"class{i}" for i in range(10)) and set(ds.sha256) == {"train", "test"}


def test_labels_file_sets_the_class_order_of_an_image_folder(tmp_path):
    names = tuple(f"c{9 - i}" for i in range(10))  # sorted order is the reverse of label order
    folder = write_tiny_image_folder(tmp_path / "img", names=names)
    assert load_dataset(folder).class_names == tuple(sorted(names))
    (folder / "labels.txt").write_text("".join(f"{n}\n" for n in names))
    ds = load_dataset(folder)
    assert ds.class_names == names and _same_arrays(ds, tiny_arrays()) and "labels" in ds.sha256
    (folder / "labels.txt").write_text("c0\nc1\n")
    with pytest.raises(DataError, match=r"labels\.txt: lists \['c0', 'c1'\] but the class folders are"):
        load_dataset(folder)


def test_image_folder_hash_follows_the_content(tmp_path):
    folder = write_tiny_image_folder(tmp_path / "img", train_per_class=3, test_per_class=2)
    before = load_dataset(folder).sha256
    one = next((folder / "test").rglob("*.png"))
    px = np.asarray(Image.open(one)).copy()
    px[0, 0] ^= 1
    Image.fromarray(px).save(one)
    after = load_dataset(folder).sha256
    assert after["test"] != before["test"] and after["train"] == before["train"]


def _flat_folder(tmp_path: Path, per_class: int = 5) -> Path:
    rng = np.random.default_rng(1)
    for name in ("cat", "dog", "owl"):
        (tmp_path / "flat" / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (6, 7, 3), dtype=np.uint8), "RGB").save(
                tmp_path / "flat" / name / f"{i}.png")
    return tmp_path / "flat"


def test_held_out_share_is_stratified_and_rgb_is_kept(tmp_path):
    folder = _flat_folder(tmp_path, per_class=5)
    with pytest.raises(DataError, match=r"no train/ and test/ sub-folders and no test_share"):
        load_dataset(folder)
    ds = load_dataset(folder, options=ReadOptions(test_share=0.4, random_state=3))
    assert ds.input_shape == (6, 7, 3) and ds.class_names == ("cat", "dog", "owl")
    assert np.bincount(ds.y_test).tolist() == [2, 2, 2] and np.bincount(ds.y_train).tolist() == [3, 3, 3]
    again = load_dataset(folder, options=ReadOptions(test_share=0.4, random_state=3))
    assert np.array_equal(again.x_test, ds.x_test)


def test_declared_resize_takes_mixed_sizes_and_modes(tmp_path):
    folder = write_tiny_image_folder(tmp_path / "img", train_per_class=3, test_per_class=2)
    Image.new("RGB", (20, 30), (200, 10, 10)).save(folder / "train" / "class0" / "odd.png")
    with pytest.raises(DataError, match=r"images differ in size or mode.*declare image_size"):
        load_dataset(folder)
    ds = load_dataset(folder, options=ReadOptions(image_size=(14, 14)))
    assert ds.input_shape == (14, 14, 3) and len(ds.y_train) == 31


def test_grey_images_of_another_mode_need_a_declared_size(tmp_path):
    folder = write_tiny_image_folder(tmp_path / "img", train_per_class=2, test_per_class=1)
    for p in folder.rglob("*.png"):
        Image.open(p).convert("LA").save(p)
    with pytest.raises(DataError, match=r"image mode LA.*declare image_size"):
        load_dataset(folder)
    assert load_dataset(folder, options=ReadOptions(image_size=(28, 28))).input_shape == (28, 28)


@pytest.mark.parametrize("damage, match", [
    (lambda p: p.write_bytes(p.read_bytes()[:60]), r"00000\.png: not a readable image"),
    (lambda p: p.write_bytes(b"hello"), r"00000\.png: not a readable image"),
    (lambda p: png_bomb(p), r"00000\.png: refused as a decompression bomb"),
])
def test_bad_image_files_are_named(tmp_path, damage, match):
    folder = write_tiny_image_folder(tmp_path / "img", train_per_class=2, test_per_class=1)
    damage(next(folder.rglob("00000.png")))
    with pytest.raises(DataError, match=match):
        load_dataset(folder)


def test_empty_class_folder_and_too_few_for_the_share(tmp_path):
    folder = _flat_folder(tmp_path, per_class=1)
    with pytest.raises(DataError, match=r"class 'cat' has 1 image\(s\); holding out test_share=0\.5"):
        load_dataset(folder, options=ReadOptions(test_share=0.5))
    for p in (folder / "dog").iterdir():
        p.unlink()
    with pytest.raises(DataError, match=r"dog: class folder 'dog' holds no images"):
        load_dataset(folder, options=ReadOptions(test_share=0.5))


def test_image_folder_pixels_over_the_limit_are_refused_before_decoding(tmp_path, monkeypatch):
    folder = write_tiny_image_folder(tmp_path / "img", train_per_class=2, test_per_class=1)
    monkeypatch.setattr(images_reader, "MAX_PAYLOAD", 1000)
    monkeypatch.setattr(images_reader, "_decode", lambda *a: pytest.fail("decoded before the size check"))
    with pytest.raises(DataError, match=r"30 images of 28x28 L are 23520 bytes of pixels, more than the 1000"):
        load_dataset(folder)


def test_train_and_test_need_the_same_classes(tmp_path):
    folder = write_tiny_image_folder(tmp_path / "img", train_per_class=2, test_per_class=1)
    shutil.rmtree(folder / "test" / "class3")
    with pytest.raises(DataError, match=r"train/ has classes .* but test/ has"):
        load_dataset(folder)


# -- the registry ------------------------------------------------------------------------------------
def test_a_new_format_is_one_registered_reader(tmp_path):
    @base.register("csv", detect=lambda p: p.suffix == ".csv", what="a .csv file: label, then pixels")
    def read_csv(path: Path, options: ReadOptions) -> Dataset:
        rows = np.loadtxt(path, delimiter=",", dtype=np.int64)
        x, y = rows[:, 1:].reshape(-1, 2, 2).astype(np.uint8), rows[:, 0]
        return Dataset(x, y, x, y, str(path), {"csv": "0" * 64}, class_names=("a", "b"), name=path.stem, format="csv")

    try:
        path = tmp_path / "tiny.csv"
        path.write_text("0,1,2,3,4\n1,5,6,7,8\n")
        assert detect_format(path) == "csv"
        ds = load_dataset(path)
        assert ds.input_shape == (2, 2) and ds.class_names == ("a", "b")
    finally:
        READERS.pop("csv", None)  # the registration does not outlive the test


def test_unknown_path_and_format_are_explained(tmp_path):
    with pytest.raises(DataError, match=r"data folder does not exist"):
        load_dataset(tmp_path / "nope")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DataError, match=r"not a dataset this pipeline can read.*npz: an \.npz file"):
        load_dataset(tmp_path / "x.txt")
    with pytest.raises(DataError, match=r"data_format='tfrecord' is not a known format"):
        load_dataset(tmp_path / "x.txt", "tfrecord")


def test_npz_header_declaring_a_terabyte_is_refused_from_the_header(tmp_path):
    """A few hundred bytes that declare 10**12 pixels: refused before any allocation (np.load would try it)."""
    import io
    import zipfile

    from numpy.lib import format as npy_format

    head = io.BytesIO()
    npy_format.write_array_header_1_0(head, {"descr": "|u1", "fortran_order": False, "shape": (10**6, 1000, 1000)})
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x_train.npy", head.getvalue() + bytes(64))
    assert path.stat().st_size < 1000
    with pytest.raises(DataError, match=r"'x_train' declares shape \(1000000, 1000, 1000\) of uint8 "
                                        r"\(1000000000000 bytes\), more than the 1073741824"):
        load_dataset(path)


def test_declared_size_resizes_array_formats_too(tmp_path):
    ds = load_dataset(write_tiny_npz(tmp_path / "tiny.npz"), options=ReadOptions(image_size=(8, 6)))
    assert ds.input_shape == (8, 6) and ds.x_test.shape == (100, 8, 6) and ds.x_train.dtype == np.uint8
    x = np.zeros((6, 4, 4), np.float32)
    y = np.array([0, 1, 2, 0, 1, 2])
    with pytest.raises(DataError, match=r"images are float32; image_size resizes uint8 images only"):
        load_dataset(write_tiny_npz(tmp_path / "f.npz", x_train=x, y_train=y, x_test=x, y_test=y),
                     options=ReadOptions(image_size=(8, 8)))

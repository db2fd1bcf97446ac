"""The bad-input matrix: bad data, bad settings and a bad environment fail early, clearly, without retry.

Every row runs the earliest task that can see the problem (split_data for data and settings, the
consuming task for a damaged upstream model) through tasks.common.fail_fast, exactly as the DAG does,
and checks that:
- Airflow gets an AirflowFailException (failed at once, no retry) caused by a permanent error type;
- the message says what is wrong (`what`) and how to fix it (`fix`);
- no file appears under models/ or reports/.
A few rows also go through dag.test() to prove the Airflow path end to end.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from include.artifacts import RunPaths
from include.config import ExperimentConfig
from include.data import FILES, write_idx
from tests.conftest import load_dag
from tests.reliability.helpers import ROOT, idx_array, permanent_failure, rewrite_idx, snapshot
from tests.synthetic import (
    TINY_CONF,
    png_bomb,
    tiny_arrays,
    write_tiny_fashion_mnist,
    write_tiny_image_folder,
    write_tiny_npz,
)

HOW_TO_PROVIDE = r"data_dir param or the TL_DATA_DIR"  # every data message names the ways to fix it


@dataclass(frozen=True)
class Case:
    id: str
    setup: Callable[[Path, dict], dict]  # (data folder, conf) -> conf, may damage the files
    what: str  # regex: the message says what is wrong
    fix: str  # regex: ... and how to fix it


def conf_with(**changes):
    return lambda folder, conf: {**conf, **changes}


def _file(key):
    return lambda folder: folder / FILES[key]


def _damage(key, fn):
    def setup(folder, conf):
        fn(folder / FILES[key])
        return conf
    return setup


def _relabel(key, old, new):
    def change(path):
        y = idx_array(path)
        y[y == old] = new
        write_idx(path, y)
    return _damage(key, change)


def _flip_middle(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    for i in range(len(raw) // 2, len(raw) // 2 + 16):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


DATA_CASES = [
    Case("missing_folder", lambda folder, conf: {**conf, "data_dir": str(folder / "no-such-folder")},
         r"data folder does not exist", HOW_TO_PROVIDE),
    Case("missing_file", _damage("train_labels", Path.unlink), r"train-labels-idx1-ubyte\.gz: file not found",
         HOW_TO_PROVIDE),
    Case("empty_file", _damage("test_images", lambda p: p.write_bytes(b"")), r"t10k-images.*file is empty",
         HOW_TO_PROVIDE),
    Case("corrupt_gzip_not_gzip", _damage("train_images", lambda p: p.write_bytes(os.urandom(4096))),
         r"not a readable gzip file", HOW_TO_PROVIDE),
    # Flipped bytes may decode to extra data before zlib notices: the streaming reader stops there.
    Case("corrupt_gzip_damaged_stream", _damage("train_images", _flip_middle),
         r"not a readable gzip file|more data after it; the file is corrupt",
         HOW_TO_PROVIDE),
    Case("truncated_gzip", _damage("train_images", lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])),
         r"truncated or corrupt", HOW_TO_PROVIDE),
    Case("truncated_idx_payload", _damage("test_images", lambda p: rewrite_idx(p, lambda raw: raw[:-784])),
         r"declares shape \(100, 28, 28\).*truncated or corrupt", HOW_TO_PROVIDE),
    Case("truncated_idx_header", _damage("test_labels", lambda p: rewrite_idx(p, lambda raw: raw[:6])),
         r"IDX header is truncated", HOW_TO_PROVIDE),
    Case("wrong_magic_labels_as_images",
         lambda folder, conf: (shutil.copyfile(folder / FILES["train_labels"], folder / FILES["train_images"]),
                               conf)[1],
         r"wrong IDX magic number 0x00000801, expected 0x00000803", HOW_TO_PROVIDE),
    Case("wrong_magic_dtype",
         _damage("train_labels", lambda p: rewrite_idx(p, lambda raw: raw[:2] + b"\x0d" + raw[3:])),
         r"wrong IDX magic number 0x00000d01", HOW_TO_PROVIDE),
    Case("count_mismatch", _damage("train_labels", lambda p: write_idx(p, idx_array(p)[:-1])),
         r"399 labels for 400 images.*counts must match", HOW_TO_PROVIDE),
    Case("wrong_image_size", _damage("test_images", lambda p: write_idx(p, idx_array(p)[:, :27, :27])),
         r"images have shape \(27, 27\), expected \(28, 28\)", HOW_TO_PROVIDE),
    Case("content_hash_mismatch", conf_with(verify_checksums=True),
         r"content SHA-256 .* does not match the official Fashion-MNIST value", HOW_TO_PROVIDE),
    Case("label_out_of_range", _relabel("train_labels", 9, 12), r"label 12 is outside 0\.\.9", HOW_TO_PROVIDE),
    Case("target_class_no_train_examples", _relabel("train_labels", 2, 3),
         r"Target class 'Pullover' has no training examples", r"check the data files or choose other target_classes"),
    Case("target_class_no_test_examples", _relabel("test_labels", 0, 3),
         r"Target class 'T-shirt/top' has no test examples", r"check the data files or choose other target_classes"),
    Case("pretrain_class_no_examples", _relabel("train_labels", 5, 7),
         r"Pretraining class 'Sandal' has no training examples", r"check the data files"),
]

def _images(damage=None, **changes):
    """The tiny data as an image folder beside the IDX folder, damaged by `damage(folder)`."""
    def setup(folder, conf):
        images = write_tiny_image_folder(folder.parent / "images", names=tuple(f"c{i}" for i in range(10)))
        if damage:
            damage(images)
        return {**conf, "data_dir": str(images), "target_classes": ["c2", "c0"], **changes}
    return setup


def _npz(names=None, **arrays):
    def setup(folder, conf):
        path = write_tiny_npz(folder.parent / "npz" / "tiny.npz", names=names, **arrays)
        return {**conf, "data_dir": str(path), "target_classes": ["2", "0"]}
    return setup


def _png(folder: Path, cls: str = "c5") -> Path:
    return sorted((folder / "train" / cls).iterdir())[0]


def _objects(n: int):
    a = np.empty(n, dtype=object)
    a[:] = [("pickled", i) for i in range(n)]
    return a


def _label_12():
    y = tiny_arrays()["y_train"].astype(np.int64)
    y[0] = 12
    return y


def _keep_two(cls: str):
    def damage(images: Path) -> None:
        for p in sorted((images / "train" / cls).iterdir())[2:]:
            p.unlink()
    return damage


FORMAT_CASES = [
    Case("images_mixed_sizes", _images(lambda f: Image.new("L", (27, 27)).save(_png(f))),
         r"images differ in size or mode:.*27x27 L", r"declare image_size \[height, width\]"),
    Case("images_mixed_modes", _images(lambda f: Image.new("RGB", (28, 28)).save(_png(f))),
         r"images differ in size or mode:.*28x28 RGB", r"declare image_size"),
    Case("image_truncated", _images(lambda f: _png(f).write_bytes(_png(f).read_bytes()[:70])),
         r"c5/\d+\.png: not a readable image", r"Remove or replace the file"),
    Case("image_unreadable", _images(lambda f: _png(f).write_bytes(b"GIF89a? no")),
         r"c5/\d+\.png: not a readable image", r"Remove or replace the file"),
    Case("image_decompression_bomb", _images(lambda f: png_bomb(_png(f))),
         r"c5/\d+\.png: refused as a decompression bomb", r"Remove the file or shrink it"),
    Case("image_empty_class_folder", _images(lambda f: [p.unlink() for p in (f / "test" / "c7").iterdir()]),
         r"test/c7: class folder 'c7' holds no images", r"add images or remove it"),
    Case("image_too_few_per_class", _images(_keep_two("c4")),
         r"Pretraining class 'c4' has 2 training image\(s\).*at least 3 per class", r"Add images of it"),
    Case("image_target_class_not_in_data", _images(target_classes=["c2", "cat"]),
         r"Unknown class name 'cat' in target_classes: not a class of the data", r"Choose two of \['c0'"),
    Case("pretrain_class_not_in_data", conf_with(pretrain_classes=["Bag", "Jacket"]),
         r"Unknown class name 'Jacket' in pretrain_classes", r"Choose from \['T-shirt/top'"),
    Case("npz_wrong_rank", _npz(x_train=np.zeros((400, 784), np.uint8)),
         r"tiny\.npz: x_train has shape \(400, 784\)", r"numpy\.savez"),
    Case("npz_wrong_length", _npz(y_test=np.zeros(99, np.uint8)),
         r"tiny\.npz: y_test has shape \(99,\) for 100 images", r"one integer label per image"),
    Case("npz_label_out_of_range", _npz(names=[str(i) for i in range(10)], y_train=_label_12()),
         r"tiny\.npz: y_train hold label 12, outside 0\.\.9", r"fix the labels or the class-names file"),
    Case("npz_object_arrays", _npz(y_train=_objects(400)),
         r"tiny\.npz: 'y_train' holds Python objects", r"numpy\.savez"),
    Case("npz_not_a_zip", lambda folder, conf: {**conf, "data_dir": str(_write(folder.parent / "x.npz", b"PK??"))},
         r"x\.npz: not a readable \.npz \(zip\) file", r"numpy\.savez"),
]


def _write(path: Path, raw: bytes) -> Path:
    path.write_bytes(raw)
    return path


PARAM_CASES = [
    Case("unknown_class_name", conf_with(target_classes=["Pullover", "Sweater"]), r"Unknown class name 'Sweater'",
         r"Choose two of \['T-shirt/top'"),
    Case("same_class_twice", conf_with(target_classes=["Pullover", "Pullover"]), r"same class twice",
         r"Choose two different classes"),
    Case("one_class_only", conf_with(target_classes=["Pullover"]), r"must name exactly two classes",
         r"Choose two of"),
    Case("fraction_zero", conf_with(fractions=[0.0]), r"fraction 0\.0 is outside \(0, 1\]", r"e\.g\. 0\.7"),
    Case("fraction_negative", conf_with(fractions=[0.5, -0.1]), r"fraction -0\.1 is outside \(0, 1\]", r"e\.g\. 0\.7"),
    Case("fraction_above_one", conf_with(fractions=[1.5]), r"fraction 1\.5 is outside \(0, 1\]", r"e\.g\. 0\.7"),
    Case("fraction_too_small_for_data", conf_with(fractions=[0.01]), r"fewer than 2 per class",
         r"use a larger fraction"),
    Case("pretrain_epochs_zero", conf_with(pretrain_epochs=0), r"pretrain_epochs must be an integer >= 1, got 0",
         r">= 1"),
    Case("finetune_epochs_negative", conf_with(finetune_epochs=-3), r"finetune_epochs must be an integer >= 1, got -3",
         r">= 1"),
    Case("scratch_lr_zero", conf_with(scratch_lr=0), r"scratch_lr must be a positive number, got 0",
         r"The seed uses 0\.001"),
    Case("head_lr_negative", conf_with(head_lr=-0.001), r"head_lr must be a positive number, got -0\.001",
         r"The seed uses 0\.001"),
    Case("batch_size_zero", conf_with(batch_size=0), r"batch_size must be an integer >= 1, got 0", r">= 1"),
    Case("pretrain_val_size_exceeds_data", conf_with(pretrain_val_size=5000),
         r"pretrain_val_size=5000 does not fit 320 available examples", r"Use a value below 312"),
    Case("target_val_size_equals_data", conf_with(target_val_size=80),
         r"target_val_size=80 does not fit 80 available examples", r"Use a value below 78"),
    Case("seeds_empty", conf_with(seeds=[]), r"seeds is empty", r"e\.g\. \[42\]"),
    Case("seeds_duplicate", conf_with(seeds=[3, 3]), r"seeds contains duplicates: \[3, 3\]",
         r"Each seed must appear once"),
    Case("seed_not_integer", conf_with(seeds=[1.5]), r"seeds must be integers, got 1\.5", r"whole numbers"),
    Case("seed_is_string", conf_with(seeds=["42"]), r"seeds must be integers, got '42'", r"whole numbers"),
    Case("seeds_not_a_list", conf_with(seeds="42"), r"seeds must be a list, got '42'", r"e\.g\. \[42\]"),
    Case("unknown_setting", conf_with(epochs=5), r"Unknown setting\(s\) \['epochs'\]", r"Valid settings are"),
    Case("unknown_architecture", conf_with(architecture="resnet"), r"Unknown architecture 'resnet'",
         r"Choose one of \['cnn', 'mlp'\]"),
]


@pytest.fixture
def run_root(tmp_path: Path) -> Path:
    root = tmp_path / "artifacts"
    root.mkdir()
    return root


def _split_fails(conf: dict, root: Path) -> BaseException:
    """split_data, the earliest task, fails permanently and leaves models/ and reports/ as they were."""
    from tasks import split_data

    before = snapshot(root, "models", "reports")

    def call():
        cfg = ExperimentConfig.from_params(conf)  # inside the task, as in the DAG: config errors fail it too
        return split_data.run(cfg, RunPaths.for_run("scheduled__2026-01-01T02:00:00+00:00", root=root))

    cause = permanent_failure(call)
    assert snapshot(root, "models", "reports") == before
    return cause


@pytest.mark.parametrize("case", DATA_CASES + FORMAT_CASES + PARAM_CASES, ids=lambda c: c.id)
@pytest.mark.unit
def test_bad_data_and_params_fail_in_split_data(case: Case, tmp_path: Path, run_root: Path):
    folder = write_tiny_fashion_mnist(tmp_path / "idx")
    conf = case.setup(folder, {**TINY_CONF, "data_dir": str(folder)})
    msg = str(_split_fails(conf, run_root))
    assert re.search(case.what, msg), f"message does not say what is wrong: {msg}"
    assert re.search(case.fix, msg), f"message does not say how to fix it: {msg}"


@pytest.mark.unit
def test_matrix_has_at_least_30_rows():
    assert len(DATA_CASES) + len(FORMAT_CASES) + len(PARAM_CASES) + len(ENV_CASES) + len(MODEL_CASES) >= 30


# -- environment: unwritable and full artifact roots ----------------------------------------------------
@pytest.mark.unit
def test_artifact_root_under_a_regular_file(tmp_path: Path):
    """Root ignores file modes, so 'unwritable' here is a path no one can create: one under a file (ENOTDIR)."""
    folder = write_tiny_fashion_mnist(tmp_path / "idx")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the artifact root should be")
    msg = str(_split_fails({**TINY_CONF, "data_dir": str(folder)}, blocker / "artifacts"))
    assert "Cannot create" in msg and "Not a directory" in msg
    assert "Set TL_ARTIFACT_ROOT to a writable folder" in msg
    assert blocker.read_text().startswith("a file")


def _unshare_cmd() -> list[str]:
    # A private mount namespace: the tmpfs exists only for the child and disappears with it.
    cmd = ["unshare", "--mount", "--propagation", "private"]
    return cmd if os.geteuid() == 0 else [*cmd[:1], "--user", "--map-root-user", *cmd[1:]]


ENV_CASES = [("readonly", r"Cannot create .*Read-only file system", r"Set TL_ARTIFACT_ROOT to a writable folder"),
             ("full", r"Cannot write .*No space left on device", r"Free space or choose a writable TL_ARTIFACT_ROOT")]


@pytest.mark.parametrize("mode,what,fix", ENV_CASES, ids=[c[0] for c in ENV_CASES])
@pytest.mark.unit
def test_artifact_root_readonly_or_full_filesystem(mode: str, what: str, fix: str, tmp_path: Path):
    """A real tmpfs, mounted read-only or filled to ENOSPC: the file system refuses even root."""
    folder = write_tiny_fashion_mnist(tmp_path / "idx")
    conf = json.dumps({**TINY_CONF, "data_dir": str(folder)})
    res = subprocess.run([*_unshare_cmd(), sys.executable, str(Path(__file__).with_name("fs_case.py")), mode,
                          str(tmp_path / "mnt"), conf],
                         capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, (f"could not run the case in a private mount namespace (needs root or "
                                 f"unprivileged user namespaces): {res.stderr[-3000:]}")
    out = json.loads([ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")][-1][7:])
    assert out["error_type"] == "AirflowFailException" and out["permanent"], out
    assert out["cause_type"] == "ArtifactError", out
    assert re.search(what, out["message"]) and re.search(fix, out["message"]), out["message"]
    assert out["models_reports_files"] == [] and out["temp_files"] == [], out


# -- environment: a damaged upstream model fails the task that consumes it ------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """One tiny split and pretrained model (1 epoch), plus one transfer head, shared by the model rows."""
    from tasks import split_data, train

    base = tmp_path_factory.mktemp("upstream")
    cfg = ExperimentConfig.from_params({**TINY_CONF, "seeds": [42], "fractions": [0.5],
                                        "data_dir": str(write_tiny_fashion_mnist(base / "idx"))})
    paths = RunPaths.for_run("upstream", root=base / "artifacts")
    job = split_data.run(cfg, paths)[0]
    pretrained = train.pretrain(cfg, job["manifest"], 42, paths)
    heads = train.head_for_chunk(cfg, job, [pretrained], paths)
    return {"cfg": cfg, "paths": paths, "job": job, "pretrained": pretrained, "heads": heads}


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _garbage(p: Path) -> None:
    p.write_bytes(b"not a keras archive " * 50)


def _flip_tail(p: Path) -> None:  # damage the stored weights but keep the zip directory readable
    raw = bytearray(p.read_bytes())
    import zipfile

    with zipfile.ZipFile(p) as zf:
        info = zf.getinfo("model.weights.h5")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 200
    for i in range(start, start + 64):
        raw[i] ^= 0xFF
    p.write_bytes(bytes(raw))


MODEL_CASES = [
    ("pretrain_model_truncated", "pretrained", _truncate, r"corrupt or truncated"),
    ("pretrain_model_garbage", "pretrained", _garbage, r"corrupt or truncated"),
    ("pretrain_model_bad_crc", "pretrained", _flip_tail, r"model file is corrupt \(bad CRC"),
    ("pretrain_model_missing", "pretrained", Path.unlink, r"model file not found"),
    ("head_model_truncated", "head", _truncate, r"corrupt or truncated"),
    ("split_manifest_corrupt", "manifest", _truncate, r"split manifest is missing or unreadable"),
]


@pytest.mark.parametrize("case,upstream,damage,what", MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
@pytest.mark.training
def test_damaged_upstream_artifact_fails_its_consumer(trained, tmp_path, case, upstream, damage, what):
    from tasks import train

    cfg, job, pretrained, head = trained["cfg"], dict(trained["job"]), dict(trained["pretrained"]), \
        dict(trained["heads"][0])
    paths = RunPaths.for_run(f"consumer-{case}", root=trained["paths"].root)

    def copy(src: str) -> str:  # work on copies so each row damages only its own files
        return str(shutil.copy(src, tmp_path / Path(src).name))

    if upstream == "pretrained":
        pretrained["model_path"] = copy(pretrained["model_path"])
        damage(Path(pretrained["model_path"]))
        call = partial(train.head_for_chunk, cfg, job, [pretrained], paths)  # transfer.head
    elif upstream == "head":
        head["model_path"] = copy(head["model_path"])
        damage(Path(head["model_path"]))
        call = partial(train.finetune_for_chunk, cfg, job, [head], paths)  # transfer.finetune
    else:
        job["manifest"] = copy(job["manifest"])
        damage(Path(job["manifest"]))
        call = partial(train.pretrain, cfg, job["manifest"], 42, paths)  # pretrain
    before = snapshot(paths.root, "models", "reports")
    msg = str(permanent_failure(call))
    assert re.search(what, msg), msg
    assert "re-run" in msg.lower(), msg  # says how to fix it
    assert snapshot(paths.root, "models", "reports") == before


@pytest.mark.training
def test_a_cnn_on_images_too_small_for_its_pooling_fails_before_training(trained, tmp_path):
    """The images' shape comes from the data: 3x3 images cannot go through the CNN's two 2x2 poolings.
    The first training task refuses them permanently, names the setting and the size, writes nothing."""
    from tasks import train

    cfg = ExperimentConfig.from_params({**trained["cfg"].to_dict(), "architecture": "cnn"})
    manifest = json.loads(Path(trained["job"]["manifest"]).read_text())
    for name, path in manifest["arrays"].items():  # the same split, its images cropped to 3x3
        if "_x_" in name:
            manifest["arrays"][name] = str(tmp_path / Path(path).name)
            np.save(manifest["arrays"][name], np.load(path)[:, :3, :3])
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    paths = RunPaths.for_run("cnn-too-small", root=tmp_path / "artifacts")
    msg = str(permanent_failure(partial(train.pretrain, cfg, str(tmp_path / "manifest.json"), 42, paths)))
    assert re.search(r"architecture='cnn' needs images of at least 4x4 pixels.*these images are 3x3", msg), msg
    assert re.search(r"Use architecture='mlp', or images of at least 4x4", msg), msg
    assert not (paths.root / "models").exists() or not any((paths.root / "models").rglob("*"))


# -- the Airflow path: dag.test() ------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["empty_test_images", "target_val_size_too_big"])
@pytest.mark.airflow
def test_dag_run_fails_in_split_data_without_retry(damage, airflow_db, tmp_path, monkeypatch):
    """Through Airflow: split_data fails on its first try (retries=2 unused), nothing downstream runs."""
    root = tmp_path / "artifacts"
    monkeypatch.setenv("TL_ARTIFACT_ROOT", str(root))
    folder = write_tiny_fashion_mnist(tmp_path / "idx")
    conf = {**TINY_CONF, "data_dir": str(folder)}
    if damage == "empty_test_images":
        (folder / FILES["test_images"]).write_bytes(b"")
    else:
        conf["target_val_size"] = 500  # passes the Param schema (>= 1); only split_data can count the data
    dr = load_dag().test(run_conf=conf)
    tis = {(ti.task_id, ti.map_index): ti for ti in dr.get_task_instances()}
    assert str(dr.state) == "failed"
    split = tis[("split_data", -1)]
    assert str(split.state) == "failed" and split.try_number == 1 and split.max_tries == 2  # would retry twice
    others = [ti for key, ti in tis.items() if key[0] != "split_data"]
    assert others and all(str(ti.state) == "upstream_failed" for ti in others), \
        {k: str(t.state) for k, t in tis.items()}
    assert snapshot(root, "models", "reports") == {}


@pytest.mark.parametrize("param, value", [("seeds", [3, 3]), ("target_classes", ["Pullover", "Pullover"])])
@pytest.mark.airflow
def test_invalid_param_is_refused_at_trigger(param, value, airflow_db, tmp_path, monkeypatch):
    """The earliest place of all: the Param schema refuses the value before a run exists."""
    from airflow.sdk.exceptions import ParamValidationError

    root = tmp_path / "artifacts"
    monkeypatch.setenv("TL_ARTIFACT_ROOT", str(root))
    with pytest.raises(ParamValidationError, match=f"{param}.*non-unique"):
        load_dag().test(run_conf={**TINY_CONF, param: value, "data_dir": str(tmp_path)})
    assert not root.exists()


@pytest.mark.unit
def test_transient_errors_are_left_to_retries():
    """fail_fast converts only permanent errors: anything else keeps Airflow's retries."""
    from tasks.common import fail_fast

    def flaky():
        raise ConnectionError("broker went away")

    with pytest.raises(ConnectionError):
        fail_fast(flaky)()

"""The seed notebook's recipe as one plain Keras script: the benchmark's reference (A).

No Airflow, no project code. Default `compile` and `fit` (steps_per_execution=1), float64 arrays
from the seed's standardisation, batch 32, SGD lr 1e-3, epochs 20/20/10/50.

Two deliberate differences from the notebook, both so that the same seed gives the same models
as the pipeline (the notebook itself is not reproducible):
- `keras.utils.set_random_seed(seed)` before each of the four trainings (the pipeline seeds each
  task the same way);
- the 70% transfer subset is drawn with `random_state=seed`, in sorted index order.

Prints one line per phase and, last, `RESULT {json}` with accuracies and wall times. The wall
time counts from interpreter start-up, TensorFlow import included.

    python benchmarks/reference_seed.py [--data-dir DIR] [--seed 42] [--steps-per-execution 1]
"""

from __future__ import annotations

import argparse
import gzip
import importlib
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

# Before numpy and the other heavy imports, which are imported in the functions: their cost belongs
# to the recipe.
T_START = time.perf_counter()

CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot"]
FILES = {"x_train": "train-images-idx3-ubyte.gz", "y_train": "train-labels-idx1-ubyte.gz",
         "x_test": "t10k-images-idx3-ubyte.gz", "y_test": "t10k-labels-idx1-ubyte.gz"}


def read_idx(path: Path) -> np.ndarray:
    """A gzipped IDX file: 4-byte magic (last byte = number of dimensions), one uint32 per dimension."""
    import numpy as np

    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=os.environ.get("TL_DATA_DIR") or "/usr/share/datasets/fashion-mnist",
                   help="folder with the four Fashion-MNIST IDX .gz files")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--fraction", type=float, default=0.7, help="transfer training share (the seed: 0.7)")
    p.add_argument("--epochs", type=int, nargs=4, default=[20, 20, 10, 50],
                   metavar=("PRETRAIN", "SCRATCH", "HEAD", "FINETUNE"))
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--pretrain-val-size", type=int, default=5000)
    p.add_argument("--target-val-size", type=int, default=3000)
    p.add_argument("--steps-per-execution", type=int, default=1,
                   help="1 is Keras' default (the reference); larger values only check that the maths is unchanged")
    p.add_argument("--float32", action="store_true", help="cast the standardised arrays to float32 (a check)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    import numpy as np

    args = parse_args(argv)
    data_dir = Path(args.data_dir)
    missing = [n for n in FILES.values() if not (data_dir / n).is_file()]
    if missing:
        sys.exit(f"{data_dir}: missing {missing}. Pass --data-dir with the four Fashion-MNIST IDX files "
                 "(Debian: apt-get install dataset-fashion-mnist).")

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    t0 = time.perf_counter()
    import keras

    importlib.import_module("tensorflow")  # the seed imports it; its import cost is part of the recipe
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import LabelEncoder
    times = {"import": time.perf_counter() - t0}

    t0 = time.perf_counter()
    x_full, y_full = read_idx(data_dir / FILES["x_train"]), read_idx(data_dir / FILES["y_train"])
    x_test, y_test = read_idx(data_dir / FILES["x_test"]), read_idx(data_dir / FILES["y_test"])
    targets = [CLASS_NAMES.index("Pullover"), CLASS_NAMES.index("T-shirt/top")]
    is_target = np.isin(y_full, targets)
    x2, y2 = x_full[is_target], y_full[is_target]
    x8, y8 = x_full[~is_target], y_full[~is_target]
    dtype = np.float32 if args.float32 else np.float64

    def scale(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
        mean, std = train.mean(axis=0, keepdims=True), train.std(axis=0, keepdims=True)
        return [((a - mean) / std).astype(dtype) for a in (train, *others)]

    x8_tr, x8_va, y8_tr, y8_va = train_test_split(x8, y8, test_size=args.pretrain_val_size, random_state=42,
                                                  stratify=y8)
    x8_tr, x8_va = scale(x8_tr, x8_va)
    enc8 = LabelEncoder()
    y8_tr, y8_va = enc8.fit_transform(y8_tr), enc8.transform(y8_va)
    x2_tr, x2_va, y2_tr, y2_va = train_test_split(x2, y2, test_size=args.target_val_size, random_state=42,
                                                  stratify=y2)
    x2_te, y2_te = x_test[np.isin(y_test, targets)], y_test[np.isin(y_test, targets)]
    x2_tr, x2_va, x2_te = scale(x2_tr, x2_va, x2_te)
    enc2 = LabelEncoder()
    y2_tr, y2_va, y2_te = enc2.fit_transform(y2_tr), enc2.transform(y2_va), enc2.transform(y2_te)
    times["data"] = time.perf_counter() - t0

    def mlp(n_out: int) -> keras.Sequential:
        return keras.Sequential([
            keras.Input(shape=(28, 28)),
            keras.layers.Flatten(),
            keras.layers.Dense(100, activation="relu", kernel_initializer="he_normal"),
            keras.layers.Dense(100, activation="relu", kernel_initializer="he_normal"),
            keras.layers.Dense(100, activation="relu", kernel_initializer="he_normal"),
            keras.layers.Dense(n_out, activation="sigmoid" if n_out == 1 else "softmax"),
        ])

    def compile_(model: keras.Model, loss: str) -> None:
        kw = {} if args.steps_per_execution == 1 else {"steps_per_execution": args.steps_per_execution}
        model.compile(loss=loss, optimizer=keras.optimizers.SGD(learning_rate=args.lr), metrics=["accuracy"], **kw)

    def fit(model: keras.Model, x: np.ndarray, y: np.ndarray, val: tuple, epochs: int, phase: str) -> None:
        t = time.perf_counter()
        model.fit(x, y, epochs=epochs, batch_size=args.batch_size, validation_data=val, verbose=0)
        times[phase] = time.perf_counter() - t
        print(f"{phase}: {epochs} epochs on {len(y)} examples in {times[phase]:.1f}s", flush=True)

    e_pre, e_scr, e_head, e_fine = args.epochs
    workdir = Path(tempfile.mkdtemp(prefix="reference-seed-"))

    # 1. Pretrain on the 8 other classes; save it, as the seed does.
    keras.utils.set_random_seed(args.seed)
    model = mlp(8)
    compile_(model, "sparse_categorical_crossentropy")
    fit(model, x8_tr, y8_tr, (x8_va, y8_va), e_pre, "pretrain")
    pretrain_val_acc = model.evaluate(x8_va, y8_va, verbose=0)[1]
    model.save(workdir / "pretrained.keras")

    # 2. Binary model from scratch on all 9,000 training images.
    keras.utils.set_random_seed(args.seed)
    scratch = mlp(1)
    compile_(scratch, "binary_crossentropy")
    fit(scratch, x2_tr, y2_tr, (x2_va, y2_va), e_scr, "scratch")
    scratch_acc = scratch.evaluate(x2_te, y2_te, verbose=0)[1]

    # 3. Transfer: new sigmoid head on the pretrained body, 70% subset, frozen then fine-tuned.
    idx = np.arange(len(y2_tr))
    subset = idx if args.fraction >= 1 else np.sort(
        train_test_split(idx, train_size=args.fraction, random_state=args.seed, stratify=y2_tr)[0])
    xs, ys = x2_tr[subset], y2_tr[subset]
    keras.utils.set_random_seed(args.seed)
    transfer = keras.models.load_model(workdir / "pretrained.keras")
    transfer.pop()
    transfer.add(keras.layers.Dense(1, activation="sigmoid", name="output"))
    for layer in transfer.layers[:-1]:
        layer.trainable = False
    compile_(transfer, "binary_crossentropy")
    fit(transfer, xs, ys, (x2_va, y2_va), e_head, "head")
    keras.utils.set_random_seed(args.seed)
    for layer in transfer.layers[:-1]:
        layer.trainable = True
    compile_(transfer, "binary_crossentropy")  # recompile after changing trainable, as the seed does
    fit(transfer, xs, ys, (x2_va, y2_va), e_fine, "finetune")
    transfer_acc = transfer.evaluate(x2_te, y2_te, verbose=0)[1]

    # 4. Compare.
    err_s, err_t = 1 - scratch_acc, 1 - transfer_acc
    result = {
        "seed": args.seed, "steps_per_execution": args.steps_per_execution,
        "dtype": np.dtype(dtype).name, "n_train": {"pretrain": len(y8_tr), "scratch": len(y2_tr), "transfer": len(ys)},
        "pretrain_val_accuracy": float(pretrain_val_acc),
        "scratch_test_accuracy": float(scratch_acc),
        "transfer_test_accuracy": float(transfer_acc),
        "error_rate_reduction": float((err_s - err_t) / err_s) if err_s else None,
        "phase_seconds": {k: round(v, 3) for k, v in times.items()},
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "wall_seconds": round(time.perf_counter() - T_START, 3),
    }
    print(f"scratch {scratch_acc:.4f}  transfer {transfer_acc:.4f}  wall {result['wall_seconds']:.1f}s")
    print("RESULT " + json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()

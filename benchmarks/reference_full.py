"""The full default experiment as one plain Keras script: every seed and fraction, no Airflow.

The benchmark's plain recipe for the `full` section: the same work as the pipeline's default run
(per seed: one 8-class pretraining; a scratch model on 100% and on each fraction's subset; per
fraction a transfer model, head then fine-tune), one `model.fit` per model, Keras' own shuffling.
No project code: the seed's data preparation (reference_seed.py's IDX reader and stratified
splits), subsets drawn as the pipeline draws them (`train_test_split(train_size=fraction,
random_state=seed, stratify=y)`, sorted).

By default float32 arrays and one epoch per graph call (`steps_per_execution`), the fastest
plain-Keras settings that leave the maths alone (benchmarks/README.md): the pipeline is compared
with the best the recipe does, not with Keras' defaults.

Prints `RESULT {json}` last: per (model, seed, fraction) test accuracy, and wall seconds from
interpreter start.

    python benchmarks/reference_full.py [--data-dir DIR] [--seeds 42 1 2 3 4] [--fractions 0.05 0.1 0.3 0.7]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_seed import CLASS_NAMES, FILES, read_idx

if TYPE_CHECKING:
    import numpy as np

# Before numpy and the other heavy imports, which are imported in main(): their cost belongs to the recipe.
T_START = time.perf_counter()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=os.environ.get("TL_DATA_DIR") or "/usr/share/datasets/fashion-mnist")
    p.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2, 3, 4])
    p.add_argument("--fractions", type=float, nargs="+", default=[0.05, 0.1, 0.3, 0.7])
    p.add_argument("--epochs", type=int, nargs=4, default=[20, 20, 10, 50],
                   metavar=("PRETRAIN", "SCRATCH", "HEAD", "FINETUNE"))
    p.add_argument("--pretrain-val-size", type=int, default=5000)
    p.add_argument("--target-val-size", type=int, default=3000)
    p.add_argument("--steps-per-execution", type=int, default=2048)
    p.add_argument("--float64", action="store_true", help="the seed's float64 arrays instead of float32")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    import numpy as np

    args = parse_args(argv)
    data_dir = Path(args.data_dir)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    from sklearn.model_selection import train_test_split

    x_full, y_full = read_idx(data_dir / FILES["x_train"]), read_idx(data_dir / FILES["y_train"])
    x_test, y_test = read_idx(data_dir / FILES["x_test"]), read_idx(data_dir / FILES["y_test"])
    targets = sorted([CLASS_NAMES.index("Pullover"), CLASS_NAMES.index("T-shirt/top")])
    others = [c for c in range(10) if c not in targets]
    dtype = np.float64 if args.float64 else np.float32

    def scale(train: np.ndarray, *rest: np.ndarray) -> list[np.ndarray]:
        mean, std = train.mean(axis=0, keepdims=True), train.std(axis=0, keepdims=True)
        std = np.where(std == 0, 1.0, std)
        return [((a - mean) / std).astype(dtype) for a in (train, *rest)]

    is_t = np.isin(y_full, targets)
    x8, y8 = x_full[~is_t], np.searchsorted(others, y_full[~is_t])
    x2, y2 = x_full[is_t], np.searchsorted(targets, y_full[is_t])
    x8_tr, x8_va, y8_tr, y8_va = train_test_split(x8, y8, test_size=args.pretrain_val_size, random_state=42,
                                                  stratify=y8)
    x8_tr, x8_va = scale(x8_tr, x8_va)
    x2_tr, x2_va, y2_tr, y2_va = train_test_split(x2, y2, test_size=args.target_val_size, random_state=42,
                                                  stratify=y2)
    te = np.isin(y_test, targets)
    x2_tr, x2_va, x2_te = scale(x2_tr, x2_va, x_test[te])
    y2_te = np.searchsorted(targets, y_test[te])

    def mlp(n_out: int) -> keras.Sequential:
        return keras.Sequential([keras.Input(shape=(28, 28)), keras.layers.Flatten(),
                                 *[keras.layers.Dense(100, activation="relu", kernel_initializer="he_normal")
                                   for _ in range(3)],
                                 keras.layers.Dense(n_out, activation="sigmoid" if n_out == 1 else "softmax")])

    def train(model: keras.Model, x: np.ndarray, y: np.ndarray, val: tuple, epochs: int) -> None:
        model.compile(loss="binary_crossentropy" if model.layers[-1].units == 1 else "sparse_categorical_crossentropy",
                      optimizer=keras.optimizers.SGD(learning_rate=1e-3), metrics=["accuracy"],
                      steps_per_execution=args.steps_per_execution)
        model.fit(x, y, epochs=epochs, batch_size=32, validation_data=val, verbose=0)

    e_pre, e_scr, e_head, e_fine = args.epochs
    idx = np.arange(len(y2_tr))
    acc: list[dict] = []
    for seed in args.seeds:
        t = time.perf_counter()
        keras.utils.set_random_seed(seed)
        pre = mlp(8)
        train(pre, x8_tr, y8_tr, (x8_va, y8_va), e_pre)
        body = pre.get_weights()[:-2]
        for fraction in sorted(set(args.fractions) | {1.0}):
            sub = idx if fraction >= 1 else np.sort(train_test_split(idx, train_size=fraction, random_state=seed,
                                                                     stratify=y2_tr)[0])
            keras.utils.set_random_seed(seed)
            scratch = mlp(1)
            train(scratch, x2_tr[sub], y2_tr[sub], (x2_va, y2_va), e_scr)
            acc.append({"model": "scratch", "seed": seed, "fraction": fraction,
                        "test_accuracy": float(scratch.evaluate(x2_te, y2_te, verbose=0)[1])})
            if fraction not in args.fractions:
                continue
            keras.utils.set_random_seed(seed)
            transfer = mlp(1)
            transfer.set_weights(body + transfer.get_weights()[-2:])  # the pretrained body, a new head
            for layer in transfer.layers[:-1]:
                layer.trainable = False
            train(transfer, x2_tr[sub], y2_tr[sub], (x2_va, y2_va), e_head)
            for layer in transfer.layers:
                layer.trainable = True
            train(transfer, x2_tr[sub], y2_tr[sub], (x2_va, y2_va), e_fine)
            acc.append({"model": "transfer", "seed": seed, "fraction": fraction,
                        "test_accuracy": float(transfer.evaluate(x2_te, y2_te, verbose=0)[1])})
        print(f"seed {seed}: {time.perf_counter() - t:.1f}s", flush=True)
    result = {"accuracies": acc, "wall_seconds": round(time.perf_counter() - T_START, 3)}
    print("RESULT " + json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()

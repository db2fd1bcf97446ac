"""One `model.fit` of the pipeline's pretraining step under one setting; prints a RESULT JSON line.

`run_benchmark.py --sections knobs` runs it once per setting, each in a fresh interpreter (TensorFlow's
thread pools are fixed when its runtime starts). Only the fit is timed. It answers which per-step
settings move the pipeline's training time without changing its maths:
- TensorFlow threads (1 or 2), `steps_per_execution` (1, 32, a whole epoch), validation batch size,
  XLA `jit_compile`.

    python benchmarks/fit_knobs.py --threads 1 --spe 32 --epochs 5 [--validation-batch 1024] [--jit]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--spe", type=int, default=32, help="steps_per_execution; 0 means one whole epoch")
    p.add_argument("--validation-batch", type=int, default=None, help="default: Keras' (the batch size)")
    p.add_argument("--jit", action="store_true", help="compile with jit_compile=True (XLA)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--verify-checksums", type=int, default=1)
    p.add_argument("--pretrain-val-size", type=int, default=5000)
    args = p.parse_args(argv)
    os.environ["TF_NUM_INTRAOP_THREADS"] = os.environ["TF_NUM_INTEROP_THREADS"] = str(args.threads)


    from include.config import ExperimentConfig
    from include.data import load_fashion_mnist, splits

    cfg = ExperimentConfig()
    ds = load_fashion_mnist(args.data_dir, verify_checksums=bool(args.verify_checksums))
    pretrain_labels = splits.class_labels(cfg.target_classes, cfg.pretrain_classes, ds.class_names)[1]
    x, y = splits.select_classes(ds.x_train, ds.y_train, pretrain_labels)
    tr, va = splits.stratified_holdout(y, args.pretrain_val_size, cfg.split_random_state)
    (x_tr, x_va), _ = splits.standardise(x[tr], x[va])
    y_enc = splits.encode_labels(y, pretrain_labels)

    import keras
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    from include.models.architectures import build_mlp

    keras.utils.set_random_seed(42)
    steps = -(-len(x_tr) // cfg.batch_size)
    spe = args.spe or steps
    model = build_mlp(len(pretrain_labels))
    model.compile(loss="sparse_categorical_crossentropy", optimizer=keras.optimizers.SGD(cfg.pretrain_lr),
                  metrics=["accuracy"], steps_per_execution=spe, jit_compile=args.jit)
    t0 = time.perf_counter()
    hist = model.fit(x_tr, y_enc[tr], epochs=args.epochs, batch_size=cfg.batch_size,
                     validation_data=(x_va, y_enc[va]), validation_batch_size=args.validation_batch, verbose=0)
    fit_s = time.perf_counter() - t0
    out = {"threads": args.threads, "steps_per_execution": spe, "validation_batch": args.validation_batch,
           "jit_compile": args.jit, "epochs": args.epochs, "steps_per_epoch": steps, "fit_seconds": round(fit_s, 3),
           "final_loss": float(hist.history["loss"][-1]), "final_val_accuracy": float(hist.history["val_accuracy"][-1])}
    print("RESULT " + json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()

"""Where batching seeds pays: K replicas in one graph against separate Keras fits, alternating.

Synthetic data of the seed's shapes (28x28 images), batch 32, SGD. Per round: one Keras `fit`
(one model, `steps_per_execution` = one epoch, the pipeline's old path), then one graph of K
replicas for each K. Prints seconds and seconds per replica, so a K whose per-replica time is
below Keras' one fit saves time. Threads are fixed to 1 (TensorFlow's pools are set at start).

    python benchmarks/replica_scaling.py --n 9000 --epochs 5 --outputs 1 --k 1 2 5 10 --rounds 2
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
    p.add_argument("--n", type=int, default=9000, help="training images")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--outputs", type=int, default=1, help="1: sigmoid head; 8: the pretraining softmax")
    p.add_argument("--k", type=int, nargs="+", default=[1, 2, 5, 10])
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args(argv)
    os.environ["TF_NUM_INTRAOP_THREADS"] = os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np

    from include.networks import build_mlp, compile_model
    from include.replicas import ReplicaMLP, epoch_orders

    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.n, 28, 28)).astype("float32")
    y = rng.integers(0, args.outputs if args.outputs > 1 else 2, args.n).astype("int32")

    def keras_fit() -> float:
        keras.utils.set_random_seed(0)
        model = compile_model(build_mlp(args.outputs), 1e-3, steps_per_execution=-(-args.n // 32))
        t = time.perf_counter()
        model.fit(x, y, epochs=args.epochs, batch_size=32, verbose=0)
        return time.perf_counter() - t

    def replicas(k: int) -> float:
        models = []
        for s in range(k):
            keras.utils.set_random_seed(s)
            models.append(build_mlp(args.outputs))
        net = ReplicaMLP.from_models(models, 1e-3)
        orders = np.stack([epoch_orders(s, "scaling", args.n, args.epochs) for s in range(k)])
        t = time.perf_counter()
        net.fit(x, y, orders, 32, "scaling")
        return time.perf_counter() - t

    rounds = []
    for _ in range(args.rounds):  # alternate, so a slow period hits every contender
        r = {"keras_fit_1": keras_fit(), **{f"replicas_k{k}": replicas(k) for k in args.k}}
        rounds.append(r)
        print("  ".join(f"{name}: {sec:.2f} s ({sec / (1 if name.startswith('keras') else int(name[10:])):.2f} "
                        "per model)" for name, sec in r.items()), flush=True)
    out = {"args": vars(args), "rounds": rounds}
    print("RESULT " + json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()

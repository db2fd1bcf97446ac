"""Where batching seeds pays: K replicas in graphs of at most N against separate Keras fits, alternating.

Synthetic data of the seed's shapes (28x28 images), batch 32, SGD, any registered architecture
(`--arch`). Per round: one Keras `fit` (one model, `steps_per_execution` = one epoch, the
tests' oracle), then K replicas for each K, split into graphs of at most `--max-per-graph`
replicas that run side by side on `--threads` threads, as the training tasks run them. One
warm-up epoch each (tracing) is not timed. Prints seconds and seconds per replica, so a K whose
per-replica time is below Keras' one fit saves time. TensorFlow runs one intra-op thread and
`--threads` inter-op threads (its pools are set at start).

    python benchmarks/replica_scaling.py --n 9000 --epochs 5 --outputs 1 --k 1 2 5 10 --rounds 2
    python benchmarks/replica_scaling.py --n 6300 --epochs 5 --k 1 5 --max-per-graph 3 --threads 2
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
    p.add_argument("--arch", default="mlp", help="a registered architecture (include/models/architectures.py)")
    p.add_argument("--max-per-graph", type=int, default=0, help="most replicas per graph; 0: all K in one")
    p.add_argument("--threads", type=int, default=1, help="graphs side by side (and TF inter-op threads)")
    args = p.parse_args(argv)
    os.environ["TF_NUM_INTRAOP_THREADS"] = "1"
    os.environ["TF_NUM_INTEROP_THREADS"] = str(args.threads)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np

    from include.models.architectures import build_model
    from include.models.replicas import ReplicaTrainer
    from include.models.training import epoch_orders, map_parallel, replica_groups
    from tests.keras_oracle import compile_model

    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.n, 28, 28)).astype("float32")
    y = rng.integers(0, args.outputs if args.outputs > 1 else 2, args.n).astype("int32")

    def keras_fit() -> float:
        keras.utils.set_random_seed(0)
        model = compile_model(build_model(args.arch, args.outputs), 1e-3, steps_per_execution=-(-args.n // 32))
        model.fit(x, y, epochs=1, batch_size=32, verbose=0)  # warm-up: tracing is not timed
        t = time.perf_counter()
        model.fit(x, y, epochs=args.epochs, batch_size=32, verbose=0)
        return time.perf_counter() - t

    def replicas(k: int) -> float:
        models = []
        for s in range(k):
            keras.utils.set_random_seed(s)
            models.append(build_model(args.arch, args.outputs))
        orders = np.stack([epoch_orders(s, "scaling", args.n, args.epochs + 1) for s in range(k)])
        groups = replica_groups(k, args.max_per_graph or k)
        nets = [ReplicaTrainer([models[i] for i in g], 1e-3) for g in groups]
        for g, net in zip(groups, nets):  # warm-up epoch: tracing is not timed
            net.fit(x, y, orders[g, :1], 32, "warm-up")

        def fit(j: int) -> None:
            nets[j].fit(x, y, orders[groups[j], 1:], 32, "scaling")

        t = time.perf_counter()
        map_parallel(fit, list(range(len(groups))), args.threads, cost=lambda j: len(groups[j]))
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

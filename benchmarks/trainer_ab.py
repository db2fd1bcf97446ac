"""The batched trainer of this tree against an older tree's, side by side, alternating.

Each contender runs in a fresh interpreter (one intra-op thread, `--threads` inter-op threads):
K replicas of the seed's MLP (binary head) on synthetic 28x28 images, batch 32, SGD; one warm-up
epoch (tracing), then `--epochs` timed epochs. Rounds alternate new and old, so a slow period of
a shared machine hits both. The old tree is any checkout whose trainer is include/replicas.py
(ReplicaMLP, the hand-written Dense graph, up to ab1bc53), e.g. `git worktree add /tmp/old ab1bc53`.
Also prints whether the two trained the same weights (a checksum of the last replica's head).

    python benchmarks/trainer_ab.py --old-tree /tmp/old --k 1 5 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = r"""
import json, os, sys, time
tree, k, n, epochs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
sys.path.insert(0, tree)
import numpy as np, keras
rng = np.random.default_rng(0)
x = rng.normal(size=(n, 28, 28)).astype("float32"); y = rng.integers(0, 2, n).astype("int32")
if os.path.exists(os.path.join(tree, "include", "models", "replicas.py")):
    from include.models.architectures import build_mlp
    from include.models.replicas import ReplicaTrainer
    from include.models.training import epoch_orders
    make = lambda models: ReplicaTrainer(models, 1e-3)
else:
    from include.networks import build_mlp
    from include.replicas import ReplicaMLP, epoch_orders
    make = lambda models: ReplicaMLP.from_models(models, 1e-3)
models = []
for s in range(k):
    keras.utils.set_random_seed(s); models.append(build_mlp(1))
net = make(models)
orders = np.stack([epoch_orders(s, "ab", n, epochs + 1) for s in range(k)])
net.fit(x, y, orders[:, :1], 32, "warm-up")
t = time.perf_counter(); net.fit(x, y, orders[:, 1:], 32, "ab"); sec = time.perf_counter() - t
net.to_models(models)
print("RESULT " + json.dumps({"seconds": sec, "checksum": float(np.abs(models[-1].get_weights()[-2]).sum())}))
"""


def run(tree: str, k: int, args: argparse.Namespace) -> dict:
    env = {**os.environ, "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": str(args.threads),
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run([sys.executable, "-c", PROBE, tree, str(k), str(args.n), str(args.epochs)], env=env,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(next(ln for ln in out.splitlines() if ln.startswith("RESULT "))[7:])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--old-tree", required=True, help="checkout of the older code, e.g. a git worktree of ab1bc53")
    p.add_argument("--k", type=int, nargs="+", default=[1, 5])
    p.add_argument("--n", type=int, default=6300, help="training images (6,300: the 70%% subset)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    runs: dict[str, list[dict]] = {}
    for _ in range(args.rounds):
        for k in args.k:
            for name, tree in (("new", str(ROOT)), ("old", args.old_tree)):
                r = run(tree, k, args)
                runs.setdefault(f"{name}_k{k}", []).append(r)
                print(f"{name} K={k}: {r['seconds']:.2f} s (checksum {r['checksum']:.6f})", flush=True)
    summary = {}
    for k in args.k:
        new = statistics.median(r["seconds"] for r in runs[f"new_k{k}"])
        old = statistics.median(r["seconds"] for r in runs[f"old_k{k}"])
        same = runs[f"new_k{k}"][0]["checksum"] == runs[f"old_k{k}"][0]["checksum"]
        summary[f"k{k}"] = {"new_median_s": round(new, 3), "old_median_s": round(old, 3),
                            "new_over_old": round(new / old, 3), "same_checksum": same}
        print(f"K={k}: new {new:.2f} s, old {old:.2f} s, new/old {new / old:.3f}, same weights: {same}")
    out = {"args": vars(args), "runs": runs, "summary": summary}
    print("RESULT " + json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()

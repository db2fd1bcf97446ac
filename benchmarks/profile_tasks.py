"""Where the training tasks' time goes, without Airflow: cProfile over one default run's task functions.

Runs split_data and every training task of a run in this process, as `airflow dags test` does,
under cProfile, and prints a breakdown: training loops, graph tracing, evaluation, model and array
I/O, the rest; and the run's transfer - scratch accuracy table. Fits run one at a time
(TL_TF_THREADS=1), so the seconds are the work's, not the wall time of two cores. Works on this
tree and on an older checkout (`--tree`, e.g. a `git worktree` of 25d7c8c, whose tasks are mapped
per seed). Airflow's own share comes from `make benchmark` (its time split), not from here.

    python benchmarks/profile_tasks.py [--tree DIR] [--conf '{"seeds": [42]}'] [--out profile.pstats]
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
import json
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

# Categories: (name, "file:function" endings whose cumulative time counts for it); an evaluation
# called inside a training loop counts for the loop.
CATEGORIES = [
    ("training loops (fit, tracing included)", ("replica_graph.py:fit", "replicas.py:fit", "trainer.py:fit")),
    ("evaluation", ("replica_graph.py:evaluate", "replicas.py:evaluate", "training.py:evaluate")),
    ("model I/O (save, load)", ("artifacts.py:save_model", "artifacts.py:load_model")),
    ("array and JSON I/O", ("artifacts.py:save_npy", "artifacts.py:write_json", "artifacts.py:load_npy")),
]
# Graph tracing happens inside the categories above: reported apart, as "of which".
TRACING = ("tracing_compilation.py:trace_function",)


def run(conf: dict, root: Path) -> dict[str, float]:
    from include.artifacts import RunPaths
    from include.config import ExperimentConfig
    from tasks import split_data, train

    cfg = ExperimentConfig.from_params(conf)
    paths = RunPaths.for_run("profile", root=root)
    times: dict[str, float] = {}

    def timed(name: str, fn, *a):
        t = time.perf_counter()
        out = fn(*a)
        times[name] = times.get(name, 0.0) + time.perf_counter() - t
        return out

    importlib.import_module("tensorflow")  # its import is not a task's cost under dags test after the first

    jobs = timed("split_data", split_data.run, cfg, paths)
    for job in jobs:
        if hasattr(train, "pretrain_chunk"):  # seed chunks
            pre = timed("pretrain", train.pretrain_chunk, cfg, job, paths)
            timed("train_scratch", train.scratch_for_chunk, cfg, job, paths)
            heads = timed("transfer.head", train.head_for_chunk, cfg, job, pre, paths)
            timed("transfer.finetune", train.finetune_for_chunk, cfg, job, heads, paths)
        else:  # one task per seed (the code before seed chunks)
            pre = timed("pretrain", train.pretrain, cfg, job["manifest"], int(job["seed"]), paths)
            timed("train_scratch", train.scratch_for_seed, cfg, job, paths)
            heads = timed("transfer.head", train.head_for_seed, cfg, job, pre, paths)
            timed("transfer.finetune", train.finetune_for_seed, cfg, job, heads, paths)
    return times


def saved_accuracies(root: Path) -> list[dict]:
    """(model, seed, fraction, test accuracy) of every scratch and transfer model, from its saved test
    predictions and the split's test labels (no report task runs here, so there is no metrics.json).
    Predictions are labels, or, in older checkouts, sigmoid probabilities."""
    import re

    import numpy as np

    (labels,) = {p.resolve() for p in root.rglob("target_y_test.npy")}
    y = np.load(labels)
    rows = []
    for path in sorted(root.glob("models/*/*.predictions.npy")):
        m = re.fullmatch(r"(scratch|transfer)_seed(\d+)_frac([\d.]+)\.predictions\.npy", path.name)
        if m:
            pred = np.load(path)
            pred = (pred.reshape(len(y), -1)[:, 0] > 0.5) if pred.dtype.kind == "f" else pred
            rows.append({"model": m[1], "seed": int(m[2]), "fraction": float(m[3]),
                         "test_accuracy": float(np.mean(pred.astype(int) == y))})
    return rows


def breakdown(stats: pstats.Stats, total: float) -> dict[str, float]:
    """Cumulative seconds per category, the rest, and two "of which" figures that overlap the
    categories: graph tracing, and the per-epoch validation passes inside the training loops (an
    evaluation called by a training loop counts for the loop, not for evaluation)."""
    out = {name: 0.0 for name, _ in CATEGORIES}
    fit_endings = CATEGORIES[0][1]
    tracing = validation = 0.0
    for (file, _, func), (_, _, _, cum, callers) in stats.stats.items():  # type: ignore[attr-defined]
        key = f"{Path(file).name}:{func}"
        tracing += cum if key.endswith(TRACING) else 0.0
        for name, endings in CATEGORIES:
            if key.endswith(endings):
                out[name] += cum
        if key.endswith(CATEGORIES[1][1]):
            inside = sum(c[3] for (f, _, fn), c in callers.items() if f"{Path(f).name}:{fn}".endswith(fit_endings))
            out[CATEGORIES[1][0]] -= inside
            validation += inside
    out["rest (data split, model building, Python)"] = total - sum(out.values())
    out["of which graph tracing"] = tracing
    out["of which per-epoch validation (inside the training loops)"] = validation
    return {k: round(v, 1) for k, v in out.items()}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tree", default=str(Path(__file__).resolve().parent.parent), help="the checkout to profile")
    p.add_argument("--conf", default="{}", help="settings as JSON (default: the default run)")
    p.add_argument("--out", default=None, help="also write the raw profile here (pstats)")
    args = p.parse_args(argv)
    # cProfile sees only the thread that enabled it: one fit at a time, all on this thread, so the
    # breakdown is of the work itself (the results do not depend on the number of fits at once).
    os.environ["TL_TF_THREADS"] = "1"
    sys.path.insert(0, str(Path(args.tree).resolve()))
    root = Path(tempfile.mkdtemp(prefix="tl-profile-"))
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    times = run(json.loads(args.conf), root)
    prof.disable()
    total = time.perf_counter() - t0
    if args.out:
        prof.dump_stats(args.out)
    from full_experiment import difference_table

    result = {"tree": args.tree, "total_seconds": round(total, 1),
              "task_seconds": {k: round(v, 1) for k, v in times.items()},
              "breakdown_seconds": breakdown(pstats.Stats(prof), total),
              "transfer_minus_scratch": difference_table(saved_accuracies(root))}
    print("RESULT " + json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()

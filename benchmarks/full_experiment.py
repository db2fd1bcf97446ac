"""`make benchmark` section `full`: the default nightly experiment, three ways, alternating.

- new:   this tree's pipeline, `airflow dags test` with the default settings (5 seeds, 4 fractions);
- old:   the same command on the code at an older commit (`--full-old`, default 25d7c8c, the landed
         code before batched replicas), checked out with `git worktree` into the work folder;
- keras: benchmarks/reference_full.py, the plain Keras recipe doing the same work.

Rounds alternate new, old, keras (`--full-rounds`), so a slow period of a shared machine hits all
three. Each gets its own AIRFLOW_HOME and artifact root. Accuracies come from each pipeline's saved
predictions and test labels, and from the plain script's RESULT line. Also printed: the compute
floor (sample passes x FLOP per pass / measured single-core throughput / cores) and how far each
contender is from it.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from run_benchmark import Ctx

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OLD = "25d7c8c"
# Today's report (README at 25d7c8c): transfer minus scratch, mean over 5 seeds and its 95% CI, points.
TODAY_CI = {0.05: (2.16, 0.84, 3.48), 0.1: (0.83, 0.24, 1.42), 0.3: (0.62, -0.17, 1.41), 0.7: (0.53, -0.07, 1.13)}
# Forward multiply-adds of the seed's MLP per image: 784x100, 100x100, 100x100, 100xout.
HIDDEN_MACS = 784 * 100 + 100 * 100 + 100 * 100


def training_passes(cfg: Any) -> dict[str, int]:
    """Training-sample passes (one image forward and backward once) of a run, per phase."""
    n_pre = cfg_counts(cfg)["pretrain"]
    n_tgt = cfg_counts(cfg)["target"]
    seeds = len(cfg.seeds)

    def sub(f: float) -> int:  # sklearn's train_size rounding
        return n_tgt if f >= 1 else int(f * n_tgt)

    return {"pretrain": seeds * n_pre * cfg.pretrain_epochs,
            "scratch": seeds * sum(sub(f) for f in cfg.scratch_fractions) * cfg.scratch_epochs,
            "transfer": seeds * sum(sub(f) for f in cfg.fractions) * (cfg.head_epochs + cfg.finetune_epochs)}


def cfg_counts(cfg: Any) -> dict[str, int]:
    """Training-set sizes of the default split (the real data: 48,000 and 12,000 images per side)."""
    return {"pretrain": 48000 - cfg.pretrain_val_size, "target": 12000 - cfg.target_val_size}


def flop_per_pass(n_out: int) -> float:
    """Forward and backward of one image: about 3x the forward's 2 FLOP per multiply-add."""
    return 3 * 2 * (HIDDEN_MACS + 100 * n_out)


THROUGHPUT_SNIPPET = r"""
import os, sys, time, json
os.environ["TF_NUM_INTRAOP_THREADS"] = os.environ["TF_NUM_INTEROP_THREADS"] = "1"
sys.path.insert(0, sys.argv[1])
import numpy as np, keras
from include.models.architectures import build_mlp
from include.models.replicas import ReplicaTrainer
from include.models.training import epoch_orders
from tests.keras_oracle import compile_model
rng = np.random.default_rng(0)
n, epochs = 9000, 3
x = rng.normal(size=(n, 28, 28)).astype("float32"); y = rng.integers(0, 2, n).astype("int32")
out = {}
keras.utils.set_random_seed(0)
m = compile_model(build_mlp(1), 1e-3, 2048)
m.fit(x, y, epochs=1, batch_size=32, verbose=0)
t = time.perf_counter(); m.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
out["keras_fit"] = n * epochs / (time.perf_counter() - t)
for k in (1, 5):
    models = []
    for s in range(k):
        keras.utils.set_random_seed(s); models.append(build_mlp(1))
    net = ReplicaTrainer(models, 1e-3)
    orders = np.stack([epoch_orders(s, "t", n, epochs + 1) for s in range(k)])
    net.fit(x, y, orders[:, :1], 32, "warm-up")
    t = time.perf_counter(); net.fit(x, y, orders[:, 1:], 32, "t")
    out[f"replicas_k{k}"] = k * n * epochs / (time.perf_counter() - t)
print("RESULT " + json.dumps(out))
"""


def single_core_throughput(ctx: Ctx) -> dict[str, Any]:
    """Training samples per second of batch-32 SGD steps on one thread: Keras fit and replicas."""
    out = subprocess.run([sys.executable, "-c", THROUGHPUT_SNIPPET, str(ROOT)], env=ctx.env, cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    rates = json.loads(next(ln for ln in out.splitlines() if ln.startswith("RESULT "))[len("RESULT "):])
    best = max(rates.values())
    return {"samples_per_second": {k: round(v) for k, v in rates.items()},
            "best_gflops": round(best * flop_per_pass(1) / 1e9, 1)}


def compute_floor(cfg: Any, throughput: dict[str, Any], cores: int) -> dict[str, Any]:
    passes = training_passes(cfg)
    flop = passes["pretrain"] * flop_per_pass(8) + (passes["scratch"] + passes["transfer"]) * flop_per_pass(1)
    one_core = flop / (throughput["best_gflops"] * 1e9)
    return {"sample_passes": passes, "total_passes": sum(passes.values()), "gflop": round(flop / 1e9, 1),
            "one_core_seconds": round(one_core, 1), "cores": cores, "floor_seconds": round(one_core / cores, 1)}


# -- accuracies -----------------------------------------------------------------------------------
def pipeline_accuracies(art: Path) -> list[dict[str, Any]]:
    """(model, seed, fraction, test accuracy) of every model, from the run's metrics.json (the run's
    teardown may have removed its data folder, test labels included)."""
    (metrics,) = art.glob("reports/*/metrics.json")
    return [{k: r[k] for k in ("model", "seed", "fraction", "test_accuracy")}
            for r in json.loads(metrics.read_text())["results"]]


def difference_table(rows: list[dict[str, Any]], confidence: float = 0.95,
                     against_today: bool = True) -> dict[str, Any]:
    """Per fraction: transfer minus scratch in points, mean over seeds and its t interval; and, for
    the default settings (`against_today`), whether the mean lies in today's report's interval."""
    from scipy import stats

    acc = {(r["model"], r["seed"], r["fraction"]): r["test_accuracy"] for r in rows}
    out = {}
    for frac in sorted({f for (m, _, f) in acc if m == "transfer"}):
        seeds = sorted(s for (m, s, f) in acc if m == "transfer" and f == frac and ("scratch", s, f) in acc)
        d = np.array([100 * (acc[("transfer", s, frac)] - acc[("scratch", s, frac)]) for s in seeds])
        ci = stats.ttest_1samp(d, 0).confidence_interval(confidence) if len(d) > 1 else None
        mean = float(d.mean())
        today = TODAY_CI.get(round(frac, 4)) if against_today else None
        out[f"{frac:g}"] = {"seeds": seeds, "mean_points": round(mean, 2),
                            "ci_points": [round(ci.low, 2), round(ci.high, 2)] if ci else None,
                            "scratch_mean": round(100 * float(np.mean([acc[("scratch", s, frac)] for s in seeds])), 2),
                            "transfer_mean": round(100 * float(np.mean([acc[("transfer", s, frac)]
                                                                        for s in seeds])), 2),
                            "inside_today_ci": None if today is None else today[1] <= mean <= today[2]}
    return out


# -- the three contenders ---------------------------------------------------------------------------
def old_tree(ctx: Ctx, commit: str) -> Path:
    """The code at `commit`, checked out with `git worktree` under the work folder."""
    dst = ctx.work / f"old-{commit}"
    subprocess.run(["git", "worktree", "add", "--detach", str(dst), commit], cwd=ROOT, check=True,
                   capture_output=True, text=True)
    return dst


def remove_tree(tree: Path) -> None:
    subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True, text=True)


def airflow_home(ctx: Ctx, name: str, tree: Path) -> dict[str, str]:
    """A migrated AIRFLOW_HOME of its own, with `tree`'s DAGs and code first on the path."""
    env = dict(ctx.env, AIRFLOW_HOME=str(ctx.work / f"airflow-{name}"), AIRFLOW__CORE__DAGS_FOLDER=str(tree / "dags"),
               PYTHONPATH=str(tree))
    subprocess.run([str(ctx.bin / "airflow"), "db", "migrate"], env=env, cwd=tree, check=True, capture_output=True)
    return env


def run_full_pipeline(ctx: Ctx, tag: str, env: dict[str, str], conf: dict[str, Any]) -> dict[str, Any]:
    from run_benchmark import DAG_ID, run_monitored

    art = ctx.work / f"art-{tag}"
    res = run_monitored([str(ctx.bin / "airflow"), "dags", "test", DAG_ID, "-c", json.dumps(conf)],
                        dict(env, TL_ARTIFACT_ROOT=str(art)), ctx.work / f"{tag}.log")
    if res["rc"] != 0:
        raise SystemExit(f"full run {tag} failed (exit {res['rc']}); see {res['log']}")
    res["accuracies"] = pipeline_accuracies(art)
    shutil.rmtree(art / "data", ignore_errors=True)
    return res


def run_full_keras(ctx: Ctx, tag: str, quick: bool, conf: dict[str, Any]) -> dict[str, Any]:
    from run_benchmark import run_monitored

    from include.config import ExperimentConfig

    cfg = ExperimentConfig(**{k: v for k, v in conf.items() if k != "data_dir"})
    cmd = [sys.executable, str(ROOT / "benchmarks" / "reference_full.py"), "--data-dir", str(ctx.data_dir),
           "--epochs", *map(str, (cfg.pretrain_epochs, cfg.scratch_epochs, cfg.head_epochs, cfg.finetune_epochs)),
           "--seeds", *map(str, cfg.seeds), "--fractions", *map(str, cfg.fractions),
           "--pretrain-val-size", str(cfg.pretrain_val_size), "--target-val-size", str(cfg.target_val_size)]
    res = run_monitored(cmd, ctx.env, ctx.work / f"{tag}.log")
    if res["rc"] != 0:
        raise SystemExit(f"plain Keras run {tag} failed (exit {res['rc']}); see {res['log']}")
    line = next(ln for ln in Path(res["log"]).read_text().splitlines()[::-1] if ln.startswith("RESULT "))
    res["accuracies"] = json.loads(line[len("RESULT "):])["accuracies"]
    return res


def full_section(ctx: Ctx, rounds: int, old_commit: str, step: Any, cores: int,
                 overrides: dict[str, Any] | None = None,
                 only: tuple[str, ...] = ("new", "old", "keras")) -> dict[str, Any]:
    """`overrides`: settings on top of the defaults (a quicker comparison, e.g. fewer epochs; the
    plain script gets the epochs, seeds and fractions); `only`: a subset of the contenders."""
    from include.config import ExperimentConfig

    conf = {**ctx.base_conf, **(overrides or {})}
    if ctx.quick:  # the harness's tiny data: two seeds, one fraction
        conf.update(seeds=[42, 7], fractions=[0.5])
    tree = old_tree(ctx, old_commit)
    try:
        envs = {"new": airflow_home(ctx, "new", ROOT), "old": airflow_home(ctx, "old", tree)}
        contenders = {"new": lambda tag: run_full_pipeline(ctx, tag, envs["new"], conf),
                      "old": lambda tag: run_full_pipeline(ctx, tag, envs["old"], conf),
                      "keras": lambda tag: run_full_keras(ctx, tag, ctx.quick, conf)}
        contenders = {k: v for k, v in contenders.items() if k in only}
        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in contenders}
        for i in range(rounds):  # alternate, so slow periods on a shared machine hit all three
            for name, run in contenders.items():
                runs[name].append(step(f"full: {name}, round {i + 1}", run, f"full-{name}{i + 1}"))
                # Each run's figures as they come: a long section cut short still leaves them.
                (ctx.work / "full-partial.json").write_text(json.dumps(runs, indent=1))
        throughput = step("single-core throughput", lambda: single_core_throughput(ctx))
    finally:
        remove_tree(tree)
    wall = {k: round(statistics.median(r["wall_seconds"] for r in v), 1) for k, v in runs.items()}
    cpu = {k: round(statistics.median(r["cpu_seconds"] for r in v), 1) for k, v in runs.items()}
    floor = compute_floor(ExperimentConfig(**{k: v for k, v in conf.items() if k != "data_dir"}), throughput, cores)
    pairs = [("new", "old"), ("new", "keras"), ("old", "keras")]
    ratios = {f"{a}_over_{b}": round(wall[a] / wall[b], 3) for a, b in pairs if a in wall and b in wall}
    ratios.update({f"{a}_over_{b}_cpu": round(cpu[a] / cpu[b], 3) for a, b in pairs if a in cpu and b in cpu})
    return {"old_commit": old_commit, "conf": conf, "rounds": rounds, "runs": runs, "median_wall_seconds": wall,
            "median_cpu_seconds": cpu, "ratios": ratios,
            "accuracy": {k: difference_table(v[0]["accuracies"], against_today=not overrides) for k, v in runs.items()},
            "throughput": throughput, "floor": floor,
            "over_floor": {k: round(w / floor["floor_seconds"], 2) for k, w in wall.items()}}


def full_rows(f: dict[str, Any]) -> list[tuple[str, str]]:
    w = f["median_wall_seconds"]
    rows = [("full: settings", json.dumps({k: v for k, v in f["conf"].items() if k != "data_dir"}) or "the defaults"),
            ("full: wall (median)", ", ".join(f"{k} {v:.0f} s" for k, v in w.items())
             + f"  (old = {f['old_commit']}; {f['rounds']} round(s), alternating)"),
            ("full: ratios", ", ".join(f"{k} {v:.3f}" for k, v in f["ratios"].items()) + "  (target new/old <= 0.5)")]
    fl = f["floor"]
    rows.append(("full: compute floor", f"{fl['total_passes'] / 1e6:.2f} M sample passes, {fl['gflop']:.0f} GFLOP "
                 f"at {f['throughput']['best_gflops']} GFLOP/s per core x {fl['cores']} cores "
                 f"= {fl['floor_seconds']:.0f} s; "
                 + ", ".join(f"{k} x{v}" for k, v in f["over_floor"].items()) + " of it"))
    for name, table in f["accuracy"].items():
        cells = [f"{frac}: {v['mean_points']:+.2f} [{v['ci_points'][0]:+.2f},{v['ci_points'][1]:+.2f}]"
                 + ("" if v["inside_today_ci"] is None else (" in" if v["inside_today_ci"] else " OUT"))
                 if v["ci_points"] else f"{frac}: {v['mean_points']:+.2f}" for frac, v in table.items()]
        rows.append((f"full: transfer-scratch, {name}", "; ".join(cells) + " (points; in/OUT: today's CI)"))
    return rows

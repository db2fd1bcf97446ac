"""`make benchmark`: the pipeline (B) against the seed's plain Keras recipe (A), on one machine.

Sections (all in one invocation, figures as ratios inside this run: the machine may be shared):
- ab:       A B A B ... (`--rounds`, default 2): wall seconds, medians, B/A, test accuracies (a gap
            above 0.5 points is flagged), peak RSS of every task process;
- parse:    DAG file import time, median of 20 fresh interpreters, and whether tensorflow got imported;
- seeds:    the pipeline with 1, 2 and 5 seeds (fractions [0.7]), `airflow dags test` (in-process);
- data:     the pipeline at 0.25, 0.5 and 1.0 of the training data (a stratified share of the IDX
            training images written to a temporary folder; validation hold-outs scaled alike);
- knobs:    one pretraining fit (5 epochs) per per-step setting, each in a fresh interpreter
            (benchmarks/fit_knobs.py): threads, steps_per_execution, validation batch, XLA;
- executor: 1 and 5 seeds through `airflow dags test --use-executor` with LocalExecutor and
            parallelism = cores, against a temporary `airflow api-server` (tasks in parallel processes);
- full:     the default nightly experiment (5 seeds, 4 fractions) three ways, alternating: this tree,
            the code at an older commit (`git worktree`) and the plain Keras recipe doing the same work;
            ratios, accuracy tables and the compute floor (benchmarks/full_experiment.py);
- makerun:  `make run` as users run it (quick: the seed's single comparison; default: 5 seeds, 4
            fractions) against the plain Keras scripts, alternating, with make run's wall time split
            into fixed cost, Airflow's per-task cost, training, report and the rest
            (benchmarks/make_run_section.py).

B is `airflow dags test <dag> -c '{"seeds": [42], "fractions": [0.7]}'`: the seed's single comparison.
Writes benchmarks/results/<timestamp>.json and prints a table. `--quick` runs every section on tiny
synthetic IDX files with one epoch per phase: a smoke test of the harness, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import Any

import numpy as np
import psutil

# The Makefile puts the repository on PYTHONPATH. tests.keras_oracle imports numpy only (TensorFlow lazily).
from deploy.processes import free_port, start, tree, wait_until
from tests.keras_oracle import VALIDATION_BATCH_SIZE

ROOT = Path(__file__).resolve().parent.parent

DAG_ID = "fashion_mnist_transfer_learning"
DAG_FILE = ROOT / "dags" / f"{DAG_ID}.py"
SEED_CONF = {"seeds": [42], "fractions": [0.7]}  # the seed notebook's single comparison
FIVE_SEEDS = [42, 1, 2, 3, 4]
ALL_SECTIONS = ("ab", "maths", "fast", "parse", "seeds", "data", "executor", "knobs", "full", "makerun")
# fit_knobs.py settings: (label, arguments). The first is the pipeline's own.
_SPE = 2048  # one epoch per Keras graph call: the Keras references' fastest setting (the pipeline uses no Keras fit)
_PIPELINE_KNOBS = ["--spe", str(_SPE), "--validation-batch", str(VALIDATION_BATCH_SIZE)]
KNOBS = [(f"pipeline: 1 thread, spe {_SPE} (one epoch), validation batch {VALIDATION_BATCH_SIZE}",
          ["--threads", "1", *_PIPELINE_KNOBS]),
         ("2 threads", ["--threads", "2", *_PIPELINE_KNOBS]),
         ("spe 1 (Keras default)", ["--threads", "1", "--spe", "1", "--validation-batch", "1024"]),
         ("spe 32", ["--threads", "1", "--spe", "32", "--validation-batch", "1024"]),
         ("validation batch 32 (Keras default)", ["--threads", "1", "--spe", str(_SPE)]),
         ("XLA jit_compile", ["--threads", "1", *_PIPELINE_KNOBS, "--jit"])]
FAST_CONF = {"batch_size": 128}  # an opt-in faster setting: 4x fewer SGD updates, so not the seed's maths
GAP_POINTS = 0.5  # accuracy gap between A and B that gets flagged, in points
# Tiny synthetic data for --quick: hold-outs and epochs that fit 200 images per class.
QUICK_CONF = {"pretrain_epochs": 1, "scratch_epochs": 1, "head_epochs": 1, "finetune_epochs": 1,
              "pretrain_val_size": 40, "target_val_size": 20, "verify_checksums": False}
FULL_VAL_SIZES = {"pretrain_val_size": 5000, "target_val_size": 3000}


def cores() -> int:
    from deploy.processes import usable_cores

    return usable_cores()


# -- process monitoring --------------------------------------------------------------------------
class Monitor(threading.Thread):
    """Samples the process tree under `pid` every `interval` s: each process's peak RSS and title.

    `label` names the task running in-process right now (set from the log); RSS samples of the
    root process are attributed to it, which gives per-task peaks for `airflow dags test`.
    """

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.procs: dict[int, dict[str, Any]] = {}
        self.label: str | None = None
        self.by_label: dict[str, int] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.interval)
        self.sample()

    def sample(self) -> None:
        for proc in tree(self.pid):
            try:
                with proc.oneshot():
                    rss_kib = proc.memory_info().rss // 1024
                    title = " ".join(proc.cmdline()).strip()
            except psutil.Error:
                continue
            rec = self.procs.setdefault(proc.pid, {"peak_kib": 0, "title": title})
            rec["peak_kib"] = max(rec["peak_kib"], rss_kib)
            if title.startswith("airflow worker -- "):  # the task runner's process title
                rec["title"] = title
            if proc.pid == self.pid and self.label:
                self.by_label[self.label] = max(self.by_label.get(self.label, 0), rss_kib)

    def stop(self) -> None:
        self._halt.set()
        self.join()


_START = re.compile(r"\[DAG TEST\] starting task_id=(\S+) map_index=(-?\d+)")
_END = re.compile(r"\[DAG TEST\] end task task_id=")
_TI = re.compile(r"task_id=([\w.]+) ti_id=([0-9a-f-]{36})")
_TI_REPR = re.compile(r"id=UUID\('([0-9a-f-]{36})'\), task_id='([\w.]+)'.*?map_index=(-?\d+)")
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z ")
_TASK_STARTED = re.compile(r"\] Task started ")
# One line per epoch from include/models/replicas.py: the phase, then seconds since that fit began.
_EPOCH = re.compile(r"\] (\S+\[[^\]]*\]) epoch \d+: .*\(([\d.]+)s\)")


def _stamp(line: str) -> float | None:
    from datetime import datetime

    m = _STAMP.match(line)
    return datetime.fromisoformat(m.group(1)).replace(tzinfo=UTC).timestamp() if m else None


def _union_seconds(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of (start, end) intervals: seconds in which at least one of them ran."""
    total, reach = 0.0, float("-inf")
    for begin, end in sorted(intervals):
        if end > reach:
            total += end - max(begin, reach)
            reach = end
    return total


def time_split(events: dict[str, float | None], fit_seconds: dict[str, float], t_begin: float,
               t_end: float, fit_ends: dict[str, float] | None = None) -> dict[str, Any] | None:
    """Where an in-process `airflow dags test` run's wall time went, from its log's timestamps.

    - airflow_start: process start to the first task (CLI import, DAG parse and sync to the database);
    - execution_api_start: the first task's start to its "Task started" (the in-process execution API);
    - airflow_exit: the last task's end to process exit (interpreter teardown);
    - training: seconds in which at least one fit ran (each fit from its last epoch line: the time
      it was logged at, minus the seconds since the fit began; fits side by side count once). Without
      the times (`fit_ends`), the fits' seconds summed;
    - training_summed: every fit's seconds summed (more than `training` when fits run side by side);
    - other: the rest (data split, TensorFlow import, evaluation, saving, report).
    """
    if not fit_seconds or None in events.values():
        return None  # not an in-process run with task logs on stdout (e.g. --use-executor)
    wall = t_end - t_begin
    parts = {"airflow_start": events["first_start"] - t_begin,
             "execution_api_start": events["first_task_started"] - events["first_start"],
             "airflow_exit": t_end - events["last_end"],
             "training": _union_seconds([(fit_ends[k] - v, fit_ends[k]) for k, v in fit_seconds.items()])
             if fit_ends else sum(fit_seconds.values())}
    parts["other"] = wall - sum(parts.values())
    parts["training_summed"] = sum(fit_seconds.values())
    return {**{k: round(v, 2) for k, v in parts.items()}, "fits": fit_seconds}


def run_monitored(cmd: list[str], env: dict[str, str], log_path: Path) -> dict[str, Any]:
    """Run `cmd`, stream its output to `log_path`, and return wall time, exit code and peak RSS."""
    ti_names: dict[str, str] = {}
    starts: dict[str, float] = {}
    task_seconds: dict[str, float] = {}
    events: dict[str, float | None] = {"first_start": None, "first_task_started": None, "last_end": None}
    fit_seconds: dict[str, float] = {}
    fit_ends: dict[str, float] = {}
    load_before = os.getloadavg()[0]
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t_begin = time.time()
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace")
        mon = Monitor(proc.pid)
        mon.start()
        for line in proc.stdout:  # type: ignore[union-attr]
            log.write(line)
            if m := _EPOCH.search(line):
                fit_seconds[m.group(1)] = float(m.group(2))
                if (stamp := _stamp(line)) is not None:
                    fit_ends[m.group(1)] = stamp
            if m := _START.search(line):
                events["first_start"] = events["first_start"] or _stamp(line)
                mon.label = m.group(1) + ("" if m.group(2) == "-1" else f"[{m.group(2)}]")
                starts[mon.label] = time.perf_counter()
            elif _TASK_STARTED.search(line):
                events["first_task_started"] = events["first_task_started"] or _stamp(line)
            elif _END.search(line):
                events["last_end"] = _stamp(line)
                if mon.label in starts:
                    task_seconds[mon.label] = round(time.perf_counter() - starts[mon.label], 2)
                mon.label = None
            if m := _TI_REPR.search(line):
                ti_names[m.group(1)] = m.group(2) + ("" if m.group(3) == "-1" else f"[{m.group(3)}]")
            elif (m := _TI.search(line)) and m.group(2) not in ti_names:
                mi = re.search(r"map_index=(-?\d+)", line)
                ti_names[m.group(2)] = m.group(1) + ("" if not mi or mi.group(1) == "-1" else f"[{mi.group(1)}]")
        rc = proc.wait()
        t_end = time.time()
        mon.stop()
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # every descendant that was waited for
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    tasks: dict[str, float] = {k: round(v / 1024, 1) for k, v in mon.by_label.items()}
    for rec in mon.procs.values():  # LocalExecutor: one process per task, titled with its TI id
        if rec["title"].startswith("airflow worker -- ") and not rec["title"].endswith("<idle>"):
            name = ti_names.get(rec["title"].split()[-1], rec["title"])
            tasks[name] = max(tasks.get(name, 0.0), round(rec["peak_kib"] / 1024, 1))
    root_peak = mon.procs.get(proc.pid, {}).get("peak_kib", 0)
    return {"wall_seconds": round(wall, 2), "cpu_seconds": round(cpu, 2), "rc": rc, "log": str(log_path),
            "load_avg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)], "task_seconds": task_seconds,
            "time_split": time_split(events, fit_seconds, t_begin, t_end,
                                     fit_ends if len(fit_ends) == len(fit_seconds) else None),
            "peak_rss_mib": {"process": round(root_peak / 1024, 1),
                             "max_any": round(max([r["peak_kib"] for r in mon.procs.values()] or [0]) / 1024, 1),
                             "tasks": tasks}}


# -- the two contenders --------------------------------------------------------------------------
def run_reference(ctx: Ctx, tag: str, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "reference_seed.py"), "--data-dir", str(ctx.data_dir), *extra]
    if ctx.quick:
        cmd += ["--epochs", "1", "1", "1", "1", "--pretrain-val-size", "40", "--target-val-size", "20"]
    res = run_monitored(cmd, ctx.env, ctx.work / f"{tag}.log")
    if res["rc"] != 0:
        raise SystemExit(f"reference run {tag} failed (exit {res['rc']}); see {res['log']}")
    line = next(ln for ln in Path(res["log"]).read_text().splitlines()[::-1] if ln.startswith("RESULT "))
    out = json.loads(line[len("RESULT "):])
    res["scratch_test_accuracy"] = out["scratch_test_accuracy"]
    res["transfer_test_accuracy"] = out["transfer_test_accuracy"]
    res["phase_seconds"] = out["phase_seconds"]
    return res


def pipeline_accuracies(art: Path, seeds: list[int], fraction: float = 0.7) -> dict[str, Any]:
    """Test accuracies from the run's metrics.json (its teardown may have removed the data folder)."""
    (metrics,) = art.glob("reports/*/metrics.json")
    acc = {(r["model"], int(r["seed"]), float(r["fraction"])): r["test_accuracy"]
           for r in json.loads(metrics.read_text())["results"]}
    return {f"{kind}_seed{seed}": float(acc[(kind, seed, float(frac))])
            for seed in seeds for kind, frac in (("scratch", 1), ("transfer", fraction))}


def run_pipeline(ctx: Ctx, tag: str, conf: dict[str, Any], executor: bool = False,
                 env: dict[str, str] | None = None) -> dict[str, Any]:
    art = ctx.work / f"art-{tag}"
    env = dict(env or ctx.env, TL_ARTIFACT_ROOT=str(art))
    conf = {**SEED_CONF, **ctx.base_conf, **conf}
    cmd = [str(ctx.bin / "airflow"), "dags", "test", *(["--use-executor"] if executor else []), DAG_ID,
           "-c", json.dumps(conf)]
    res = run_monitored(cmd, env, ctx.work / f"{tag}.log")
    if res["rc"] != 0:
        raise SystemExit(f"pipeline run {tag} failed (exit {res['rc']}); see {res['log']}")
    acc = pipeline_accuracies(art, conf["seeds"])
    res["conf"] = conf
    res["scratch_test_accuracy"] = acc[f"scratch_seed{conf['seeds'][0]}"]
    res["transfer_test_accuracy"] = acc[f"transfer_seed{conf['seeds'][0]}"]
    res["accuracies"] = acc
    shutil.rmtree(art / "data", ignore_errors=True)  # the .npy splits are large; keep logs and reports
    return res


# -- other measurements --------------------------------------------------------------------------
# Times Airflow's own import apart: a DAG processor has it loaded already; the DAG file's cost is the rest.
PARSE_SNIPPET = """
import sys, time, importlib.util
t0 = time.perf_counter()
import airflow.sdk, pendulum
t1 = time.perf_counter()
spec = importlib.util.spec_from_file_location("dagfile", sys.argv[1])
mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
t2 = time.perf_counter()
print(t2 - t1, t2 - t0, int("tensorflow" in sys.modules or "keras" in sys.modules))
"""


def parse_time(ctx: Ctx, n: int) -> dict[str, Any]:
    """Import the DAG file in `n` fresh interpreters; time the import alone (not interpreter start)."""
    times, totals, tf_loaded = [], [], False
    for _ in range(n):
        out = subprocess.run([sys.executable, "-c", PARSE_SNIPPET, str(DAG_FILE)], env=ctx.env, cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
        times.append(float(out[0]))
        totals.append(float(out[1]))
        tf_loaded |= out[2] == "1"
    return {"n": n, "median_seconds": round(statistics.median(times), 4), "min_seconds": round(min(times), 4),
            "max_seconds": round(max(times), 4),
            "median_with_airflow_import_seconds": round(statistics.median(totals), 4),
            "tensorflow_imported": tf_loaded}


def write_training_share(src: Path, dst: Path, share: float, seed: int = 0) -> Path:
    """Copy the IDX files with a stratified `share` of the training images (test set unchanged)."""
    from include.data import FILES, read_idx, write_idx

    dst.mkdir(parents=True, exist_ok=True)
    x, _ = read_idx(src / FILES["train_images"])
    y, _ = read_idx(src / FILES["train_labels"])
    rng = np.random.default_rng(seed)
    keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(y == c))[:round(share * (y == c).sum())]
                                   for c in np.unique(y)]))
    write_idx(dst / FILES["train_images"], x[keep])
    write_idx(dst / FILES["train_labels"], y[keep])
    for key in ("test_images", "test_labels"):
        shutil.copyfile(src / FILES[key], dst / FILES[key])
    return dst


def fit_knobs(ctx: Ctx, rounds: int) -> dict[str, Any]:
    """Each setting of KNOBS in a fresh interpreter, `rounds` times interleaved; median fit seconds
    against the pipeline's setting (one sample per setting moved by 10% between runs)."""
    data = ["--data-dir", str(ctx.data_dir), "--epochs", "1" if ctx.quick else "5"]
    if ctx.quick:
        data += ["--verify-checksums", "0", "--pretrain-val-size", str(QUICK_CONF["pretrain_val_size"])]
    samples: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in KNOBS}
    for i in range(rounds):
        for label, knob in KNOBS:
            print(f"  knob round {i + 1}: {label} ...", end=" ", flush=True)
            out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "fit_knobs.py"), *knob, *data],
                                 env=ctx.env, cwd=ROOT, capture_output=True, text=True)
            line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if out.returncode != 0 or line is None:
                raise SystemExit(f"fit_knobs.py {' '.join(knob)} failed (exit {out.returncode}):\n{out.stderr[-2000:]}")
            samples[label].append(json.loads(line[len("RESULT "):]))
            print(f"{samples[label][-1]['fit_seconds']} s", flush=True)
    runs = {label: {**s[0], "fit_seconds": round(statistics.median(x["fit_seconds"] for x in s), 3),
                    "fit_seconds_all": [x["fit_seconds"] for x in s]} for label, s in samples.items()}
    base = runs[KNOBS[0][0]]
    for r in runs.values():
        r["over_pipeline"] = round(r["fit_seconds"] / base["fit_seconds"], 3)
        r["same_final_loss"] = r["final_loss"] == base["final_loss"]
    return {"epochs": base["epochs"], "steps_per_epoch": base["steps_per_epoch"], "rounds": rounds, "runs": runs}


def with_api_server(ctx: Ctx, body: Callable[[dict[str, str]], Any]) -> Any:
    """Run `body(env)` with a temporary api-server (LocalExecutor's workers report to it)."""
    port = free_port()
    parallel = cores()
    env = dict(ctx.env, AIRFLOW__CORE__EXECUTOR="LocalExecutor", AIRFLOW__CORE__PARALLELISM=str(parallel),
               AIRFLOW__API_AUTH__JWT_SECRET="benchmark-only-" + os.urandom(8).hex(),
               AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{port}/execution/",
               TL_TF_THREADS=str(max(1, cores() // parallel)))
    server = start("api-server", [str(ctx.bin / "airflow"), "api-server", "--host", "127.0.0.1", "--port", str(port)],
                   ctx.work / "api-server.log", env=env, cwd=ROOT)
    try:
        wait_until(lambda: _http_ok(f"http://127.0.0.1:{port}/execution/health"), 180, "the api-server's health check",
                   watch=[server])
        return body(env)
    finally:
        server.stop()


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as r:
        return r.status == 200


# -- orchestration -------------------------------------------------------------------------------
class Ctx:
    def __init__(self, args: argparse.Namespace) -> None:
        self.quick = args.quick
        self.bin = Path(sys.executable).parent
        self.work = Path(tempfile.mkdtemp(prefix="tl-benchmark-"))
        self.env = dict(os.environ, AIRFLOW_HOME=str(self.work / "airflow-home"),
                        AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"), AIRFLOW__CORE__LOAD_EXAMPLES="False",
                        AIRFLOW__CORE__UNIT_TEST_MODE="False", TF_CPP_MIN_LOG_LEVEL="2",
                        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        self.env.pop("TL_ARTIFACT_ROOT", None)
        if args.quick:
            from tests.synthetic import write_tiny_fashion_mnist

            self.data_dir = write_tiny_fashion_mnist(self.work / "tiny-idx", train_per_class=200, test_per_class=20)
            self.base_conf: dict[str, Any] = {**QUICK_CONF, "data_dir": str(self.data_dir)}
        else:
            from include.data import find_data_dir

            self.data_dir = find_data_dir(args.data_dir, allow_download=False)
            self.base_conf = {"data_dir": str(self.data_dir)}


def split_summary(b_runs: list[dict[str, Any]], a_wall: float) -> dict[str, Any] | None:
    """Median of each part of B's wall time, and what B/A would be without Airflow's fixed cost."""
    splits = [r["time_split"] for r in b_runs if r.get("time_split")]
    if not splits:
        return None
    med = {k: round(statistics.median(sp[k] for sp in splits), 2)
           for k in ("airflow_start", "execution_api_start", "airflow_exit", "training", "other")}
    fixed = med["airflow_start"] + med["execution_api_start"] + med["airflow_exit"]
    total = sum(med.values())
    return {"median_seconds": med, "airflow_fixed_seconds": round(fixed, 2),
            "B_without_airflow_fixed_over_A": round((total - fixed) / a_wall, 3),
            "B_training_only_over_A": round(med["training"] / a_wall, 3)}


def ratios(runs: dict[str, dict[str, Any]], base: str) -> dict[str, dict[str, float]]:
    return {f"{kind}_ratio": {k: round(v[f"{kind}_seconds"] / runs[base][f"{kind}_seconds"], 2)
                              for k, v in runs.items()}
            for kind in ("wall", "cpu")}


def median_of(runs: list[dict[str, Any]], key: str) -> float:
    return round(statistics.median(r[key] for r in runs), 2)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description="Benchmark the pipeline against the seed's plain Keras recipe.")
    p.add_argument("--quick", action="store_true", help="tiny synthetic data, 1 epoch: a smoke run of the harness")
    p.add_argument("--rounds", type=int, default=2, help="A B rounds (medians are reported)")
    p.add_argument("--sections", default=None, help=f"comma list of {','.join(ALL_SECTIONS)} (default: all)")
    p.add_argument("--parse-runs", type=int, default=20)
    p.add_argument("--knob-rounds", type=int, default=3, help="rounds of the knobs section (medians are reported)")
    p.add_argument("--data-dir", default=None, help="Fashion-MNIST IDX folder (default: the pipeline's search)")
    p.add_argument("--full-rounds", type=int, default=1, help="rounds of the full section (new, old, plain Keras)")
    p.add_argument("--full-old", default="25d7c8c", help="older commit the full section compares with")
    p.add_argument("--full-conf", default="{}", help="settings over the defaults for the full section, as JSON "
                   "(e.g. fewer epochs for a quicker comparison)")
    p.add_argument("--full-only", default="new,old,keras", help="contenders of the full section, comma list")
    p.add_argument("--makerun-rounds", type=int, default=2, help="pairs of the makerun section's quick run")
    p.add_argument("--makerun-no-default", action="store_true",
                   help="makerun section: only the quick run, not the default experiment (~10 min a pair)")
    p.add_argument("--makerun-preload-arm", action="store_true",
                   help="makerun section: also make run with TL_WORKER_PRELOAD=0 in each round "
                   "(deploy/preloading_executor.py)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    sections = set((args.sections or ",".join(ALL_SECTIONS)).split(","))
    unknown = sections - set(ALL_SECTIONS)
    if unknown:
        p.error(f"unknown sections {sorted(unknown)}; choose from {','.join(ALL_SECTIONS)}")
    if args.rounds < 1:
        p.error("--rounds must be >= 1")
    if args.knob_rounds < 1:
        p.error("--knob-rounds must be >= 1")
    if args.full_rounds < 1:
        p.error("--full-rounds must be >= 1")
    if args.makerun_rounds < 1:
        p.error("--makerun-rounds must be >= 1")

    ctx = Ctx(args)
    print(f"benchmark: work folder {ctx.work} ({'quick, synthetic data' if ctx.quick else 'real data'}), "
          f"{cores()} cores", flush=True)
    migrate = subprocess.run([str(ctx.bin / "airflow"), "db", "migrate"], env=ctx.env, cwd=ROOT, capture_output=True,
                             text=True)
    if migrate.returncode != 0:
        raise SystemExit("airflow db migrate failed:\n" + migrate.stdout[-2000:] + migrate.stderr[-2000:])

    result: dict[str, Any] = {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "quick": ctx.quick, "data_dir": str(ctx.data_dir),
        "machine": {"cores": cores(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "load_avg_start": os.getloadavg()},
        "commands": {"A": "python benchmarks/reference_seed.py",
                     "B": f"airflow dags test {DAG_ID} -c '{json.dumps(SEED_CONF)}'"},
    }

    def step(name: str, fn: Callable[..., dict[str, Any]], *args: Any, **kwargs: Any) -> dict[str, Any]:
        print(f"  {name} ...", end=" ", flush=True)
        t = time.perf_counter()
        r = fn(*args, **kwargs)
        print(f"{r.get('wall_seconds', r.get('median_seconds')) or round(time.perf_counter() - t, 2)} s", flush=True)
        return r

    if "ab" in sections:
        a_runs, b_runs = [], []
        for i in range(args.rounds):  # alternate, so slow periods on a shared machine hit both
            a_runs.append(step(f"A round {i + 1}", run_reference, ctx, f"A{i + 1}"))
            b_runs.append(step(f"B round {i + 1}", run_pipeline, ctx, f"B{i + 1}", {}))
        a_wall, b_wall = median_of(a_runs, "wall_seconds"), median_of(b_runs, "wall_seconds")
        a_cpu, b_cpu = median_of(a_runs, "cpu_seconds"), median_of(b_runs, "cpu_seconds")
        gaps = {k: round(100 * abs(a_runs[0][k] - b_runs[0][k]), 3)
                for k in ("scratch_test_accuracy", "transfer_test_accuracy")}
        result["ab"] = {"A": a_runs, "B": b_runs, "A_median_seconds": a_wall, "B_median_seconds": b_wall,
                        "B_over_A": round(b_wall / a_wall, 3), "A_median_cpu_seconds": a_cpu,
                        "B_median_cpu_seconds": b_cpu, "B_over_A_cpu": round(b_cpu / a_cpu, 3),
                        "accuracy_gap_points": gaps,
                        "accuracy_gap_flag": any(g > GAP_POINTS for g in gaps.values()),
                        "max_task_peak_rss_mib": max(max(r["peak_rss_mib"]["tasks"].values() or [0]) for r in b_runs)}
        result["ab"]["B_time_split"] = split_summary(b_runs, a_wall)
    if "maths" in sections:  # the pipeline's speed-ups inside the plain script: same accuracies?
        base = result["ab"]["A"][0] if "ab" in sections else step("A", run_reference, ctx, "A-maths-base")
        fast = step("A with float32 + steps_per_execution 2048", run_reference, ctx, "A-maths",
                    ("--float32", "--steps-per-execution", "2048"))
        result["maths"] = {"reference": {k: base[k] for k in ("scratch_test_accuracy", "transfer_test_accuracy")},
                           "float32_pipeline_spe": fast, "identical": all(
                               base[k] == fast[k] for k in ("scratch_test_accuracy", "transfer_test_accuracy"))}
    if "fast" in sections:
        fast = step(f"B opt-in {FAST_CONF}", run_pipeline, ctx, "B-fast", FAST_CONF)
        result["fast"] = {"conf": FAST_CONF, "run": fast}
        if "ab" in sections:
            b = result["ab"]["B"][0]
            result["fast"]["accuracy_change_points"] = {
                k: round(100 * (fast[k] - b[k]), 3) for k in ("scratch_test_accuracy", "transfer_test_accuracy")}
            result["fast"]["wall_over_B"] = round(fast["wall_seconds"] / result["ab"]["B_median_seconds"], 3)
    if "parse" in sections:
        result["parse"] = step(f"DAG parse x{args.parse_runs}", parse_time, ctx, args.parse_runs)
    if "seeds" in sections:
        # A fresh 1-seed baseline next to the others: the machine's load drifts between sections.
        seeds = {str(n): step(f"{n} seed(s)", run_pipeline, ctx, f"seeds{n}", {"seeds": FIVE_SEEDS[:n]})
                 for n in (1, 2, 5)}
        result["seeds"] = {"runs": seeds, **ratios(seeds, "1")}
    if "data" in sections:
        data = {}
        vals = QUICK_CONF if ctx.quick else FULL_VAL_SIZES
        for share in (1.0, 0.5, 0.25):
            folder = (write_training_share(ctx.data_dir, ctx.work / f"share-{share}", share) if share < 1
                      else ctx.data_dir)
            conf = {"data_dir": str(folder), "verify_checksums": share == 1.0 and not ctx.quick,
                    "pretrain_val_size": round(vals["pretrain_val_size"] * share),
                    "target_val_size": round(vals["target_val_size"] * share)}
            data[str(share)] = step(f"data share {share}", run_pipeline, ctx, f"share{share}", conf)
        result["data"] = {"runs": data, **ratios(data, "1.0")}
    if "executor" in sections:
        def executor_runs(env: dict[str, str]) -> dict[str, Any]:
            runs = {str(n): step(f"LocalExecutor {n} seed(s)", run_pipeline, ctx, f"executor{n}",
                                 {"seeds": FIVE_SEEDS[:n]}, executor=True, env=env) for n in (1, 5)}
            return {"parallelism": cores(), "runs": runs, **ratios(runs, "1")}

        result["executor"] = with_api_server(ctx, executor_runs)
    if "knobs" in sections:
        result["knobs"] = fit_knobs(ctx, 1 if ctx.quick else args.knob_rounds)
    if "full" in sections:
        from full_experiment import full_section

        result["full"] = full_section(ctx, args.full_rounds, args.full_old, step, cores(),
                                      overrides=json.loads(args.full_conf), only=tuple(args.full_only.split(",")))

    if "makerun" in sections:
        from make_run_section import make_run_section

        result["makerun"] = make_run_section(ctx, args.makerun_rounds, step, not args.makerun_no_default,
                                             ctx.base_conf, args.makerun_preload_arm)

    result["machine"]["load_avg_end"] = os.getloadavg()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    out_path = out_dir / f"{time.strftime('%Y%m%dT%H%M%S')}{'-quick' if ctx.quick else ''}.json"
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"\nwritten: {out_path}\nlogs:    {ctx.work}")
    return result


def table(r: dict[str, Any]) -> str:
    rows = [("machine", f"{r['machine']['cores']} cores, load {r['machine']['load_avg_start'][0]:.1f} at start"
             + (" (QUICK: synthetic data, 1 epoch; not a measurement)" if r["quick"] else ""))]
    if ab := r.get("ab"):
        a, b = ab["A"][0], ab["B"][0]
        walls = {k: [x["wall_seconds"] for x in ab[k]] for k in ("A", "B")}
        rows += [("A reference wall (median)", f"{ab['A_median_seconds']:.1f} s  {walls['A']}"),
                 ("B pipeline wall (median)", f"{ab['B_median_seconds']:.1f} s  {walls['B']}"),
                 ("B/A", f"{ab['B_over_A']:.3f} wall (target <= 0.5), {ab['B_over_A_cpu']:.3f} CPU "
                  f"(A {ab['A_median_cpu_seconds']:.0f} s, B {ab['B_median_cpu_seconds']:.0f} s CPU)"),
                 ("B time per task", ", ".join(f"{k} {v:.1f}" for k, v in b["task_seconds"].items()) + " s"),
                 *([("B wall split (median)", ", ".join(f"{k} {v:.1f}" for k, v in sp["median_seconds"].items())
                     + " s"),
                    ("B/A without Airflow's fixed", f"{sp['B_without_airflow_fixed_over_A']:.3f} (fixed: start, "
                     f"execution API, exit = {sp['airflow_fixed_seconds']:.1f} s); training alone / A: "
                     f"{sp['B_training_only_over_A']:.3f}")] if (sp := ab.get("B_time_split")) else []),
                 ("test acc scratch A | B", f"{a['scratch_test_accuracy']:.4f} | {b['scratch_test_accuracy']:.4f}"),
                 ("test acc transfer A | B", f"{a['transfer_test_accuracy']:.4f} | {b['transfer_test_accuracy']:.4f}"),
                 ("accuracy gap > 0.5 pt", "YES: CHECK" if ab["accuracy_gap_flag"] else "no"),
                 ("peak RSS A process", f"{a['peak_rss_mib']['max_any']:.0f} MiB"),
                 ("peak RSS B, per task", ", ".join(f"{k} {v:.0f}" for k, v in b["peak_rss_mib"]["tasks"].items())
                  + " MiB")]
    if pa := r.get("parse"):
        rows.append((f"DAG parse (median of {pa['n']})",
                     f"{pa['median_seconds']:.3f} s (with airflow.sdk import: "
                     f"{pa['median_with_airflow_import_seconds']:.2f} s), "
                     f"tensorflow imported: {pa['tensorflow_imported']}"))
    if m := r.get("maths"):
        f = m["float32_pipeline_spe"]
        rows.append(("A, float32 + spe 2048", f"scratch {f['scratch_test_accuracy']:.4f}, transfer "
                     f"{f['transfer_test_accuracy']:.4f}: identical to A: {m['identical']}; {f['wall_seconds']:.0f} s"))
    if fa := r.get("fast"):
        ch = fa.get("accuracy_change_points", {})
        rows.append((f"B opt-in {json.dumps(fa['conf'])}",
                     f"{fa['run']['wall_seconds']:.0f} s (x{fa.get('wall_over_B', '?')} of B)"
                     f", accuracy change vs B in points: {ch}"))

    def scaling(title: str, sec: dict[str, Any]) -> None:
        rows.append((title, "  ".join(f"{k}: {v['wall_seconds']:.0f} s x{sec['wall_ratio'][k]} "
                                      f"(CPU x{sec['cpu_ratio'][k]})" for k, v in sec["runs"].items())))

    if s := r.get("seeds"):
        scaling("seeds 1/2/5 (in-process)", s)
    if d := r.get("data"):
        scaling("data share 1.0/0.5/0.25", d)
    if e := r.get("executor"):
        scaling(f"seeds 1/5, LocalExecutor p={e['parallelism']}", e)
    if kn := r.get("knobs"):
        for label, run in kn["runs"].items():
            rows.append((f"fit knob: {label}", f"{run['fit_seconds']:.2f} s (median of {kn['rounds']}) for "
                         f"{kn['epochs']} pretrain epochs "
                         f"(x{run['over_pipeline']}), same final loss: {run['same_final_loss']}"))
    if fu := r.get("full"):
        from full_experiment import full_rows

        rows += full_rows(fu)
    if mr := r.get("makerun"):
        from make_run_section import make_run_rows

        rows += make_run_rows(mr)
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


if __name__ == "__main__":
    main()

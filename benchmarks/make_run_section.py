"""The `makerun` section of `make benchmark`: `make run` as users run it, against the plain Keras recipe.

- quick:   `make run RUN_CONF='{"seeds":[42],"fractions":[0.7]}'` against benchmarks/reference_seed.py
           (steps_per_execution 32), alternating, `rounds` pairs; medians and the ratio;
- default: `make run` with the default params (5 seeds, 4 fractions) against
           benchmarks/reference_full.py doing the same work (`--makerun-default`; ~10 min a pair).

With `preload_arm`, each round of the quick and default pairs also runs `make run` with
TL_WORKER_PRELOAD=0 (LocalExecutor workers that do not import TensorFlow for their tasks,
deploy/preloading_executor.py) right after the default one: the executor's effect, side by side.

Each make run's wall time is split from its own records (the task instances' start and end times in
the SQLite database, its task log files and the `[make run]` milestones in its full log):
- fixed:    before the first task starts + after the last task ends (make, components, trigger; stop);
- airflow_per_task: Airflow's start-up inside each task (process start to the end of "Pre Execute":
            DAG parse, bundle) plus the scheduler's hand-off gaps between tasks;
- training: seconds in which at least one fit ran (from the per-epoch lines: each fit's last line's
            time minus the seconds since that fit began);
- report:   compare_report, promote_champion and apply_retention;
- other:    the rest, in task bodies (TensorFlow import, data loading, evaluation, saving).
"""

from __future__ import annotations

import json
import re
import resource
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DAG_ID = "fashion_mnist_transfer_learning"
SEED_CONF = {"seeds": [42], "fractions": [0.7]}
REPORT_TASKS = ("compare_report", "promote_champion", "apply_retention")
# include/models/replicas.py: "<phase>[...] epoch N: ... (12.3s)", seconds since the fit began.
EPOCH = re.compile(r"^(\S+\[[^\]]*\]) epoch \d+: .*\(([\d.]+)s\)$")
MARK = re.compile(r"^\[make run\] (.+) (\d{4}-\d\d-\d\dT[\d:.]+\+00:00)$")


def _children_cpu() -> float:
    """User + system seconds of every waited-for descendant so far (the components and tasks included)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _utc(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).replace(tzinfo=UTC).timestamp()


def _union(intervals: list[tuple[float, float]]) -> float:
    total, reach = 0.0, float("-inf")
    for begin, end in sorted(intervals):
        if end > reach:
            total += end - max(begin, reach)
            reach = end
    return total


def task_log_events(logs: Path, run_id: str) -> dict[str, list[tuple[float, str]]]:
    """(time, event) per task attempt log of the run, keyed by "task[map_index]"."""
    found: dict[str, list[tuple[float, str]]] = {}
    for path in sorted((logs / f"dag_id={DAG_ID}" / f"run_id={run_id}").glob("task_id=*/**/attempt=*.log")):
        parts = path.relative_to(logs / f"dag_id={DAG_ID}" / f"run_id={run_id}").parts
        mapped = [p.removeprefix("map_index=") for p in parts if p.startswith("map_index=")]
        key = parts[0].removeprefix("task_id=") + (f"[{mapped[0]}]" if mapped else "")
        events = found.setdefault(key, [])
        for raw in path.read_text(errors="replace").splitlines():
            try:
                item = json.loads(raw)
                events.append((_utc(item["timestamp"]), str(item.get("event", ""))))
            except (ValueError, KeyError, TypeError):
                continue
    return found


def split_make_run(home: Path, run_id: str, t_begin: float, t_end: float) -> dict[str, Any]:
    """Where one make run's wall time went (see the module docstring), in seconds."""
    with sqlite3.connect(f"file:{home / 'airflow.db'}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT task_id, map_index, start_date, end_date FROM task_instance "
                            "WHERE dag_id = ? AND run_id = ? AND start_date IS NOT NULL", (DAG_ID, run_id)).fetchall()
    tasks = {t + (f"[{i}]" if i >= 0 else ""): (_utc(s), _utc(e)) for t, i, s, e in rows}
    first, last = min(s for s, _ in tasks.values()), max(e for _, e in tasks.values())
    events = task_log_events(home / "logs", run_id)
    fits: list[tuple[float, float]] = []
    airflow_in_task = 0.0
    for key, (start, _end) in tasks.items():
        evs = events.get(key, [])
        pre_end = next((t for t, e in evs if e == "::endgroup::"), None)  # end of "Pre Execute"
        airflow_in_task += (pre_end - start) if pre_end else 0.0
        last_epoch: dict[str, tuple[float, float]] = {}
        for t, e in evs:
            if m := EPOCH.match(e):
                last_epoch[m.group(1)] = (t, float(m.group(2)))
        fits += [(t - secs, t) for t, secs in last_epoch.values()]
    busy = _union(list(tasks.values()))
    marks = {}
    full_log = home / "make-run" / f"{run_id}.log"
    if full_log.is_file():
        for line in full_log.read_text(errors="replace").splitlines():
            if m := MARK.match(line):
                marks[m.group(1)] = round(_utc(m.group(2)) - t_begin, 2)
    parts = {"fixed_before_first_task": first - t_begin, "fixed_after_last_task": t_end - last,
             "airflow_per_task": airflow_in_task + ((last - first) - busy),
             "training": _union(fits),
             "report": _union([tasks[k] for k in tasks if k.split("[")[0] in REPORT_TASKS])}
    parts["other_in_tasks"] = (t_end - t_begin) - sum(parts.values())
    out = {k: round(v, 2) for k, v in parts.items()}
    out["fixed"] = round(parts["fixed_before_first_task"] + parts["fixed_after_last_task"], 2)
    out["task_seconds"] = {k: round(e - s, 2) for k, (s, e) in sorted(tasks.items(), key=lambda kv: kv[1])}
    out["marks_since_make_started"] = marks
    return out


def _make_env(ctx: Any, art: Path) -> dict[str, str]:
    env = {k: v for k, v in ctx.env.items() if not k.startswith(("MAKE", "MFLAGS"))}
    env["TL_ARTIFACT_ROOT"] = str(art)
    return env


def run_make_run(ctx: Any, tag: str, conf: dict[str, Any], art: Path | None = None,
                 extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """`make run RUN_CONF=...` on the benchmark's AIRFLOW_HOME, its own artifact root (or `art`, the one a
    running `make airflow` writes to); wall from outside."""
    art = art or ctx.work / f"art-{tag}"
    env = {**_make_env(ctx, art), **(extra_env or {})}
    home = Path(env["AIRFLOW_HOME"])
    (home / ".migrated").touch()  # the benchmark migrated it; a user's second make run skips it too
    log = ctx.work / f"{tag}.log"
    cpu0, t_begin = _children_cpu(), time.time()
    with open(log, "w") as out:
        rc = subprocess.run(["make", "--no-print-directory", "run", f"RUN_CONF={json.dumps(conf)}"], cwd=ROOT,
                            env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode
    t_end, cpu = time.time(), _children_cpu() - cpu0
    text = log.read_text(errors="replace")
    if rc != 0:
        raise SystemExit(f"make run {tag} failed (exit {rc}); see {log}")
    run_id = re.search(r"^Triggered (\S+) with conf", text, re.M).group(1)
    from include.artifacts import safe_run_id

    metrics = art / "reports" / safe_run_id(run_id) / "metrics.json"
    acc = {(r["model"], int(r["seed"]), float(r["fraction"])): r["test_accuracy"]
           for r in json.loads(metrics.read_text())["results"]}
    return {"wall_seconds": round(t_end - t_begin, 2), "cpu_seconds": round(cpu, 2), "log": str(log),
            "run_id": run_id, "conf": conf,
            "split": split_make_run(home, run_id, t_begin, t_end),
            "accuracies": {f"{m}_seed{s}_fraction{f:g}": a for (m, s, f), a in sorted(acc.items())}}


def run_plain(ctx: Any, tag: str, script: str, extra: list[str]) -> dict[str, Any]:
    log = ctx.work / f"{tag}.log"
    cmd = [sys.executable, str(ROOT / "benchmarks" / script), "--data-dir", str(ctx.data_dir), *extra]
    cpu0, t_begin = _children_cpu(), time.time()
    with open(log, "w") as out:
        rc = subprocess.run(cmd, cwd=ROOT, env=ctx.env, stdout=out, stderr=subprocess.STDOUT).returncode
    wall, cpu = time.time() - t_begin, _children_cpu() - cpu0
    if rc != 0:
        raise SystemExit(f"{script} {tag} failed (exit {rc}); see {log}")
    line = next(ln for ln in log.read_text().splitlines()[::-1] if ln.startswith("RESULT "))
    return {"wall_seconds": round(wall, 2), "cpu_seconds": round(cpu, 2), "log": str(log), "command": " ".join(cmd[1:]),
            "result": json.loads(line[len("RESULT "):])}


def _median_split(runs: list[dict[str, Any]]) -> dict[str, float]:
    keys = ("fixed", "fixed_before_first_task", "fixed_after_last_task", "airflow_per_task", "training",
            "report", "other_in_tasks")
    return {k: round(statistics.median(r["split"][k] for r in runs), 2) for k in keys}


def pair(ctx: Any, name: str, rounds: int, step: Callable[..., dict[str, Any]], conf: dict[str, Any],
         script: str, extra: list[str], preload_arm: bool = False) -> dict[str, Any]:
    """Plain script and make run (and make run without the workers' preload), alternating, `rounds`
    rounds; medians and make run / plain."""
    plain, make, unloaded = [], [], []
    for i in range(rounds):
        plain.append(step(f"{name}: plain Keras round {i + 1}", run_plain, ctx, f"{name}-plain{i + 1}", script, extra))
        make.append(step(f"{name}: make run round {i + 1}", run_make_run, ctx, f"{name}-make{i + 1}", conf))
        if preload_arm:
            unloaded.append(step(f"{name}: make run, TL_WORKER_PRELOAD=0, round {i + 1}", run_make_run, ctx,
                                 f"{name}-nopreload{i + 1}", conf, None, {"TL_WORKER_PRELOAD": "0"}))
    p_med = statistics.median(r["wall_seconds"] for r in plain)
    m_med = statistics.median(r["wall_seconds"] for r in make)
    p_cpu = statistics.median(r["cpu_seconds"] for r in plain)
    m_cpu = statistics.median(r["cpu_seconds"] for r in make)
    gaps = {}
    if script == "reference_seed.py":  # the same seed's models: the same accuracies, to the last digit
        res, acc = plain[0]["result"], make[0]["accuracies"]
        fraction = conf["fractions"][0]
        gaps = {"scratch_points": round(100 * (acc["scratch_seed42_fraction1"] - res["scratch_test_accuracy"]), 3),
                "transfer_points": round(100 * (acc[f"transfer_seed42_fraction{fraction:g}"]
                                                - res["transfer_test_accuracy"]), 3)}
    arm = {}
    if unloaded:
        u_med = statistics.median(r["wall_seconds"] for r in unloaded)
        arm = {"make_run_no_preload": unloaded, "make_run_no_preload_median_seconds": round(u_med, 2),
               "make_run_over_no_preload": round(m_med / u_med, 3),
               "make_run_no_preload_split_median": _median_split(unloaded),
               "same_accuracies_without_preload": unloaded[0]["accuracies"] == make[0]["accuracies"]}
    return {**arm, "plain": plain, "make_run": make, "plain_median_seconds": round(p_med, 2), "accuracy_gap": gaps,
            "make_run_median_seconds": round(m_med, 2), "make_run_over_plain": round(m_med / p_med, 3),
            "plain_median_cpu_seconds": round(p_cpu, 2), "make_run_median_cpu_seconds": round(m_cpu, 2),
            "make_run_over_plain_cpu": round(m_cpu / p_cpu, 3),
            "make_run_split_median": _median_split(make),
            "commands": {"make_run": f"make run RUN_CONF='{json.dumps(conf)}'",
                         "plain": f"python benchmarks/{script} {' '.join(extra)}".strip()}}


def warm(ctx: Any, rounds: int, step: Callable[..., dict[str, Any]], conf: dict[str, Any]) -> dict[str, Any]:
    """`make run` beside a running, healthy `make airflow` on the same AIRFLOW_HOME, as a team that keeps
    Airflow up would run it: make run starts and stops nothing, so its fixed cost is the trigger, the
    scheduler's pick-up and noticing the end."""
    import socket

    from deploy.processes import stop_tree, wait_until
    from scripts.make_run import found_make_airflow, health_problem

    art = ctx.work / "art-warm"
    env = _make_env(ctx, art)
    home = Path(env["AIRFLOW_HOME"])
    with socket.socket() as s:  # a free port: the default 8080 may be taken on a developer's machine
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(ctx.work / "warm-make-airflow.log", "w")  # noqa: SIM115 (open while make airflow runs)
    proc = subprocess.Popen(["make", "--no-print-directory", "airflow", f"AIRFLOW_PORT={port}"], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        t0 = time.time()
        def healthy() -> bool:
            if proc.poll() is not None:
                raise SystemExit(f"make airflow exited ({proc.returncode}); see {log.name}")
            found = found_make_airflow(home)
            return bool(found) and health_problem(found["url"]) is None

        wait_until(healthy, 300, f"make airflow healthy (log: {log.name})", interval=1)
        started = round(time.time() - t0, 1)
        runs = [step(f"warm: make run round {i + 1} (make airflow running)", run_make_run, ctx, f"warm{i + 1}",
                     conf, art) for i in range(rounds)]
    finally:
        stop_tree(proc.pid, timeout=60, sig=signal.SIGINT, group_only=True)  # Ctrl-C in its terminal
        log.close()
    return {"make_run": runs, "make_airflow_start_seconds": started,
            "make_run_median_seconds": round(statistics.median(r["wall_seconds"] for r in runs), 2),
            "make_run_split_median": _median_split(runs),
            "commands": {"make_run": f"make run RUN_CONF='{json.dumps(conf)}' (with make airflow running)"}}


def make_run_section(ctx: Any, rounds: int, step: Callable[..., dict[str, Any]], default: bool,
                     quick_overrides: dict[str, Any], preload_arm: bool = False) -> dict[str, Any]:
    conf = {**SEED_CONF, **quick_overrides}
    extra = ["--steps-per-execution", "32"]
    if ctx.quick:
        extra += ["--epochs", "1", "1", "1", "1", "--pretrain-val-size", "40", "--target-val-size", "20"]
    out = {"quick": pair(ctx, "quick", rounds, step, conf, "reference_seed.py", extra, preload_arm),
           "quick_warm": warm(ctx, rounds, step, conf)}
    if default:
        dconf = dict(quick_overrides)
        dextra = (["--epochs", "1", "1", "1", "1", "--pretrain-val-size", "40", "--target-val-size", "20"]
                  if ctx.quick else [])
        out["default"] = pair(ctx, "default", 1, step, dconf, "reference_full.py", dextra, preload_arm)
    return out


def make_run_rows(sec: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for name, p in sec.items():
        sp = p["make_run_split_median"]
        if "plain" in p:
            rows.append((f"make run {name}: make run | plain (median)",
                         f"{p['make_run_median_seconds']:.1f} s | {p['plain_median_seconds']:.1f} s -> "
                         f"x{p['make_run_over_plain']:.3f} wall, x{p['make_run_over_plain_cpu']:.3f} CPU  "
                         f"({p['commands']['make_run']} vs {p['commands']['plain']})"))
        else:
            rows.append((f"make run {name}: make run (median)",
                         f"{p['make_run_median_seconds']:.1f} s  ({p['commands']['make_run']}; make airflow "
                         f"became healthy in {p['make_airflow_start_seconds']:.1f} s before)"))
        rows += [(f"make run {name}: split (median, s)",
                  f"fixed {sp['fixed']:.1f} (before first task {sp['fixed_before_first_task']:.1f}, after last "
                  f"{sp['fixed_after_last_task']:.1f}), Airflow per task {sp['airflow_per_task']:.1f}, training "
                  f"{sp['training']:.1f}, report {sp['report']:.1f}, other in tasks {sp['other_in_tasks']:.1f}")]
        if "make_run_no_preload" in p:
            sn = p["make_run_no_preload_split_median"]
            rows.append((f"make run {name}: TL_WORKER_PRELOAD=0 (median)",
                         f"{p['make_run_no_preload_median_seconds']:.1f} s -> make run / this "
                         f"x{p['make_run_over_no_preload']:.3f}; fixed {sn['fixed']:.1f}, other in tasks "
                         f"{sn['other_in_tasks']:.1f}; same accuracies: {p['same_accuracies_without_preload']}"))
        if p.get("accuracy_gap"):
            rows.append((f"make run {name}: accuracy - plain", f"{p['accuracy_gap']} (points, seed 42)"))
    return rows

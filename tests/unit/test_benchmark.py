"""The benchmark harness and its reference script, on tiny synthetic data (about 30 s in all).

No timings are asserted: figures come from `make benchmark`. These check that the harness
measures what it says (RSS of the right process and task, stratified data shares, no TensorFlow
at DAG parse) and that the reference script's maths does not depend on steps_per_execution.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks import run_benchmark as bench
from include.data import FILES, read_idx
from tests.synthetic import write_tiny_fashion_mnist

ROOT = Path(__file__).resolve().parents[2]


def _reference(data: Path, *extra: str) -> dict:
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "reference_seed.py"), "--data-dir", str(data),
                          "--epochs", "1", "1", "1", "2", "--pretrain-val-size", "40", "--target-val-size", "20",
                          *extra], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


@pytest.mark.slow
@pytest.mark.training
def test_reference_recipe_gives_identical_models_with_steps_per_execution(tmp_path: Path):
    data = write_tiny_fashion_mnist(tmp_path / "idx", train_per_class=60, test_per_class=10)
    plain, batched = _reference(data), _reference(data, "--steps-per-execution", "8")
    # 8 classes x 60 - 40 held out; 2 x 60 - 20; 70% of that: the seed's split arithmetic.
    assert plain["n_train"] == {"pretrain": 440, "scratch": 100, "transfer": 70}
    assert plain["dtype"] == "float64" and plain["steps_per_execution"] == 1
    for key in ("pretrain_val_accuracy", "scratch_test_accuracy", "transfer_test_accuracy"):
        assert 0.0 <= plain[key] <= 1.0
        assert plain[key] == batched[key], key  # same updates, fewer graph calls
    assert plain["wall_seconds"] > plain["phase_seconds"]["pretrain"] > 0


def test_reference_refuses_a_folder_without_the_idx_files(tmp_path: Path):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "reference_seed.py"), "--data-dir", str(tmp_path)],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode != 0
    assert "missing" in out.stderr and "--data-dir" in out.stderr


def test_training_share_is_stratified_and_keeps_the_test_set(tmp_path: Path):
    src = write_tiny_fashion_mnist(tmp_path / "src", train_per_class=40, test_per_class=10)
    dst = bench.write_training_share(src, tmp_path / "half", 0.25)
    y_src, _ = read_idx(src / FILES["train_labels"])
    y_dst, _ = read_idx(dst / FILES["train_labels"])
    x_dst, _ = read_idx(dst / FILES["train_images"])
    assert np.bincount(y_dst).tolist() == [10] * 10 and len(x_dst) == 100
    x_src, _ = read_idx(src / FILES["train_images"])
    assert all(any(np.array_equal(x, s) for s in x_src) for x in x_dst[:5])  # real rows, not new ones
    for key in ("test_images", "test_labels"):
        assert (dst / FILES[key]).read_bytes() == (src / FILES[key]).read_bytes()
    assert np.bincount(y_src).tolist() == [40] * 10


def test_monitor_attributes_peak_rss_to_the_running_task():
    # A child that grows by 300 MiB when told to: the test samples it before and after, so no timing
    # decides what the monitor sees.
    grow = ("import sys\n"
            "print('small', flush=True); sys.stdin.readline()\n"
            "b = bytearray(300 * 2**20); print('big', flush=True); sys.stdin.readline()\n")
    child = subprocess.Popen([sys.executable, "-c", grow], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        mon = bench.Monitor(child.pid)
        for label, line in (("small", "small"), ("big[3]", "big")):
            assert child.stdout.readline().strip() == line
            mon.label = label
            mon.sample()
            child.stdin.write("next\n")
            child.stdin.flush()
    finally:
        child.stdin.close()
        assert child.wait(timeout=60) == 0
    assert mon.by_label["big[3]"] >= 300 * 1024 > mon.by_label["small"]
    assert mon.procs[child.pid]["peak_kib"] >= 300 * 1024
    assert "import sys" in mon.procs[child.pid]["title"]


def test_run_monitored_names_tasks_from_the_log(tmp_path: Path):
    # Mimics `airflow dags test`: one process announces its tasks in its log.
    script = ("print('[DAG TEST] starting task_id=small map_index=-1', flush=True)\n"
              "print('[DAG TEST] end task task_id=small', flush=True)\n"
              "print('[DAG TEST] starting task_id=big map_index=3', flush=True)\n"
              "print('[DAG TEST] end task task_id=big', flush=True)\n")
    res = bench.run_monitored([sys.executable, "-c", script], dict(os.environ), tmp_path / "log")
    assert res["rc"] == 0
    assert set(res["task_seconds"]) == {"small", "big[3]"}
    assert "starting task_id=big" in (tmp_path / "log").read_text()


@pytest.mark.slow
def test_dag_parse_measurement_reports_no_tensorflow(tmp_path: Path):
    env = dict(os.environ, AIRFLOW_HOME=str(tmp_path / "af"), PYTHONPATH=str(ROOT))
    res = bench.parse_time(SimpleNamespace(env=env), 2)
    assert res["n"] == 2 and res["tensorflow_imported"] is False
    assert 0 < res["min_seconds"] <= res["median_seconds"] <= res["max_seconds"]
    assert res["median_with_airflow_import_seconds"] > res["median_seconds"]


def test_time_split_accounts_for_every_second_of_an_in_process_run():
    # Process start at 100 s, first task at 100.3, its "Task started" at 100.7, last task end at 102, exit at 102.6.
    events = {"first_start": 100.3, "first_task_started": 100.7, "last_end": 102.0}
    fits = {"pretrain[seed=42]": 0.5, "transfer.head[seed=42,fraction=0.7]": 0.25}
    sp = bench.time_split(events, fits, t_begin=100.0, t_end=102.6)
    assert sp == {"airflow_start": 0.3, "execution_api_start": 0.4, "airflow_exit": 0.6, "training": 0.75,
                  "other": 0.55, "training_summed": 0.75, "fits": fits}
    assert bench.time_split({**events, "last_end": None}, fits, 100.0, 102.6) is None
    # Fits side by side (two threads) count once: 101.0-101.5 and 101.3-101.55 cover 0.55 s, not 0.75.
    side = bench.time_split(events, fits, 100.0, 102.6, fit_ends={"pretrain[seed=42]": 101.5,
                                                                  "transfer.head[seed=42,fraction=0.7]": 101.55})
    assert (side["training"], side["training_summed"], side["other"]) == (0.55, 0.75, 0.75)


def test_run_monitored_reads_the_split_from_log_timestamps(tmp_path: Path):
    # The lines `airflow dags test` prints, with fixed timestamps: the parts between two log lines and
    # the fits come out exactly; those against the real start and exit are not asserted.
    stamp = "2026-01-01T00:00:0{}Z [info     ] "
    lines = [stamp.format("0.100000") + "[DAG TEST] starting task_id=split_data map_index=-1 [airflow.sdk]",
             stamp.format("0.500000") + "Task started                   [airflow.api_fastapi.execution_api]",
             stamp.format("0.600000") + "[DAG TEST] end task task_id=split_data map_index=-1 [airflow.sdk]",
             stamp.format("0.700000") + "[DAG TEST] starting task_id=pretrain map_index=0 [airflow.sdk]",
             stamp.format("1.000000") + "pretrain[seed=42] epoch 1: loss=0.7 val_accuracy=0.8 (0.2s) [tl.training]",
             stamp.format("1.500000") + "pretrain[seed=42] epoch 2: loss=0.4 val_accuracy=0.9 (0.5s) [tl.training]",
             stamp.format("1.700000") + "transfer.head[seed=42,fraction=0.7] epoch 1: loss=0.8 (0.25s) [tl.training]",
             stamp.format("2.000000") + "[DAG TEST] end task task_id=pretrain map_index=0 [airflow.sdk]"]
    script = f"print({chr(10).join(lines)!r})"
    res = bench.run_monitored([sys.executable, "-c", script], dict(os.environ), tmp_path / "x.log")
    sp = res["time_split"]
    assert sp["fits"] == {"pretrain[seed=42]": 0.5, "transfer.head[seed=42,fraction=0.7]": 0.25}
    # The last epoch line of each phase: pretrain 1.0-1.5 s and head 1.45-1.7 s overlap by 0.05 s.
    assert (sp["training"], sp["training_summed"]) == (0.7, 0.75)
    assert sp["execution_api_start"] == 0.4
    # No task lines (a --use-executor run logs tasks elsewhere): no split rather than a wrong one.
    assert bench.run_monitored([sys.executable, "-c", "print('hi')"], {}, tmp_path / "y.log")["time_split"] is None


def test_full_section_counts_the_default_runs_sample_passes():
    from benchmarks import full_experiment as full
    from include.config import ExperimentConfig

    passes = full.training_passes(ExperimentConfig())
    # 5 seeds: 43,000 x 20 pretraining; 450 + 900 + 2,700 + 6,300 + 9,000 x 20 scratch; the four
    # transfer subsets x (10 + 50) epochs.
    assert passes == {"pretrain": 5 * 43000 * 20, "scratch": 5 * 19350 * 20, "transfer": 5 * 10350 * 60}
    assert full.flop_per_pass(1) == 6 * (784 * 100 + 2 * 100 * 100 + 100)


def test_full_section_difference_table_and_today_ci(tmp_path: Path):
    from benchmarks import full_experiment as full

    rows = []
    for seed, (s, t) in zip([1, 2, 3], [(0.90, 0.92), (0.91, 0.93), (0.92, 0.95)]):
        rows += [{"model": "scratch", "seed": seed, "fraction": 0.05, "test_accuracy": s},
                 {"model": "transfer", "seed": seed, "fraction": 0.05, "test_accuracy": t}]
    table = full.difference_table(rows)["0.05"]
    assert table["mean_points"] == pytest.approx(7 / 3, abs=0.01) and table["seeds"] == [1, 2, 3]
    assert table["ci_points"][0] < table["mean_points"] < table["ci_points"][1]
    assert table["inside_today_ci"] is True  # +2.33 lies in today's [+0.84, +3.48] at 5%
    # A run's accuracies come from its metrics.json (its teardown removes the data folder).
    (tmp_path / "reports" / "r").mkdir(parents=True)
    (tmp_path / "reports" / "r" / "metrics.json").write_text(json.dumps({"results": [
        {"model": "transfer", "seed": 7, "fraction": 0.3, "test_accuracy": 0.75, "test_loss": 0.5}]}))
    assert full.pipeline_accuracies(tmp_path) == [{"model": "transfer", "seed": 7, "fraction": 0.3,
                                                   "test_accuracy": 0.75}]


@pytest.mark.slow
@pytest.mark.training
def test_profile_breaks_down_every_training_task_of_a_tiny_run(tiny_conf: dict):
    """benchmarks/profile_tasks.py end to end: the fits run on one thread, where cProfile sees them,
    and the accuracies come from the saved predictions (no report task runs there)."""
    script = ROOT / "benchmarks" / "profile_tasks.py"
    out = subprocess.run([sys.executable, str(script), "--conf", json.dumps(tiny_conf)], capture_output=True,
                         text=True, cwd=ROOT, env=dict(os.environ, TL_TF_THREADS="2"))
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads([ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")][-1][len("RESULT "):])
    assert set(result["task_seconds"]) == {"split_data", "pretrain", "train_scratch", "transfer.head",
                                           "transfer.finetune"}
    parts = result["breakdown_seconds"]
    assert parts["training loops (fit, tracing included)"] > 0
    validation = parts["of which per-epoch validation (inside the training loops)"]
    assert parts["training loops (fit, tracing included)"] >= validation > 0
    assert list(result["transfer_minus_scratch"]) == [f"{f:g}" for f in sorted(tiny_conf["fractions"])]
    assert all(row["seeds"] == sorted(tiny_conf["seeds"]) for row in result["transfer_minus_scratch"].values())

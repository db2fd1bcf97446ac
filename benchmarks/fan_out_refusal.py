"""Seconds to refuse an oversized fan-out, on the three paths a run can take; prints one line each.

1. the trigger form: Airflow's Param schema refuses 5000 seeds (maxItems = [core] max_map_length);
2. split_data called as the DAG calls it (config built inside the task, through fail_fast): 5000 seeds;
3. a whole dag.test() run within the form's limits but over max_models_per_run (1000 seeds): split_data
   fails on its first try and nothing is written.

    python benchmarks/fan_out_refusal.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def timed(label: str, call) -> None:
    t0 = time.perf_counter()
    try:
        call()
        outcome = "NOT REFUSED"
    except Exception as exc:
        outcome = f"{type(exc).__name__}: {str(exc).splitlines()[0][:140]}"
    print(f"{label}: {time.perf_counter() - t0:.3f} s  ({outcome})", flush=True)


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="fan_out_"))
    # A private Airflow home with a migrated SQLite database, as the tests use: dag.test() needs one.
    os.environ.update(AIRFLOW_HOME=str(tmp / "airflow"), AIRFLOW__CORE__LOAD_EXAMPLES="False",
                      AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"))
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)
    from airflow.sdk.definitions.param import Param

    from include.artifacts import RunPaths
    from include.config import ExperimentConfig
    from tasks import split_data
    from tasks.common import fail_fast
    from tasks.dag_params import build_params
    from tests.synthetic import TINY_CONF, write_tiny_fashion_mnist

    data = write_tiny_fashion_mnist(tmp / "idx")
    conf = {**TINY_CONF, "data_dir": str(data), "seeds": list(range(5000))}
    seeds = build_params()["seeds"]
    timed("form (Param schema), 5000 seeds", lambda: Param(seeds.value, **seeds.schema).resolve(conf["seeds"]))
    root = tmp / "artifacts"
    timed("split_data task function, 5000 seeds",
          fail_fast(lambda: split_data.run(ExperimentConfig.from_params(conf), RunPaths.for_run("big", root=root))))
    print(f"  files written: {sum(1 for p in root.rglob('*') if p.is_file()) if root.exists() else 0}")

    os.environ["TL_ARTIFACT_ROOT"] = str(tmp / "dag_artifacts")
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(ROOT / "dags")).dags["fashion_mnist_transfer_learning"]
    t0 = time.perf_counter()
    dr = dag.test(run_conf={**conf, "seeds": list(range(1000))})
    split = next(ti for ti in dr.get_task_instances() if ti.task_id == "split_data")
    written = sorted(str(p.relative_to(tmp)) for p in (tmp / "dag_artifacts").rglob("*") if p.is_file())  # incl. locks
    print(f"dag.test(), 1000 seeds over max_models_per_run: {time.perf_counter() - t0:.3f} s in all, split_data "
          f"{split.duration:.3f} s, state {dr.state}, split_data try {split.try_number}, files written: {written}")
    for ti in sorted(dr.get_task_instances(), key=lambda t: (t.start_date is None, t.start_date)):
        print(f"  {ti.task_id}[{ti.map_index}] {ti.state} {ti.start_date} -> {ti.end_date}")


if __name__ == "__main__":
    main()

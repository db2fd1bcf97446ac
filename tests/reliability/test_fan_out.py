"""Fan-out limits: a run over Airflow's max_map_length or the model cap is refused before anything is written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from include.artifacts import RunPaths
from include.config import ExperimentConfig
from tests.conftest import load_dag
from tests.reliability.helpers import permanent_failure, snapshot
from tests.synthetic import TINY_CONF, write_tiny_fashion_mnist

TOO_MANY_SEEDS = list(range(5000))  # over Airflow's default max_map_length of 1024


@pytest.mark.parametrize("changes, what, fix", [
    ({"seeds": TOO_MANY_SEEDS}, r"seeds has 5000 values; at most 1024 fit Airflow's \[core\] max_map_length",
     r"raise the limit with AIRFLOW__CORE__MAX_MAP_LENGTH"),
    ({"seeds": list(range(40)), "max_models_per_run": 100},
     r"would train 200 models \(40 seeds x 5 per seed\), more than max_models_per_run=100",
     r"Use fewer seeds or fractions, or raise max_models_per_run"),
], ids=["over_max_map_length", "over_model_cap"])
@pytest.mark.unit
def test_oversized_fan_out_fails_in_split_data_before_writing(changes, what, fix, tmp_path: Path):
    """split_data (config built inside the task, as in the DAG) fails at once; no file appears anywhere."""
    from tasks import split_data

    folder = write_tiny_fashion_mnist(tmp_path / "idx")
    root = tmp_path / "artifacts"
    root.mkdir()
    conf = {**TINY_CONF, "data_dir": str(folder), **changes}

    def call():
        return split_data.run(ExperimentConfig.from_params(conf), RunPaths.for_run("oversized", root=root))

    msg = str(permanent_failure(call))
    assert re.search(what, msg) and re.search(fix, msg), msg
    assert snapshot(root) == {}


@pytest.mark.unit
def test_max_map_length_comes_from_airflow(monkeypatch):
    """Lowering Airflow's limit lowers ours: the config reads it when validating."""
    from airflow.configuration import conf  # loaded, as in every task and in the DAG parser

    monkeypatch.setenv("AIRFLOW__CORE__MAX_MAP_LENGTH", "3")
    assert conf.getint("core", "max_map_length") == 3
    ExperimentConfig(seeds=[1, 2, 3], fractions=[0.5], max_models_per_run=1000)
    with pytest.raises(ValueError, match=r"seeds has 4 values; at most 3 fit"):
        ExperimentConfig(seeds=[1, 2, 3, 4], fractions=[0.5], max_models_per_run=1000)


@pytest.mark.airflow
def test_form_refuses_more_seeds_than_airflow_can_map(airflow_db, tmp_path, monkeypatch):
    """Through Airflow: the Param schema (maxItems) refuses 5000 seeds before a run or a file exists."""
    from airflow.sdk.exceptions import ParamValidationError

    root = tmp_path / "artifacts"
    monkeypatch.setenv("TL_ARTIFACT_ROOT", str(root))
    dag = load_dag()
    assert dag.params.get_param("seeds").schema["maxItems"] == 1024
    with pytest.raises(ParamValidationError, match="seeds"):
        dag.test(run_conf={**TINY_CONF, "seeds": TOO_MANY_SEEDS, "data_dir": str(tmp_path)})
    assert not root.exists()


@pytest.mark.airflow
def test_dag_run_over_the_model_cap_fails_in_split_data_without_writing(airflow_db, tmp_path, monkeypatch):
    """Within the form's limits but over max_models_per_run: split_data fails on its first try, writes nothing."""
    root = tmp_path / "artifacts"
    monkeypatch.setenv("TL_ARTIFACT_ROOT", str(root))
    conf = {**TINY_CONF, "seeds": list(range(30)), "max_models_per_run": 20,
            "data_dir": str(write_tiny_fashion_mnist(tmp_path / "idx"))}
    dr = load_dag().test(run_conf=conf)
    tis = {(ti.task_id, ti.map_index): ti for ti in dr.get_task_instances()}
    split = tis[("split_data", -1)]
    assert str(dr.state) == "failed" and str(split.state) == "failed" and split.try_number == 1
    assert all(str(ti.state) == "upstream_failed" for key, ti in tis.items() if key[0] != "split_data")
    assert snapshot(root) == {}

"""DagBag integrity (parametrised over DAG files) and the exact structure of the pipeline."""

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAG_FILES = sorted((ROOT / "dags").glob("*.py"))
DAG_ID = "fashion_mnist_transfer_learning"


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_imports_without_errors(dagbag, path):
    assert not {k: v for k, v in dagbag.import_errors.items() if Path(k).name == path.name}


def test_every_dag_has_tags_doc_and_retries(dagbag):
    assert dagbag.dags
    for dag in dagbag.dags.values():
        assert dag.tags and dag.doc_md
        for t in dag.tasks:
            assert t.retries >= 1, t.task_id


@pytest.fixture(scope="module")
def dag(dagbag):
    return dagbag.dags[DAG_ID]


def test_exact_upstream_map(dag):
    assert {t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks} == {
        "split_data": [],
        "pretrain": ["split_data"],
        "train_scratch": ["split_data"],
        "transfer.head": ["pretrain", "split_data"],
        "transfer.finetune": ["split_data", "transfer.head"],
        "compare_report": ["split_data", "train_scratch", "transfer.finetune"],
        "promote_champion": ["compare_report"],
        # The teardown waits for every task; split_data is its setup.
        "apply_retention": ["compare_report", "pretrain", "promote_champion", "split_data", "train_scratch",
                            "transfer.finetune"],
    }
    assert {t.task_id for t in dag.tasks if t.is_setup} == {"split_data"}
    assert {t.task_id for t in dag.tasks if t.is_teardown} == {"apply_retention"}


def test_pretrain_and_scratch_share_no_path(dag):
    pre, scr = dag.get_task("pretrain"), dag.get_task("train_scratch")
    assert "train_scratch" not in pre.get_flat_relative_ids(upstream=False)
    assert "train_scratch" not in pre.get_flat_relative_ids(upstream=True)
    assert "pretrain" not in scr.get_flat_relative_ids(upstream=False)


def test_schedule_retries_timeouts(dag):
    from airflow.sdk import CronTriggerTimetable

    assert isinstance(dag.timetable, CronTriggerTimetable) and dag.timetable.expression == "0 2 * * *"
    assert dag.timetable.run_immediately is False and dag.start_date is None
    assert dag.catchup is False
    for tid in ("pretrain", "train_scratch", "transfer.head", "transfer.finetune"):
        t = dag.get_task(tid)
        assert t.execution_timeout is not None and t.retry_exponential_backoff
    assert {t.task_id for t in dag.tasks if t.is_mapped} == {"pretrain", "train_scratch", "transfer.head",
                                                             "transfer.finetune"}


def test_params_form_matches_config(dag):
    from include.config import ExperimentConfig

    defaults = {k: p.value for k, p in dag.params.items()} if hasattr(dag.params, "items") else {}
    assert ExperimentConfig.from_params(defaults) == ExperimentConfig()


def test_param_schema_rejects_bad_values(dag):
    from airflow.sdk.definitions.param import Param, ParamValidationError

    p = dag.params.get_param("fractions")
    with pytest.raises(ParamValidationError):
        Param(p.value, **p.schema).resolve([0.0])
    classes = dag.params.get_param("target_classes")
    for bad in (["Pullover", "Pullover"], ["Pullover"], ["Pullover", ""]):
        with pytest.raises(ParamValidationError):
            Param(classes.value, **classes.schema).resolve(bad)
    # Any dataset's names: the form cannot know them; split_data checks them against the data.
    assert Param(classes.value, **classes.schema).resolve(["3", "8"]) == ["3", "8"]
    assert Param(p.value, **p.schema).resolve([0.5]) == [0.5]


def test_form_offers_the_dataset_settings(dag):
    from airflow.sdk.definitions.param import Param

    for name in ("data_dir", "data_format", "pretrain_classes", "image_size", "test_share"):
        assert dag.params.get_param(name).schema, name
    size = dag.params.get_param("image_size")
    assert Param(size.value, **size.schema).resolve([28, 28]) == [28, 28]


def test_a_list_left_empty_in_the_form_can_be_triggered(dag):
    """Airflow's form marks a field required unless its type allows null, and keeps Trigger disabled
    while a required field is empty: every list whose default is empty must allow null, and null then
    means the empty default in Python too."""
    from airflow.sdk.definitions.param import Param

    from include.config import ExperimentConfig

    empty = [name for name, p in dag.params.items() if p.value == [] or p.value == ()]
    assert set(empty) >= {"pretrain_classes", "image_size"}
    for name in empty:
        p = dag.params.get_param(name)
        assert "null" in p.schema["type"], name
        assert Param(p.value, **p.schema).resolve(None) is None
    assert ExperimentConfig.from_params(dict.fromkeys(empty)) == ExperimentConfig()


def test_importing_the_dag_file_does_not_import_tensorflow():
    code = ("import sys; sys.path[:0]=['dags','.']; import fashion_mnist_transfer_learning; "
            "print(sorted(m for m in ('tensorflow','keras','sklearn','pandas','matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_a_stuck_night_is_bounded_alerted_and_training_is_pooled(dag):
    from airflow.sdk import SyncCallback

    from include.operations import DEADLINE_AFTER, RUN_TIMEOUT, TRAINING_POOL

    # The timeout ends a stuck night before the next one is due (max_active_runs=1 queues it behind).
    assert dag.max_active_runs == 1 and dag.dagrun_timeout == RUN_TIMEOUT < timedelta(hours=24)
    longest_path = sum((dag.get_task(t).execution_timeout for t in (
        "split_data", "pretrain", "transfer.head", "transfer.finetune", "compare_report")), timedelta())
    assert DEADLINE_AFTER < RUN_TIMEOUT and longest_path < RUN_TIMEOUT
    [alert] = dag.deadline if isinstance(dag.deadline, list) else [dag.deadline]
    assert alert.interval == DEADLINE_AFTER and isinstance(alert.callback, SyncCallback)
    assert alert.callback.path == "tasks.notify.deadline_missed"
    training = {"pretrain", "train_scratch", "transfer.head", "transfer.finetune"}
    assert {t.task_id for t in dag.tasks if t.pool == TRAINING_POOL} == training
    assert {t.pool for t in dag.tasks if t.task_id not in training} == {"default_pool"}
    assert all(t.on_execute_callback for t in dag.tasks)  # the alert settings' start-up check

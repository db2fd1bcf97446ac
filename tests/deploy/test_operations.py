"""The training pool is created where Airflow is set up, once, and an operator's size is kept."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import load_dag

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.airflow
def test_the_training_pool_is_created_if_missing_and_an_operators_size_is_kept(airflow_db):
    from airflow.models.pool import Pool
    from airflow.utils.session import create_session

    from include.operations import TRAINING_POOL, TRAINING_POOL_SLOTS

    with create_session() as session:
        session.query(Pool).filter(Pool.pool == TRAINING_POOL).delete()

    def ensure() -> str:
        res = subprocess.run([sys.executable, "-m", "include.operations"], cwd=ROOT, capture_output=True, text=True,
                             timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
        return res.stdout.strip()

    assert ensure() == f"pool {TRAINING_POOL}: created with {TRAINING_POOL_SLOTS} slots"
    assert Pool.get_pool(TRAINING_POOL).slots == TRAINING_POOL_SLOTS
    Pool.create_or_update_pool(TRAINING_POOL, 1, "resized by the operator", include_deferred=False)
    assert ensure() == f"pool {TRAINING_POOL}: exists with 1 slots (kept)"
    # Every training task of the DAG uses it.
    assert {t.task_id for t in load_dag().tasks if t.pool == TRAINING_POOL} == {
        "pretrain", "train_scratch", "transfer.head", "transfer.finetune"}


@pytest.mark.unit
def test_every_set_up_creates_the_training_pool():
    """make run / make airflow (scripts/airflow_standalone.py), compose's airflow-init and the local stack."""
    for path in ("scripts/airflow_standalone.py", "deploy/local_stack.py", "docker-compose.yaml"):
        assert "-m include.operations" in (ROOT / path).read_text().replace('"-m", "include.operations"',
                                                                            "-m include.operations"), path

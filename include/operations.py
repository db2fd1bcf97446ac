"""How the DAG behaves on a shared, long-lived Airflow: each bound declared once, with its reason.

Imported by the DAG file (stdlib only, so parsing stays fast) and by every set-up that creates the
training pool (`make run` before it triggers; `python -m include.operations`: `make airflow`, compose's airflow-init,
`make e2e-distributed`). Airflow does not create pools: a task in a missing pool is never queued
(the scheduler logs "Tasks using non-existent pool ... will not be scheduled" and the run waits).
"""

from __future__ import annotations

import sys
from datetime import timedelta

# A stuck night must not block the next: with max_active_runs=1 every later night queues behind it.
# 20 h ends it before the next 02:00 run is due, and is far above a whole run's longest path (three
# training tasks of at most 2 h each, plus 30-minute split and report tasks).
RUN_TIMEOUT = timedelta(hours=20)
# A person hears about a slow night while there is time to act: a default run takes minutes to an
# hour on a small worker, so 6 h after it was queued means it is stuck or starved of slots.
DEADLINE_AFTER = timedelta(hours=6)
# TensorFlow tasks run up to 2 h each on every core they get: on a shared Airflow they take at most
# these slots, so other teams' DAGs still get workers. Created only when missing: an operator's own
# size (`airflow pools set tl_training N ...`) is kept.
TRAINING_POOL = "tl_training"
TRAINING_POOL_SLOTS = 4
TRAINING_POOL_DESCRIPTION = ("Fashion-MNIST transfer learning: its TensorFlow training tasks (up to 2 h each, "
                             "every core they get), bounded so other DAGs keep worker slots (include/operations.py)")


def ensure_training_pool() -> str:
    """Create the training pool if it is missing (needs a migrated metadata database); says what it did."""
    from airflow.models.pool import Pool

    pool = Pool.get_pool(TRAINING_POOL)
    if pool is not None:
        return f"pool {TRAINING_POOL}: exists with {pool.slots} slots (kept)"
    Pool.create_or_update_pool(TRAINING_POOL, TRAINING_POOL_SLOTS, TRAINING_POOL_DESCRIPTION, include_deferred=False)
    return f"pool {TRAINING_POOL}: created with {TRAINING_POOL_SLOTS} slots"


if __name__ == "__main__":
    print(ensure_training_pool(), flush=True)
    sys.exit(0)

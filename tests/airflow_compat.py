"""A work-around for one Airflow 3.3.2 bug that only `dag.test()` hits; imported by tests/conftest.py
(and by test scripts that call dag.test() in a subprocess).

`dag.test()` builds its scheduler-side DAG by serialising and deserialising the DAG in memory, so
`dag.deadline` holds the serialised DeadlineAlert dicts, not the ids of their `deadline_alert` rows
that the dag-processor stores. When the run succeeds, `DagRun.update_state` looks each one up with
`DeadlineAlertModel.get_by_id(<dict>)`, which fails ("'dict' object has no attribute 'hex'"). The
scheduler is not affected: its DAGs come from the database, with ids. dag.test() creates no deadlines
for a run (it logs "skipping deadline alert because the deadline reference evaluated to None"), so
there is nothing to prune: a dict gets an alert that names no DagRun reference.
"""

from __future__ import annotations

from types import SimpleNamespace


def patch_dag_test_deadlines() -> None:
    from airflow.models.deadline_alert import DeadlineAlert as DeadlineAlertModel

    original = DeadlineAlertModel.get_by_id.__func__ if hasattr(DeadlineAlertModel.get_by_id, "__func__") else None
    if original is None or getattr(original, "_tl_patched", False):
        return

    def get_by_id(cls, deadline_alert_id, *args, **kwargs):
        if isinstance(deadline_alert_id, dict):  # dag.test()'s in-memory serialised alert
            return SimpleNamespace(reference_class=None)
        return original(cls, deadline_alert_id, *args, **kwargs)

    get_by_id._tl_patched = True  # type: ignore[attr-defined]
    DeadlineAlertModel.get_by_id = classmethod(get_by_id)

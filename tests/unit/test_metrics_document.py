"""The typed metrics document (include/report/document.py): its generated schema, old files, the readers.

`data/metrics_v2_previous_writer.json` is a tiny run's metrics.json as the code before the typed
models wrote it (schema version 2), with the task instances that code recorded inside Airflow.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from include.report import document, render, tables
from include.report.document import MetricsDocument

ROOT = Path(__file__).resolve().parents[2]
OLD = Path(__file__).with_name("data") / "metrics_v2_previous_writer.json"


@pytest.fixture
def old() -> MetricsDocument:
    return MetricsDocument.read(OLD)


def test_the_committed_schema_is_the_models_schema():
    committed = (ROOT / "reports" / "metrics.schema.json").read_text(encoding="utf-8")
    assert json.loads(committed) == document.json_schema(), (
        "reports/metrics.schema.json is out of date: python -m include.report.document --schema "
        "> reports/metrics.schema.json")
    assert committed == document.schema_text()


def test_every_top_level_key_in_schema_md_is_a_field_of_the_model():
    text = (ROOT / "reports" / "SCHEMA.md").read_text(encoding="utf-8")
    table = text.split("## Top level", 1)[1].split("\n## ", 1)[0]
    keys = {k for row in re.findall(r"^\| (`[^|]+)\|", table, re.M) for k in re.findall(r"`([a-z_0-9]+)`", row)}
    assert {"schema_version", "run_id", "run", "verdict", "nightly", "timings"} <= keys
    assert keys <= set(MetricsDocument.model_fields), keys - set(MetricsDocument.model_fields)
    assert set(MetricsDocument.model_fields) <= keys  # and SCHEMA.md names every section


def test_a_file_the_previous_writer_wrote_parses_and_dumps_back_unchanged(old):
    raw = json.loads(OLD.read_text(encoding="utf-8"))
    assert old.to_json() == raw  # same keys, same nesting, null stays null
    assert old.headline.verdict.basis == "tonight" and old.verdict.basis == "pooled"
    assert old.nightly is not None and old.nightly.pooled.verdict.kind == old.verdict.kind


def test_a_broken_document_is_refused():
    from pydantic import ValidationError

    raw = json.loads(OLD.read_text(encoding="utf-8"))
    raw["verdict"]["kind"] = "great"
    with pytest.raises(ValidationError, match=r"verdict\.kind"):
        MetricsDocument.model_validate(raw)


def test_sections_missing_from_older_files_take_their_defaults():
    raw = json.loads(OLD.read_text(encoding="utf-8"))
    for key in ("nightly", "timings", "learning_curves", "confusion_matrices"):
        del raw[key]
    del raw["data"]["dataset"], raw["config"]["architecture"]
    m = MetricsDocument.model_validate(raw)
    assert m.nightly is None and m.timings is None and m.architecture == "mlp"
    assert m.dataset_name == Path(m.data.source).name
    assert "Transfer learning report" in render.render_markdown(m)  # the report still renders
    assert m.to_json() == raw


def test_the_timing_table_labels_a_map_index_as_its_chunk_of_seeds(old):
    # The previous writer called map index 0 "seed 42"; with seeds_per_task 5 it trained seeds 42 and 7.
    assert old.config.seeds == [42, 7] and old.config.seeds_per_task == 5
    rows = tables.timing_rows(old)
    assert rows[0][1] == "map index (seeds)"
    by_task = {r[0]: r for r in rows[1:]}
    assert by_task["split_data"][1] == ""
    assert by_task["train_scratch"][1] == "chunk 0 (seeds 42, 7)"
    fits = {(f.task_id, f.seed): f.fit_seconds for f in old.timings.fit_seconds}
    assert by_task["train_scratch"][4] == f"{fits[('train_scratch', 42)]:.1f}, {fits[('train_scratch', 7)]:.1f}"


@pytest.mark.parametrize(("per_task", "index", "label"), [(1, 1, "chunk 1 (seed 7)"), (2, 0, "chunk 0 (seeds 42, 7)"),
                                                           (1, 5, "map index 5")])
def test_task_instance_label_follows_seeds_per_task(old, per_task, index, label):
    cfg = old.config.model_copy(update={"seeds_per_task": per_task})
    ti = document.TaskInstance(task_id="pretrain", map_index=index, state="success", duration_seconds=1.0)
    assert tables.task_instance_label(ti, cfg) == label


def test_evidence_records_each_task_instances_chunk(old):
    from datetime import UTC, datetime

    from include import evidence
    from include.config import ExperimentConfig

    cfg = ExperimentConfig(seeds=(1, 2, 3, 4, 5), seeds_per_task=2)
    af = {"dag_run_started_at": "2026-01-01T00:00:00+00:00", "error": None,
          "task_instances": [{"task_id": "pretrain", "map_index": i, "state": "success", "duration_seconds": 1.0}
                             for i in (2, 0, 1)] + [{"task_id": "split_data", "map_index": -1, "state": "success",
                                                     "duration_seconds": 1.0}]}
    t = document.Timings.model_validate(evidence.timings(cfg, [], [], af, 1.0, datetime(2026, 1, 1, 0, 1, tzinfo=UTC)))
    assert [(ti.task_id, ti.map_index, ti.seeds, ti.seed) for ti in t.task_instances] == [
        ("split_data", -1, None, None), ("pretrain", 0, [1, 2], None), ("pretrain", 1, [3, 4], None),
        ("pretrain", 2, [5], 5)]
    assert t.run_elapsed_seconds == 60


def test_the_report_names_the_dataset_classes_and_architecture(old):
    names = [old.dataset_name, *old.data.target_names, old.architecture]
    assert old.dataset_name and old.architecture == "mlp"
    md = render.render_markdown(old)
    for name in names:
        assert name in md
    other = old.model_copy(update={"config": old.config.model_copy(update={"architecture": "cnn"})})
    assert "Architecture: cnn" in render.render_markdown(other)
    assert tables.comparison_rows(other)[0][1] == "scratch cnn (100%)"
    assert any(r == ["architecture", "cnn"] for r in tables.provenance_rows(other))

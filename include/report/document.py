"""metrics.json as typed models: one sub-model per section, its JSON schema generated from them.

Where each section is computed (one place each):
- `include/evidence.py` computes every section from the run's own results and inputs: config, data,
  models, headline (its `verdict` is tonight's t verdict), accuracy_table, curve, time_to_accuracy,
  learning_curves, confusion_matrices, results and timings, and assembles the document
  (`evidence.document`), the top-level pooled `verdict` included;
- `tasks/nightly.py` computes the `nightly` section (it reads the history and the champion);
- `tasks/compare_report.py` only gathers inputs (files, Airflow, provenance, history), calls those
  two, and writes the files. Readers parse a file with `MetricsDocument.model_validate_json` and use
  attributes, never string keys.

Old runs' files (schema_version 2) must keep parsing: a key an older writer may have left out has a
default, a key a model does not name passes through (extra="allow"), and `to_json` writes only the
keys that were set, so the JSON keeps version 2's keys and nesting. The schema in
`reports/metrics.schema.json` is generated: `python -m include.report.document --schema > reports/metrics.schema.json`
(tests/unit/test_metrics_document.py fails when it differs from the models).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from include.results import Finding, ModelResult, TimeToAccuracy

SCHEMA_VERSION = 2  # 2: t interval for the error-rate reduction, accuracy_table, timings, trend
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "reports" / "metrics.schema.json"

Prob = float  # a fraction in [0, 1]; not constrained here: old files are read back as they are
VerdictKind = Literal["improves", "non_inferior", "worse", "no_difference", "inconclusive"]
BySeed = dict[str, Any]  # seed (a string, as JSON object keys are) -> value


class Section(BaseModel):
    """A section of metrics.json: unknown keys pass through, so an older or newer file still parses."""

    model_config = ConfigDict(extra="allow")


class Dataset(Section):
    name: str
    format: str
    class_names: list[str]
    input_shape: list[int]
    n_pretrain_classes: int
    n_target_classes: int


class Data(Section):
    """The split manifest's description of the data (tasks/split_data.py)."""

    source: str
    sha256: dict[str, str]
    counts: dict[str, int]
    binary_classes: dict[str, str]  # "0", "1" -> class name
    pretrain_classes: list[str]
    dataset: Dataset | None = None  # absent in files written before datasets were named

    @property
    def target_names(self) -> list[str]:
        """The two target classes, label 0 first."""
        return [self.binary_classes[k] for k in sorted(self.binary_classes)]

    @property
    def dataset_name(self) -> str:
        return self.dataset.name if self.dataset else Path(self.source).name or self.source


class Config(Section):
    """Every ExperimentConfig field as run (include/config.py); the ones the report reads are named."""

    target_classes: list[str]
    seeds: list[int]
    fractions: list[float]
    target_val_accuracy: float
    noninferiority_margin: float
    confidence: float
    champion_margin: float
    history_window: int
    architecture: str = "mlp"  # files written before architectures were selectable trained the MLP
    head_epochs: int = 10
    seeds_per_task: int = 1  # before seed chunks, each mapped task trained one seed
    max_replicas_per_graph: int = 1


class MeanSd(Section):
    mean: float
    sd: float
    n: int


class SeedSummary(Section):
    test_accuracy: float
    test_loss: float
    epochs_run: dict[str, int]
    wall_seconds: dict[str, float]
    n_train: int


class Summary(Section):
    """One model at one fraction over seeds; per-phase epochs and fit seconds."""

    n_train: int
    test_accuracy: MeanSd
    test_loss: MeanSd
    per_seed: dict[str, SeedSummary]
    epochs_run: dict[str, int]
    wall_seconds: dict[str, float]


class Models(Section):
    scratch: Summary  # on 100%
    transfer: Summary  # on the headline fraction


class Interval(Section):
    """A two-sided Student-t interval over seeds (include/stats.t_interval); None where undefined."""

    method: str
    confidence: float
    n: int
    mean: float | None
    low: float | None
    high: float | None
    sd: float | None = None
    se: float | None = None
    df: int | None = None
    t_critical: float | None = None
    p_value: float | None = None


class Difference(Interval):
    per_seed: dict[str, float] = Field(default_factory=dict)


class ErrorRateReduction(Interval):
    per_seed: dict[str, float | None] = Field(default_factory=dict)
    n_undefined: int = 0


class McNemar(Section):
    a_only_correct: int  # scratch right, transfer wrong
    b_only_correct: int
    p_value: float


class NonInferiority(Section):
    margin: float
    rule: str
    one_sided_alpha: float
    lower_bound: float | None
    holds: bool
    t_statistic: float | None
    p_value: float | None


class Verdict(Section):
    kind: VerdictKind
    text: str
    basis: Literal["pooled", "tonight"] | None = None
    below_zero: bool | None = None


class SeedReference(Section):
    """The seed notebook's single run."""

    scratch_accuracy: float
    transfer_accuracy: float
    error_rate_reduction: float
    transfer_fraction: float
    scratch_fraction: float


class Headline(Section):
    comparison: str
    transfer_fraction: float
    data_saving: float
    seeds: list[int]
    difference: Difference
    error_rate_reduction: ErrorRateReduction
    mcnemar: dict[str, McNemar]
    noninferiority: NonInferiority
    verdict: Verdict  # tonight's t verdict, basis "tonight"
    seed_reference: SeedReference


class AccuracyRow(Section):
    model: Literal["scratch", "transfer"]
    fraction: float
    n_train: int
    per_seed: dict[str, float]
    mean: float
    sd: float
    n: int


class CurvePoint(Section):
    fraction: float
    n_train: int
    scratch: Summary
    transfer: Summary
    difference: Difference
    error_rate_reduction: ErrorRateReduction
    mcnemar: dict[str, McNemar]


class TtaMean(Section):
    epochs_to_target: float | None
    seconds_to_target: float | None
    epochs_to_best: float | None
    seconds_to_best: float | None
    best_val_accuracy: float | None


class TtaModel(Section):
    per_seed: dict[str, TimeToAccuracy]
    mean: TtaMean
    reached_target: int
    n_seeds: int


class TimeToAccuracySection(Section):
    target_val_accuracy: float
    models: dict[str, TtaModel]  # "scratch", "transfer"


class Phase(Section):
    phase: str
    epochs: int


class LearningCurve(Section):
    metric: str
    n_seeds: int
    epoch: list[int]
    mean: list[float]
    min: list[float]
    max: list[float]
    phases: list[Phase]


class LearningCurves(Section):
    scratch: LearningCurve
    transfer: LearningCurve


class Confusion(Section):
    fraction: float
    summed: list[list[int]]  # 2x2, rows = true label
    per_seed: dict[str, list[list[int]]]


class ConfusionMatrices(Section):
    labels: list[str]
    scratch: Confusion
    transfer: Confusion


class Provenance(Section):
    packages: dict[str, str] = Field(default_factory=dict)
    git_commit: str | None = None
    git_dirty: bool | None = None
    python: str | None = None
    hostname: str | None = None
    platform: str | None = None


class PooledNight(Section):
    run: str | None
    night: str | None
    new_seeds: int
    n_seeds: int
    counts_as_night: bool = True
    mean: float
    low: float
    high: float
    verdict: str | None  # the kind


class Segment(Section):
    segment: str
    started: str | None = None
    last_run: str | None
    n_nights: int
    n_seeds: int
    mean: float | None = None
    low: float | None
    high: float | None
    verdict: str | None
    below_zero: bool | None = None


class Pooled(Section):
    """The anytime-valid interval over every seed of the experiment segment so far (include/pooled.py)."""

    experiment_key: str
    segment: str
    method: str
    confidence: float
    margin: float
    difference_range: float
    n_seeds: int
    n_nights: int
    n_outside: int = 0
    mean: float
    low: float
    high: float
    verdict: Verdict
    nights: list[PooledNight] = Field(default_factory=list)
    segments: list[Segment] = Field(default_factory=list)
    seeds: list[int] = Field(default_factory=list)
    skipped: list[str] = Field(default_factory=list)


class Sentinel(Section):
    status: Literal["drift", "reproduced", "no_reference", "no_sentinel"]
    text: str
    previous_run: str | None = None
    accuracy_changes: dict[str, dict[str, float]] | None = None  # model@fraction -> previous, tonight
    environment_changes: list[str] | None = None


class Regression(Section):
    status: Literal["ok", "regressed", "no_champion", "other_data"]
    margin: float
    gap: float | None = None
    tonight: float | None = None
    champion: float | None = None
    champion_run: str | None = None


class Nightly(Section):
    experiment_key: str
    run_type: str
    logical_date: str | None
    seeds: list[int]
    sentinel_seed: int
    pooled: Pooled
    sentinel: Sentinel
    regression: Regression
    findings: list[Finding] = Field(default_factory=list)


class TaskInstance(Section):
    """One finished task instance as Airflow recorded it. A mapped task's map index counts seed chunks
    (seeds_per_task seeds each, include/seeding.seed_chunks), not seeds."""

    task_id: str
    map_index: int
    state: str
    duration_seconds: float | None
    seed: int | None = None  # the chunk's seed when it holds exactly one
    seeds: list[int] | None = None  # the chunk's seeds (absent in older files)


class FitSeconds(Section):
    task_id: str
    seed: int
    fit_seconds: float


class Timings(Section):
    dag_run_started_at: str | None
    report_finished_at: str
    run_elapsed_seconds: float | None
    compare_report_seconds: float
    task_instances: list[TaskInstance] | None
    task_instances_error: str | None = None
    fit_seconds: list[FitSeconds]


class RunEvidence(Section):
    """What the run's own results say: every section but the nightly ones (include/evidence.py)."""

    schema_version: Literal[2] = SCHEMA_VERSION
    run_id: str
    run: str
    finished_at: str
    config: Config
    data: Data
    models: Models
    headline: Headline
    accuracy_table: list[AccuracyRow]
    curve: list[CurvePoint]
    time_to_accuracy: TimeToAccuracySection
    learning_curves: LearningCurves | None = None
    confusion_matrices: ConfusionMatrices | None = None
    results: list[ModelResult]
    provenance: Provenance = Field(default_factory=Provenance)

    @property
    def dataset_name(self) -> str:
        return self.data.dataset_name

    @property
    def architecture(self) -> str:
        return self.config.architecture


class MetricsDocument(RunEvidence):
    """reports/<run>/metrics.json (reports/SCHEMA.md): the run's evidence plus the nights around it."""

    verdict: Verdict  # the pooled verdict (basis "pooled"), the report's headline
    trend: list[dict[str, Any]] = Field(default_factory=list)  # history.jsonl lines (their own format)
    nightly: Nightly | None = None  # absent in files written before nightly pooling
    timings: Timings | None = None

    @classmethod
    def read(cls, path: Path | str) -> MetricsDocument:
        return cls.model_validate_json(Path(path).read_text(encoding="utf-8"))

    def to_json(self) -> dict[str, Any]:
        """The JSON object to write: the keys that were set (version 2's keys), None as null."""
        return self.model_dump(mode="json", exclude_unset=True)


def json_schema() -> dict[str, Any]:
    schema = MetricsDocument.model_json_schema(mode="serialization")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] != ["--schema"]:
        sys.exit("usage: python -m include.report.document --schema > reports/metrics.schema.json")
    sys.stdout.write(schema_text())

"""One validated, frozen configuration for the whole experiment: each setting is declared once.

A setting's type, default, bounds, description and form section live in its field below (the value
types and the `setting()` helper it is declared with: include/settings.py). The DAG's trigger form
(tasks/dag_params.py) is generated from this model's JSON schema, and the same model validates again
in plain Python, so task functions called outside Airflow get the same checks.
Only stdlib and pydantic here: the DAG file builds its Params from this module at parse time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from include.config_errors import ConfigError, describe
from include.models.architectures import ARCHITECTURES
from include.settings import (
    CLASS_NAMES,
    Bool,
    ClassLabel,
    Count,
    Float,
    Fraction,
    Int,
    LearningRate,
    Margin,
    Seed,
    check_fan_out,
    setting,
)

# The public API: task code imports these names from here.
__all__ = ["CLASS_NAMES", "DEFAULTS", "ConfigError", "ExperimentConfig"]

LR_HINT = "The seed uses 0.001."
CHOOSE_CLASSES = f"Choose two of the dataset's class names (Fashion-MNIST's: {list(CLASS_NAMES)})."
CHOOSE_ARCHITECTURE = f"Choose one of {sorted(ARCHITECTURES)}."
MARGIN_HINT = "An accuracy difference: 0.005 = 0.5 points."


class ExperimentConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    # The seed notebook's binary task: Pullover (2) vs T-shirt/top (0). Names are checked against the
    # data's class names when it is read (split_data): the config cannot know them.
    target_classes: tuple[ClassLabel, ...] = setting(
        ("Pullover", "T-shirt/top"), "Experiment",
        "The two classes of the binary task, by name (folder names, labels.txt, or Fashion-MNIST's names).",
        CHOOSE_CLASSES, unique=True, item="class", min_length=2, max_length=2,
        messages={"too_short": "target_classes must name exactly two classes, got {value!r}. " + CHOOSE_CLASSES,
                  "too_long": "target_classes must name exactly two classes, got {value!r}. " + CHOOSE_CLASSES,
                  "duplicates": "target_classes names the same class twice ({duplicate!r}). "
                                "Choose two different classes."})
    # The network every model of the run uses (include/models/architectures.py): its body is what
    # transfer reuses. "mlp" is the seed's.
    architecture: Literal[tuple(ARCHITECTURES)] = setting(  # type: ignore[valid-type]
        "mlp", "Experiment",
        "Network of every model: " + "; ".join(f"{a.name}: {a.description}" for a in ARCHITECTURES.values()) + ".",
        CHOOSE_ARCHITECTURE,
        messages={"literal_error": "Unknown architecture {value!r}. " + CHOOSE_ARCHITECTURE})
    pretrain_classes: tuple[ClassLabel, ...] = setting(
        (), "Experiment", "Classes the body is pretrained on, by name. Empty: every class but the two targets.",
        "Name at least two classes of the dataset that are not target classes, or leave it empty.",
        unique=True, item="class",
        messages={"duplicates": "pretrain_classes names the same class twice ({duplicate!r})."})
    # Five seeds for the nightly run: one seed is an anecdote, five give a confidence interval.
    seeds: tuple[Seed, ...] = setting(
        (42, 1, 2, 3, 4), "Experiment",
        "Random seeds; every model is trained once per seed (mapped tasks take seeds_per_task seeds each). "
        "Five or more give a confidence interval.",
        "Give at least one integer seed, e.g. [42].", unique=True, item="seed", min_length=1, operational=True)
    # Training fractions for the data-efficiency curve; 0.7 is the seed's comparison point.
    # Scratch also always trains on 1.0, as in the seed.
    fractions: tuple[Fraction, ...] = setting(
        (0.05, 0.1, 0.3, 0.7), "Experiment",
        "Shares of the binary training set for the data-efficiency curve, each in (0, 1]. "
        "0.7 is the seed's comparison point. Scratch also trains on 1.0.",
        "Use a share of the training set, e.g. 0.7.", unique=True, item="fraction", min_length=1)
    # The seed's hyperparameters (SGD, lr 1e-3, batch 32, epochs 20/20/10/50).
    pretrain_epochs: Count = setting(20, "Training", "Epochs for the 8-class pretraining.")
    scratch_epochs: Count = setting(20, "Training", "Epochs for the binary model trained from scratch.")
    head_epochs: Count = setting(10, "Training", "Transfer phase 1: epochs with the pretrained layers frozen.")
    finetune_epochs: Count = setting(50, "Training", "Transfer phase 2: epochs with every layer trainable.")
    pretrain_lr: LearningRate = setting(1e-3, "Training", "SGD learning rate, pretraining.", LR_HINT)
    scratch_lr: LearningRate = setting(1e-3, "Training", "SGD learning rate, scratch model.", LR_HINT)
    head_lr: LearningRate = setting(1e-3, "Training", "SGD learning rate, transfer phase 1 (frozen base).", LR_HINT)
    finetune_lr: LearningRate = setting(1e-3, "Training", "SGD learning rate, transfer phase 2 (fine-tune).",
                                        LR_HINT)
    batch_size: Count = setting(32, "Training", "Mini-batch size for every model.")
    # The seed's stratified validation hold-outs, drawn with random_state 42.
    pretrain_val_size: Count = setting(5000, "Data", "Stratified validation hold-out of the 8-class set "
                                                     "(the seed: 5000).")
    target_val_size: Count = setting(3000, "Data", "Stratified validation hold-out of the binary set "
                                                   "(the seed: 3000).")
    split_random_state: Int = setting(42, "Data", "random_state of the validation hold-outs (the seed: 42).")
    # Where the data is; None searches the default locations for Fashion-MNIST. Operational: the data's
    # identity is its content hashes, not its path.
    data_dir: str | None = setting(
        None, "Data",
        "The dataset: a folder of the four IDX files (gzipped or not), an .npz file (x_train, y_train, "
        "x_test, y_test), or a folder of class sub-folders of images. Empty: Fashion-MNIST from TL_DATA_DIR, "
        "/usr/share/datasets/fashion-mnist, ~/.keras/datasets/fashion-mnist, then a Keras download.",
        "Give a folder or file path, or leave it empty.", operational=True)
    # A reader's name in include/data (registered formats); "auto" asks each reader if the path is its.
    data_format: str = setting(
        "auto", "Data", "The format of data_dir: auto (detect), idx, npz or images.",
        "Use auto, idx, npz or images.", operational=True, min_length=1)
    # Declared resize: every image to [height, width]. Empty: the images must share one size and mode.
    image_size: tuple[Count, ...] = setting(
        (), "Data", "Resize every image to [height, width] (an image folder of mixed sizes or modes needs it). "
        "Empty: use the data's own size.", "Give two integers, e.g. [28, 28], or leave it empty.",
        item="size", max_length=2)
    # An image folder without train/ and test/: this share of each class is held out as the test set.
    test_share: Annotated[Float, Field(gt=0, lt=1)] | None = setting(
        None, "Data", "Image folder without train/ and test/: the stratified share of each class held out "
        "for testing (drawn with split_random_state).", "Use a share such as 0.2, or leave it empty.")
    # Checked against the official content hashes; only synthetic test data turns this off.
    verify_checksums: Bool = setting(
        True, "Data", "Check the files' content against the official SHA-256 values. "
        "Only synthetic test data turns this off.", operational=True)
    # Time-to-accuracy target on the validation set.
    target_val_accuracy: Annotated[Float, Field(gt=0, lt=1)] = setting(
        0.95, "Evidence", "Validation accuracy that counts as 'reached' for the time-to-accuracy table.",
        operational=True)
    # Non-inferiority margin in accuracy (0.005 = 0.5 points), for "as good with less data".
    noninferiority_margin: Margin = setting(
        0.005, "Evidence",
        "Transfer counts as 'not worse' if the CI's lower bound is above minus this (0.005 = 0.5 points).",
        MARGIN_HINT)
    confidence: Annotated[Float, Field(gt=0.5, lt=0.999)] = setting(
        0.95, "Evidence", "Confidence level of the intervals.")
    # The pooled interval's one assumption (docs/nightly.md): per-seed differences lie within +-this.
    # 0.03 = 3 points, 6.5 sd of the measured spread (0.46 points); a value outside is clipped and counted.
    difference_range: Annotated[Float, Field(gt=0, le=1)] = setting(
        0.03, "Evidence",
        "Declared range of plausible per-seed differences (transfer - scratch test accuracy): +-this "
        "(0.03 = +-3 points). The pooled anytime-valid interval relies on it; a difference outside is "
        "clipped to the edge and counted in the report. Changing it starts a new experiment.",
        "A difference in accuracy: 0.03 = 3 points.")
    # Champion gate: a new model must beat the champion's test accuracy by more than this.
    champion_margin: Margin = setting(
        0.0, "Evidence", "A new model replaces the champion only if its test accuracy is higher by more than this.",
        MARGIN_HINT, operational=True)
    # Alerting only: tonight's best transfer model this far below the champion sends an alert.
    regression_alert_margin: Margin = setting(
        0.01, "Evidence", "Send an alert when tonight's best transfer model's test accuracy is below the champion's "
        "by more than this (0.01 = 1 point).", MARGIN_HINT, operational=True)
    history_window: Count = setting(10, "Evidence", "How many past runs the report's trend table shows.",
                                    operational=True)
    # A training task trains its seeds' models of one fraction as one batched graph of replicas
    # (include/models/replicas.py) and runs its fits side by side on the cores. 5 puts the default run's
    # seeds in one task, which keeps a small machine busy; 1 gives many Celery workers a task each.
    seeds_per_task: Count = setting(
        5, "Training", "Seeds per mapped training task: their models train as one batch. 1 = one task per "
        "seed (many workers); 5 puts the default run's seeds in one task.", operational=True)
    # Results do not depend on it (tests/unit/test_replicas.py): it only sets how many graphs of one
    # fraction can run side by side. 3 splits the default 5 seeds into graphs of 3 and 2, so that a
    # phase with one fraction keeps two cores busy; a setting rather than the core count, so the
    # layout does not depend on the machine.
    max_replicas_per_graph: Count = setting(
        3, "Training", "Most seeds trained as one graph; a task's seeds of one fraction are split into graphs "
        "of at most this many, which run side by side on the cores. Changes speed, not the results.",
        operational=True)
    # Guards the worker against a typo such as 5000 seeds; the default run trains 5 x 10 = 50 models.
    max_models_per_run: Count = setting(
        200, "Experiment",
        "Most models one run may train: seeds x (1 pretrained + 1 scratch per fraction and for 1.0 + "
        "1 transfer per fraction). The default run trains 50.",
        "Use fewer seeds or fractions, or raise max_models_per_run.", operational=True)

    # Retention, applied by the run's teardown after a successful run (include/retention.py). Every
    # report, the history and the champion are always kept; these bound the rest.
    keep_model_runs: Count = setting(
        5, "Retention", "Keep the models of this many most recent runs; older runs' models are removed "
        "(their reports, the history and the champion are always kept).", operational=True)
    keep_split_sets: Count = setting(
        2, "Retention", "Keep the split arrays of this many most recently used (data, split settings) "
        "combinations; today's and the one before a change, so a rollback reuses them.", operational=True)

    # -- rules across a value or across settings --------------------------------------------------
    @field_validator("*")
    @classmethod
    def _no_duplicates(cls, value: Any, info: ValidationInfo) -> Any:
        """The declaration's `unique=True` (uniqueItems in the form), checked in Python too."""
        extra = cls.model_fields[info.field_name].json_schema_extra or {}
        if extra.get("uniqueItems") and len(set(value)) != len(value):
            raise PydanticCustomError("duplicates", "duplicates")
        return value

    @field_validator("data_dir", mode="before")
    @classmethod
    def _empty_is_default(cls, value: Any) -> Any:
        if value == "":
            return None  # the form's empty text box: search the default locations
        if isinstance(value, str) and not value.strip():
            raise PydanticCustomError("blank", "blank")
        return value

    @field_validator("pretrain_classes", "image_size", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return () if value is None else value  # the form sends null for a list left empty

    @model_validator(mode="after")
    def _fan_out_fits(self) -> ExperimentConfig:
        check_fan_out(self)
        return self

    @model_validator(mode="after")
    def _classes_and_size(self) -> ExperimentConfig:
        if len(self.image_size) == 1:
            raise ValueError(f"image_size must be [height, width] or empty, got {list(self.image_size)}. "
                             "Give two integers, e.g. [28, 28].")
        both = sorted(set(self.pretrain_classes) & set(self.target_classes))
        if both:
            raise ValueError(f"pretrain_classes and target_classes both name {both}; a class pretrains or is a "
                             "target, not both. Remove it from pretrain_classes.")
        if len(self.pretrain_classes) == 1:
            raise ValueError(f"pretrain_classes names one class ({self.pretrain_classes[0]!r}); a classifier "
                             "needs at least two. Name more, or leave it empty for every other class.")
        return self

    # -- construction -------------------------------------------------------------------------
    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigError(describe(exc, type(self))) from None

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> ExperimentConfig:
        """Build from Airflow params (or any mapping); unknown keys are an error, not ignored."""
        unknown = sorted(set(params) - set(cls.model_fields))
        if unknown:
            raise ConfigError(f"Unknown setting(s) {unknown}. Valid settings are: {sorted(cls.model_fields)}.")
        return cls(**params)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def operational_settings(cls) -> frozenset[str]:
        """Settings declared operational=True: they do not define the experiment."""
        props = cls.model_json_schema()["properties"]
        return frozenset(name for name, prop in props.items() if prop.get("operational"))

    # -- derived values -----------------------------------------------------------------------
    @property
    def scratch_fractions(self) -> tuple[float, ...]:
        """Scratch trains on every transfer fraction and on 100%, as in the seed."""
        return tuple(sorted(set(self.fractions) | {1.0}))

    @property
    def models_per_seed(self) -> int:
        """One pretrained model, one scratch model per scratch fraction, one transfer model per fraction."""
        return 1 + len(self.scratch_fractions) + len(self.fractions)


DEFAULTS = ExperimentConfig()

"""One validated, frozen configuration for the whole experiment.

The Airflow Params form validates with JSON schema at trigger time; this dataclass validates the
same rules again in plain Python, so task functions called outside Airflow get the same checks.
Pure stdlib on purpose: the DAG file builds its Params from these defaults at parse time.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

# Fashion-MNIST label order, as published by Zalando Research.
CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


class ConfigError(ValueError):
    """A permanent error in the experiment settings: retrying cannot fix it."""


@dataclass(frozen=True)
class ExperimentConfig:
    # The seed notebook's binary task: Pullover (2) vs T-shirt/top (0).
    target_classes: tuple[str, str] = ("Pullover", "T-shirt/top")
    # Five seeds for the nightly run: one seed is an anecdote (see ARCHITECTURE.md).
    seeds: tuple[int, ...] = (42, 1, 2, 3, 4)
    # Training fractions for the data-efficiency curve; 0.7 is the seed's comparison point.
    # Scratch also always trains on 1.0, as in the seed.
    fractions: tuple[float, ...] = (0.05, 0.1, 0.3, 0.7)
    # The seed's hyperparameters (SGD, lr 1e-3, batch 32, epochs 20/20/10/50).
    pretrain_epochs: int = 20
    scratch_epochs: int = 20
    head_epochs: int = 10
    finetune_epochs: int = 50
    pretrain_lr: float = 1e-3
    scratch_lr: float = 1e-3
    head_lr: float = 1e-3
    finetune_lr: float = 1e-3
    batch_size: int = 32
    # The seed's stratified validation hold-outs, drawn with random_state 42.
    pretrain_val_size: int = 5000
    target_val_size: int = 3000
    split_random_state: int = 42
    # Optional folder with the four IDX .gz files; None searches the default locations.
    data_dir: str | None = None
    # Checked against the official content hashes; only synthetic test data turns this off.
    verify_checksums: bool = True
    # Time-to-accuracy target on the validation set.
    target_val_accuracy: float = 0.95
    # Non-inferiority margin in accuracy (0.005 = 0.5 points), for "as good with less data".
    noninferiority_margin: float = 0.005
    # Confidence level of the paired-difference interval over seeds.
    confidence: float = 0.95
    # Champion gate: a new model must beat the champion's test accuracy by more than this.
    champion_margin: float = 0.0
    # Keras runs this many batches per graph call, at most one epoch: same updates, less Python
    # overhead. 2048 covers a whole epoch of every default phase (pretraining: 1,344 batches).
    steps_per_execution: int = 2048
    # Runs shown in the report's trend table.
    history_window: int = 10

    def __post_init__(self) -> None:
        _validate(self)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "ExperimentConfig":
        """Build from Airflow params (or any mapping); unknown keys are an error, not ignored."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ConfigError(
                f"Unknown setting(s) {unknown}. Valid settings are: {sorted(known)}."
            )
        kwargs: dict[str, Any] = {}
        for name, value in params.items():
            if name in ("target_classes", "seeds", "fractions") and isinstance(value, list):
                value = tuple(value)
            if name == "data_dir" and value in ("", None):
                value = None
            kwargs[name] = value
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("target_classes", "seeds", "fractions"):
            d[k] = list(d[k])
        return d

    def replace(self, **changes: Any) -> "ExperimentConfig":
        return dataclasses.replace(self, **changes)

    # -- derived values -----------------------------------------------------------------------
    @property
    def target_labels(self) -> tuple[int, int]:
        return tuple(CLASS_NAMES.index(c) for c in self.target_classes)  # type: ignore[return-value]

    @property
    def pretrain_labels(self) -> tuple[int, ...]:
        return tuple(i for i in range(len(CLASS_NAMES)) if i not in self.target_labels)

    @property
    def scratch_fractions(self) -> tuple[float, ...]:
        """Scratch trains on every transfer fraction and on 100%, as in the seed."""
        return tuple(sorted(set(self.fractions) | {1.0}))


def _validate(cfg: ExperimentConfig) -> None:
    def fail(msg: str) -> None:
        raise ConfigError(msg)

    tc = cfg.target_classes
    if not isinstance(tc, (tuple, list)) or len(tc) != 2:
        fail(f"target_classes must name exactly two classes, got {tc!r}. Choose two of {list(CLASS_NAMES)}.")
    for name in tc:
        if name not in CLASS_NAMES:
            fail(f"Unknown class name {name!r} in target_classes. Choose two of {list(CLASS_NAMES)}.")
    if tc[0] == tc[1]:
        fail(f"target_classes names the same class twice ({tc[0]!r}). Choose two different classes.")

    if not isinstance(cfg.seeds, (tuple, list)):
        fail(f"seeds must be a list, got {cfg.seeds!r}. Give at least one integer seed, e.g. [42].")
    if len(cfg.seeds) == 0:
        fail("seeds is empty. Give at least one integer seed, e.g. [42].")
    for s in cfg.seeds:
        if isinstance(s, bool) or not isinstance(s, int):
            fail(f"seeds must be integers, got {s!r}. Use whole numbers such as 42.")
        if s < 0 or s >= 2**31:
            fail(f"seed {s} is out of range. Use 0 <= seed < 2**31.")
    if len(set(cfg.seeds)) != len(cfg.seeds):
        fail(f"seeds contains duplicates: {list(cfg.seeds)}. Each seed must appear once.")

    if not isinstance(cfg.fractions, (tuple, list)):
        fail(f"fractions must be a list, got {cfg.fractions!r}. Give at least one training fraction in (0, 1], e.g. [0.7].")
    if len(cfg.fractions) == 0:
        fail("fractions is empty. Give at least one training fraction in (0, 1], e.g. [0.7].")
    for f in cfg.fractions:
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not math.isfinite(f) or not 0 < f <= 1:
            fail(f"fraction {f!r} is outside (0, 1]. Use a share of the training set, e.g. 0.7.")
    if len(set(cfg.fractions)) != len(cfg.fractions):
        fail(f"fractions contains duplicates: {list(cfg.fractions)}.")

    for name in ("pretrain_epochs", "scratch_epochs", "head_epochs", "finetune_epochs", "batch_size",
                 "steps_per_execution", "history_window"):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            fail(f"{name} must be an integer >= 1, got {v!r}.")
    for name in ("pretrain_lr", "scratch_lr", "head_lr", "finetune_lr"):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            fail(f"{name} must be a positive number, got {v!r}. The seed uses 0.001.")
        if v > 10:
            fail(f"{name}={v} is far too large for SGD; use a value such as 0.001.")
    for name in ("pretrain_val_size", "target_val_size"):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            fail(f"{name} must be an integer >= 1, got {v!r}.")
    if isinstance(cfg.split_random_state, bool) or not isinstance(cfg.split_random_state, int):
        fail(f"split_random_state must be an integer, got {cfg.split_random_state!r}.")
    if cfg.data_dir is not None and (not isinstance(cfg.data_dir, str) or not cfg.data_dir.strip()):
        fail(f"data_dir must be a folder path or empty, got {cfg.data_dir!r}.")
    if not isinstance(cfg.verify_checksums, bool):
        fail(f"verify_checksums must be true or false, got {cfg.verify_checksums!r}.")
    for name, lo, hi in (("target_val_accuracy", 0.0, 1.0), ("confidence", 0.5, 0.999)):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo < v < hi:
            fail(f"{name} must be a number in ({lo}, {hi}), got {v!r}.")
    for name in ("noninferiority_margin", "champion_margin"):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 0.5:
            fail(f"{name} must be an accuracy difference in [0, 0.5), got {v!r} (0.005 = 0.5 points).")


DEFAULTS = ExperimentConfig()

# JSON-schema fragments for every setting, shared by the DAG's Params and by the tests.
PARAM_DESCRIPTIONS: dict[str, str] = {
    "target_classes": "The two Fashion-MNIST classes of the binary task, by name. The other eight pretrain.",
    "seeds": "Random seeds; every model is trained once per seed. Five or more give a confidence interval.",
    "fractions": "Shares of the binary training set for the data-efficiency curve, each in (0, 1]. "
                 "0.7 is the seed's comparison point. Scratch also trains on 1.0.",
    "pretrain_epochs": "Epochs for the 8-class pretraining.",
    "scratch_epochs": "Epochs for the binary model trained from scratch.",
    "head_epochs": "Transfer phase 1: epochs with the pretrained layers frozen.",
    "finetune_epochs": "Transfer phase 2: epochs with every layer trainable.",
    "pretrain_lr": "SGD learning rate, pretraining.",
    "scratch_lr": "SGD learning rate, scratch model.",
    "head_lr": "SGD learning rate, transfer phase 1 (frozen base).",
    "finetune_lr": "SGD learning rate, transfer phase 2 (fine-tune).",
    "batch_size": "Mini-batch size for every model.",
    "pretrain_val_size": "Stratified validation hold-out of the 8-class set (the seed: 5000).",
    "target_val_size": "Stratified validation hold-out of the binary set (the seed: 3000).",
    "split_random_state": "random_state of the validation hold-outs (the seed: 42).",
    "data_dir": "Folder holding the four Fashion-MNIST IDX .gz files. Empty: TL_DATA_DIR, then "
                "/usr/share/datasets/fashion-mnist, then ~/.keras/datasets/fashion-mnist, then a Keras download.",
    "verify_checksums": "Check the files' content against the official SHA-256 values. Only synthetic test data turns this off.",
    "target_val_accuracy": "Validation accuracy that counts as 'reached' for the time-to-accuracy table.",
    "noninferiority_margin": "Transfer counts as 'not worse' if the CI's lower bound is above minus this (0.005 = 0.5 points).",
    "confidence": "Confidence level of the intervals.",
    "champion_margin": "A new model replaces the champion only if its test accuracy is higher by more than this.",
    "steps_per_execution": "Batches per Keras graph call (at most one epoch). Changes speed, not the maths.",
    "history_window": "How many past runs the report's trend table shows.",
}

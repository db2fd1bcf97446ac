"""Typed task results: one type for everything that crosses XCom, one meaning per key.

XCom carries plain JSON: every task returns `to_dict()`, every consumer reads `from_dict()`, which
checks the keys and their types (a renamed or retyped key fails at the boundary, not three tasks on).
Per-phase numbers are always dicts keyed by phase ("pretrain", "train", "head", "finetune"):
`epochs_run` maps a phase to whole epochs, `wall_seconds` a phase to model.fit seconds.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

R = TypeVar("R", bound="Result")

EpochsRun = dict[str, int]  # phase -> epochs run
WallSeconds = dict[str, float]  # phase -> model.fit wall seconds


class Result(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def from_dict(cls: type[R], data: dict[str, Any] | R) -> R:
        return data if isinstance(data, cls) else cls.model_validate(data)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


class SplitJob(Result):
    """split_data -> every mapped task: one per chunk of seeds_per_task seeds, in seed order."""

    manifest: str
    seeds: list[int]


class PretrainResult(Result):
    """pretrain -> transfer.head: the seed's 8-class model."""

    seed: int
    model_path: str
    history_path: str
    val_accuracy: float
    n_train: int
    epochs_run: EpochsRun  # {"pretrain": n}
    wall_seconds: WallSeconds  # {"pretrain": s}


class HeadResult(Result):
    """transfer.head -> transfer.finetune: phase 1 of one (seed, fraction)."""

    seed: int
    fraction: float
    n_train: int
    model_path: str
    history_path: str
    epochs_run: EpochsRun  # {"head": n}
    wall_seconds: WallSeconds  # {"head": s, "pretrain": s of the reused pretrained model}


class TimeToAccuracy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    target: float
    epochs_to_target: int | None
    seconds_to_target: float | None
    best_val_accuracy: float | None
    epochs_to_best: int | None
    seconds_to_best: float | None


class ModelResult(Result):
    """train_scratch / transfer.finetune -> compare_report: one trained binary model, tested.

    Also stored as is in metrics.json `results` (reports/SCHEMA.md)."""

    model: Literal["scratch", "transfer"]
    seed: int
    fraction: float
    n_train: int
    history_path: str
    epochs_run: EpochsRun  # scratch: {"train"}; transfer: {"head", "finetune"}
    wall_seconds: WallSeconds  # scratch: {"train"}; transfer: {"head", "finetune", "pretrain"}
    time_to_accuracy: TimeToAccuracy
    test_accuracy: float
    test_loss: float
    model_path: str
    predictions_path: str


class Candidate(Result):
    """The run's champion candidate: the headline transfer model with the best validation accuracy."""

    run: str
    run_id: str
    seed: int
    fraction: float
    model: Literal["transfer"]
    test_accuracy: float
    model_path: str
    data_sha256: dict[str, str]


class Finding(Result):
    """One alert-worthy finding of the nightly checks: its kind and a sentence saying what happened."""

    kind: str
    what: str


class ReportResult(Result):
    """compare_report -> promote_champion."""

    report_dir: str
    metrics_path: str
    html_path: str
    verdict: str  # the verdict's kind (reports/SCHEMA.md)
    candidate: Candidate
    findings: list[Finding]  # what deserves an alert (tasks/nightly.py); empty on a quiet night


class Champion(Candidate):
    """champion.json: the promoted candidate, its model copied into the champion folder.

    Keys written by an older version pass through untouched: a champion is never refused for them."""

    model_config = ConfigDict(frozen=True, extra="allow")

    source_model_path: str


class PromoteDecision(Result):
    """promote_champion's result: promoted or not, and why."""

    promoted: bool
    reason: str
    champion: Champion | None  # the champion after the decision (None: none yet, not promoted)
    candidate: Candidate | None = None  # set when not promoted
    previous: Champion | None = None  # set when promoted

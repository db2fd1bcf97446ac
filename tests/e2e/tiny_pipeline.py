"""Run the pipeline's plain task functions in order on tiny synthetic IDX data (no scheduler).

The same steps the DAG wires, called directly: split -> pretrain / scratch -> head -> finetune ->
compare_report. Used by the report tests, which need a real metrics.json and report.html.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from include.artifacts import RunPaths
from include.config import ExperimentConfig
from tests.synthetic import TINY_CONF, write_tiny_fashion_mnist


def tiny_config(data_dir: Path, **overrides: Any) -> ExperimentConfig:
    return ExperimentConfig.from_params({**TINY_CONF, "data_dir": str(data_dir), **overrides})


def train_all(cfg: ExperimentConfig, paths: RunPaths) -> tuple[str, list[dict], list[dict]]:
    """Every model of the run; returns (manifest path, scratch results, transfer results)."""
    from tasks import split_data, train

    jobs = split_data.run(cfg, paths)
    scratch, transfer = [], []
    for job in jobs:
        pretrained = train.pretrain_chunk(cfg, job, paths)
        scratch += train.scratch_for_chunk(cfg, job, paths)
        heads = train.head_for_chunk(cfg, job, pretrained, paths)
        transfer += train.finetune_for_chunk(cfg, job, heads, paths)
    return jobs[0]["manifest"], scratch, transfer


def run_tiny(root: Path, run_id: str, data_dir: Path | None = None, **overrides: Any) -> dict[str, Any]:
    """One whole tiny run under artifact root `root`; returns compare_report's result."""
    from tasks import compare_report

    data_dir = data_dir or write_tiny_fashion_mnist(root / "idx")
    cfg = tiny_config(data_dir, **overrides)
    paths = RunPaths.for_run(run_id, root=root)
    manifest, scratch, transfer = train_all(cfg, paths)
    return compare_report.run(cfg, manifest, scratch, transfer, paths, run_id)

"""Glue between Airflow's context and the plain task functions."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from include.artifacts import ArtifactError, RunPaths
from include.config import ConfigError, ExperimentConfig
from include.data import DataError

log = logging.getLogger("tl.tasks")

# Errors no retry can fix: bad settings, bad data, an unusable artifact root.
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (ConfigError, DataError, ArtifactError)

F = TypeVar("F", bound=Callable[..., Any])


def fail_fast(func: F) -> F:
    """Re-raise permanent errors as AirflowFailException so Airflow does not retry them."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if "tensorflow" in sys.modules:  # says where this task's start-up time went (or did not)
            log.info("TensorFlow was already imported in this process: preloaded by its Airflow worker "
                     "(deploy/preloading_executor.py), or by an earlier task of an in-process `dags test`")
        try:
            return func(*args, **kwargs)
        except PERMANENT_ERRORS as exc:
            try:
                from airflow.sdk.exceptions import AirflowFailException
            except ImportError:  # running outside Airflow: the original error is clear enough
                raise
            raise AirflowFailException(f"{exc.__class__.__name__}: {exc}") from exc

    return wrapper  # type: ignore[return-value]


def config_from_params(params: Mapping[str, Any]) -> ExperimentConfig:
    return ExperimentConfig.from_params(dict(params))


def config_for_run(context: Mapping[str, Any]) -> ExperimentConfig:
    """The form's settings, with the seeds this run trains: a nightly run's own, plus the sentinel."""
    from include.seeding import seeds_from_context

    cfg = config_from_params(context["params"])
    return ExperimentConfig(**{**cfg.to_dict(), "seeds": list(seeds_from_context(cfg.seeds, context))})


def run_paths(run_id: str) -> RunPaths:
    return RunPaths.for_run(run_id)


def frac_tag(fraction: float) -> str:
    return f"{fraction:g}"

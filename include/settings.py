"""How a setting of the experiment is declared: the value types, the `setting()` helper, the
Fashion-MNIST class names, and the fan-out limits every run must fit.

include/config.py declares each setting once with these; this module declares none itself.
Only stdlib and pydantic here: the DAG file imports it (through include.config) at parse time.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, Strict

from include.config_errors import ConfigError

if TYPE_CHECKING:
    from include.config import ExperimentConfig

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
ClassLabel = Annotated[str, Strict(), Field(min_length=1)]  # a class name; the data says which exist

# Airflow's own default for [core] max_map_length: the most task instances one mapped task may have.
AIRFLOW_MAX_MAP_LENGTH = 1024

# Strict scalars: no "7" -> 7, no 1.5 -> 1, no True -> 1. JSON numbers still fill float settings.
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]
Bool = Annotated[bool, Strict()]
Seed = Annotated[Int, Field(ge=0, le=2**31 - 1)]
# Seeds from here up are drawn by scheduled nights (include/seeding.py): the form refuses them.
NIGHTLY_SEEDS_FROM = 1_000_000
RESERVED_SEEDS = (f"seeds {NIGHTLY_SEEDS_FROM:,} to {2**31 - 1:,} are reserved for the nightly runs' own seeds; "
                  f"type seeds from 0 to {NIGHTLY_SEEDS_FROM - 1:,}")
Fraction = Annotated[Float, Field(gt=0, le=1)]
LearningRate = Annotated[Float, Field(gt=0, le=10)]  # above 10, SGD diverges at once on standardised pixels
Count = Annotated[Int, Field(ge=1)]
Margin = Annotated[Float, Field(ge=0, lt=0.5)]


def setting(default: Any, section: str, description: str, hint: str = "", *, unique: bool = False,
            item: str | None = None, messages: dict[str, str] | None = None, operational: bool = False,
            **rules: Any) -> Any:
    """One declaration: default, bounds (`rules`: pydantic's ge, gt, min_length, ...), the form's
    description and section, and the fix `hint` that ends every error message about this setting.
    Lists name their `item` ("seed") for messages; `messages` overrides one by error type.
    `operational`: the setting does not change what is measured (paths, speed, display, gates), so
    runs that differ only there pool their evidence (include/pooled.py, experiment key)."""
    extra: dict[str, Any] = {"section": section, "hint": hint}
    if operational:
        extra["operational"] = True
    if unique:
        extra["uniqueItems"] = True  # the form checks it; ExperimentConfig._no_duplicates in Python
    if item:
        extra["item"] = item
    if messages:
        extra["messages"] = messages
    return Field(default, description=description, json_schema_extra=extra, **rules)


def max_map_length() -> int:
    """Airflow's [core] max_map_length: read from Airflow's config when Airflow is already loaded
    (inside a task or the DAG parser), else from its environment variable, else Airflow's default.
    Importing Airflow here just to read one number would cost seconds outside Airflow."""
    if "airflow.configuration" in sys.modules:
        from airflow.configuration import conf

        return conf.getint("core", "max_map_length", fallback=AIRFLOW_MAX_MAP_LENGTH)
    return int(os.environ.get("AIRFLOW__CORE__MAX_MAP_LENGTH", AIRFLOW_MAX_MAP_LENGTH))


def check_fan_out(cfg: ExperimentConfig) -> None:
    """The run's fan-out fits Airflow's mapping limit and the model cap, before anything is written."""
    limit = max_map_length()
    for name in ("seeds", "fractions"):
        n = len(getattr(cfg, name))
        if n > limit:
            why = " (with seeds_per_task=1, one mapped task instance per seed)" if name == "seeds" else ""
            raise ConfigError(
                f"{name} has {n} values; at most {limit} fit Airflow's [core] max_map_length{why}. "
                f"Use fewer {name}, or raise the limit with AIRFLOW__CORE__MAX_MAP_LENGTH.")
    n_models = len(cfg.seeds) * cfg.models_per_seed
    if n_models > cfg.max_models_per_run:
        raise ConfigError(
            f"This run would train {n_models} models ({len(cfg.seeds)} seeds x {cfg.models_per_seed} per seed), "
            f"more than max_models_per_run={cfg.max_models_per_run}. Use fewer seeds or fractions, or raise "
            "max_models_per_run.")

"""The trigger form: one typed, validated Param per ExperimentConfig field (JSON schema).

Built from the config defaults so the form and the plain-Python validation cannot drift apart.
Only stdlib and airflow.sdk here: the DAG file imports this at parse time.
"""

from __future__ import annotations

from typing import Any

from include.config import CLASS_NAMES, DEFAULTS, PARAM_DESCRIPTIONS

_SCHEMAS: dict[str, dict[str, Any]] = {
    "target_classes": {"type": "array", "minItems": 2, "maxItems": 2, "uniqueItems": True,
                       "items": {"type": "string", "enum": list(CLASS_NAMES)}},
    "seeds": {"type": "array", "minItems": 1, "uniqueItems": True,
              "items": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}},
    "fractions": {"type": "array", "minItems": 1, "uniqueItems": True,
                  "items": {"type": "number", "exclusiveMinimum": 0, "maximum": 1}},
    "pretrain_epochs": {"type": "integer", "minimum": 1},
    "scratch_epochs": {"type": "integer", "minimum": 1},
    "head_epochs": {"type": "integer", "minimum": 1},
    "finetune_epochs": {"type": "integer", "minimum": 1},
    "pretrain_lr": {"type": "number", "exclusiveMinimum": 0, "maximum": 10},
    "scratch_lr": {"type": "number", "exclusiveMinimum": 0, "maximum": 10},
    "head_lr": {"type": "number", "exclusiveMinimum": 0, "maximum": 10},
    "finetune_lr": {"type": "number", "exclusiveMinimum": 0, "maximum": 10},
    "batch_size": {"type": "integer", "minimum": 1},
    "pretrain_val_size": {"type": "integer", "minimum": 1},
    "target_val_size": {"type": "integer", "minimum": 1},
    "split_random_state": {"type": "integer"},
    "data_dir": {"type": ["null", "string"]},
    "verify_checksums": {"type": "boolean"},
    "target_val_accuracy": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
    "noninferiority_margin": {"type": "number", "minimum": 0, "exclusiveMaximum": 0.5},
    "confidence": {"type": "number", "exclusiveMinimum": 0.5, "exclusiveMaximum": 0.999},
    "champion_margin": {"type": "number", "minimum": 0, "exclusiveMaximum": 0.5},
    "steps_per_execution": {"type": "integer", "minimum": 1},
    "history_window": {"type": "integer", "minimum": 1},
}

_SECTIONS = {
    "target_classes": "Experiment", "seeds": "Experiment", "fractions": "Experiment",
    "data_dir": "Data", "verify_checksums": "Data", "pretrain_val_size": "Data", "target_val_size": "Data",
    "split_random_state": "Data", "target_val_accuracy": "Evidence", "noninferiority_margin": "Evidence",
    "confidence": "Evidence", "champion_margin": "Evidence", "history_window": "Evidence",
}


def param_specs() -> dict[str, dict[str, Any]]:
    """Plain dicts (default, schema, description, section) for every setting."""
    defaults = DEFAULTS.to_dict()
    if set(_SCHEMAS) != set(defaults):
        raise RuntimeError(f"Param schemas and ExperimentConfig disagree: {set(_SCHEMAS) ^ set(defaults)}")
    return {name: {"default": defaults[name], "schema": _SCHEMAS[name], "description": PARAM_DESCRIPTIONS[name],
                   "section": _SECTIONS.get(name, "Training")} for name in defaults}


def build_params() -> dict[str, Any]:
    from airflow.sdk import Param

    params = {}
    for name, spec in param_specs().items():
        schema = dict(spec["schema"])
        kind = schema.pop("type")
        params[name] = Param(spec["default"], type=kind, description=spec["description"],
                             section=spec["section"], title=name.replace("_", " ").capitalize(), **schema)
    return params

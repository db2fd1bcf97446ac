"""The trigger form: one typed, validated Param per ExperimentConfig setting.

Generated from the config model's JSON schema, so the form and the plain-Python validation share
one declaration and cannot drift apart. Only stdlib, include.config, include.settings and airflow.sdk
here: the DAG file imports this at parse time.
"""

from __future__ import annotations

from typing import Any

from include.config import DEFAULTS, ExperimentConfig
from include.settings import NIGHTLY_SEEDS_FROM, RESERVED_SEEDS, max_map_length

# Keys of the declaration that serve the Python messages, not the form.
_NOT_FOR_THE_FORM = {"default", "description", "section", "title", "hint", "item", "messages", "operational"}
# Lists whose length sets the fan-out: one mapped task instance per seed, models per fraction.
_FAN_OUT = ("seeds", "fractions")


def _form_schema(name: str, prop: dict[str, Any]) -> dict[str, Any]:
    schema = {k: v for k, v in prop.items() if k not in _NOT_FOR_THE_FORM}
    if "anyOf" in schema:  # Optional[X] -> type [null, X]: the form's widget is picked by `type`
        schema["type"] = ["null"] + [s["type"] for s in schema.pop("anyOf") if s["type"] != "null"]
    if schema.get("type") == "array" and not prop.get("default", [None]):
        # Airflow's form marks a field required unless its type allows null, and keeps Trigger
        # disabled while a required list is empty: a list whose default is empty must allow null.
        schema["type"] = ["null", "array"]
    if name == "seeds":  # a typed seed must not take one of a future night's (include/seeding.py)
        schema["items"] = {**schema["items"], "maximum": NIGHTLY_SEEDS_FROM - 1}
    if name in _FAN_OUT:  # the form refuses what Airflow could not map; the config checks it again
        schema["maxItems"] = min(schema.get("maxItems", max_map_length()), max_map_length())
    return schema


def param_specs() -> dict[str, dict[str, Any]]:
    """Plain dicts (default, schema, description, section) for every setting."""
    props = ExperimentConfig.model_json_schema()["properties"]
    defaults = DEFAULTS.to_dict()
    return {name: {"default": defaults[name], "schema": _form_schema(name, prop), "description": _describe(name, prop),
                   "section": prop["section"]} for name, prop in props.items()}


def _describe(name: str, prop: dict[str, Any]) -> str:
    """The form's help text; the seeds' says which values are reserved, as the refusal does."""
    return f"{prop['description']} Note: {RESERVED_SEEDS}." if name == "seeds" else prop["description"]


def build_params() -> dict[str, Any]:
    from airflow.sdk import Param

    params = {}
    for name, spec in param_specs().items():
        schema = dict(spec["schema"])
        kind = schema.pop("type")
        params[name] = Param(spec["default"], type=kind, description=spec["description"],
                             section=spec["section"], title=name.replace("_", " ").capitalize(), **schema)
    return params

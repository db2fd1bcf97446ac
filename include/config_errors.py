"""Pydantic's validation errors, said the way a person fixes them: the setting, what is wrong, how to fix it.

Messages are built from the setting's own declaration (its JSON schema: type, bounds, `hint`, `item`,
`messages`), so a new setting gets clear messages without new code here.
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel, ValidationError


class ConfigError(ValueError):
    """A permanent error in the experiment settings: retrying cannot fix it."""


NOUNS = {"integer": ("an integer", "integers"), "number": ("a number", "numbers"), "boolean": ("true or false",) * 2,
         "string": ("text", "texts")}
TYPE_ERRORS = {"int_type", "int_from_float", "int_parsing", "float_type", "float_parsing", "bool_type",
               "bool_parsing", "string_type", "literal_error", "finite_number"}
BOUND_ERRORS = {"greater_than": ("gt", ">"), "greater_than_equal": ("ge", ">="), "less_than": ("lt", "<"),
                "less_than_equal": ("le", "<=")}


@functools.cache
def _schemas(model: type[BaseModel]) -> dict[str, dict[str, Any]]:
    return model.model_json_schema()["properties"]


def _kind(schema: dict[str, Any]) -> str:
    """JSON type of a value schema; for an optional value (anyOf [X, null]) the type of X."""
    if "type" in schema:
        return schema["type"]
    return next((s["type"] for s in schema.get("anyOf", []) if s.get("type") != "null"), "string")


def interval(schema: dict[str, Any]) -> str | None:
    """The allowed range as '(0, 1]', or None when the value has at most one bound."""
    low = ("(", schema["exclusiveMinimum"]) if "exclusiveMinimum" in schema else ("[", schema.get("minimum"))
    high = (schema["exclusiveMaximum"], ")") if "exclusiveMaximum" in schema else (schema.get("maximum"), "]")
    if low[1] is None or high[0] is None:
        return None
    return f"{low[0]}{low[1]}, {high[0]}{high[1]}"


def _num(x: Any) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)  # 10.0 -> 10, as the declaration wrote it


def _bound(kind: str, op: str, limit: Any) -> str:
    noun = NOUNS.get(kind, NOUNS["number"])[0]
    if op == ">" and limit == 0:
        return f"a positive {noun.split()[-1]}"
    return f"{noun} {op} {_num(limit)}"


def _message(err: dict[str, Any], model: type[BaseModel]) -> str:
    loc, kind_of_error, value = err["loc"], err["type"], err.get("input")
    if not loc:  # a rule across settings (model validator): its message is already written for people
        return str(err.get("ctx", {}).get("error", err["msg"]))
    name = str(loc[0])
    if name not in _schemas(model):
        return f"Unknown setting(s) [{name!r}]. Valid settings are: {sorted(_schemas(model))}."
    schema = _schemas(model)[name]
    hint = schema.get("hint", "")
    in_list = len(loc) > 1
    value_schema = schema.get("items", {}) if in_list else schema
    kind = _kind(value_schema)
    custom = schema.get("messages", {}).get(kind_of_error)
    if custom:
        dups = [v for i, v in enumerate(value or ()) if v in list(value)[:i]] if kind_of_error == "duplicates" else []
        return custom.format(value=value, duplicate=dups[0] if dups else None)
    item = schema.get("item", name)
    if kind_of_error == "tuple_type":
        return f"{name} must be a list, got {value!r}. {hint}".strip()
    if kind_of_error == "too_short" and not value:
        return f"{name} is empty. {hint}".strip()
    if kind_of_error in ("too_short", "too_long"):
        limit = "at least" if kind_of_error == "too_short" else "at most"
        n = schema["minItems"] if kind_of_error == "too_short" else schema["maxItems"]
        return f"{name} has {len(value)} values, {limit} {n} are allowed. {hint}".strip()
    if kind_of_error == "duplicates":
        return f"{name} contains duplicates: {list(value)}. Each {item} must appear once."
    if kind_of_error == "blank":
        return f"{name} must be a folder path or empty, got {value!r}. {hint}".strip()
    if kind_of_error == "value_error":
        return str(err.get("ctx", {}).get("error", err["msg"]))
    if kind_of_error in TYPE_ERRORS:
        if in_list:
            example = (_schemas(model)[name].get("default") or [None])[0]
            how = f"Use whole numbers such as {example}." if kind == "integer" else hint
            return f"{name} must be {NOUNS.get(kind, NOUNS['string'])[1]}, got {value!r}. {how}".strip()
        what = "a finite number" if kind_of_error == "finite_number" else NOUNS.get(kind, NOUNS["string"])[0]
        return f"{name} must be {what}, got {value!r}. {hint}".strip()
    if kind_of_error in BOUND_ERRORS:
        key, op = BOUND_ERRORS[kind_of_error]
        allowed = interval(value_schema)
        if in_list and allowed:
            return f"{item} {value!r} is outside {allowed}. {hint}".strip()
        rule = _bound(kind, op, err["ctx"][key])
        where = f" (allowed: {allowed})" if allowed else ""
        return f"{name} must be {rule}, got {value!r}{where}. {hint}".strip()
    return f"{name}: {err['msg']}, got {value!r}. {hint}".strip()  # a pydantic rule not worded above


def describe(exc: ValidationError, model: type[BaseModel]) -> str:
    """Every problem pydantic found, one sentence each (most runs have one)."""
    errors = exc.errors()
    bad_items = {e["loc"][0] for e in errors if len(e["loc"]) > 1}
    # A list with a bad item also fails its length check (the bad item is dropped): say the cause only.
    errors = [e for e in errors if not (e["type"] in ("too_short", "too_long") and e["loc"][0] in bad_items
                                        and len(e["loc"]) == 1)]
    return " ".join(dict.fromkeys(_message(e, model) for e in errors))

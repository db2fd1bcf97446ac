"""Sentinel drift: the fixed sentinel seed must reproduce last night's accuracies bit for bit.

Same data, code and package versions give the same numbers (the pipeline is deterministic), so a
difference means the environment moved. The check compares tonight's sentinel accuracies with the
latest earlier line (arrival order: the history file's) with the same settings, and names what the
two environment records (include/provenance.py: packages, Python, git commit, data hashes) say
changed, or that nothing recorded changed (then the cause is outside the record: hardware, a
library's run-time dispatch).
A drift starts a new segment of the experiment's pooled evidence (include/pooled.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from include.pooled import before_tonight


def sentinel_record(seed: int, results: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The sentinel seed's test accuracy of every model it trained, keyed "model@fraction"."""
    acc = {f"{r['model']}@{float(r['fraction']):g}": float(r["test_accuracy"])
           for r in results if int(r["seed"]) == seed}
    return {"seed": seed, "accuracies": dict(sorted(acc.items()))} if acc else None


def environment(provenance: Mapping[str, Any], data_sha256: Mapping[str, str]) -> dict[str, str]:
    """The recorded environment as flat "what: value" pairs, easy to compare and to quote."""
    env = {f"package {name}": str(v) for name, v in sorted((provenance.get("packages") or {}).items())}
    env.update({"python": str(provenance.get("python")), "git commit": str(provenance.get("git_commit")),
                "code changed since commit": str(provenance.get("git_dirty"))})
    env.update({f"data {name}": str(sha) for name, sha in sorted(data_sha256.items())})
    return env


def changed(old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    return [f"{k}: {old.get(k, '(not recorded)')} -> {new.get(k, '(not recorded)')}"
            for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def _previous(history: Iterable[tuple[int | None, Any]], tonight: Mapping[str, Any]) -> dict[str, Any] | None:
    """The latest line that arrived before tonight (a re-run: before its own line) with these settings."""
    seed = tonight["sentinel"]["seed"]
    earlier, _ = before_tonight(history, tonight)
    for _, row in reversed(earlier):
        if (isinstance(row, dict) and not row.get("failed") and row.get("settings_key") == tonight["settings_key"]
                and isinstance(row.get("sentinel"), dict) and row["sentinel"].get("seed") == seed
                and isinstance(row["sentinel"].get("accuracies"), dict)):
            return row
    return None


def check(history: Iterable[tuple[int | None, Any]], tonight: Mapping[str, Any]) -> dict[str, Any]:
    """{"status": "drift" | "reproduced" | "no_reference" | "no_sentinel", "text", ...}."""
    if not tonight.get("sentinel"):
        return {"status": "no_sentinel", "text": "This run did not train the sentinel seed."}
    prev = _previous(history, tonight)
    seed = tonight["sentinel"]["seed"]
    if prev is None:
        return {"status": "no_reference", "previous_run": None,
                "text": f"Sentinel seed {seed}: no earlier night with these settings to compare with."}
    old, new = prev["sentinel"]["accuracies"], tonight["sentinel"]["accuracies"]
    moved = {k: {"previous": old[k], "tonight": new[k]} for k in sorted(set(old) & set(new)) if old[k] != new[k]}
    env = changed(prev.get("environment") or {}, tonight.get("environment") or {})
    out = {"previous_run": prev["run"], "accuracy_changes": moved, "environment_changes": env}
    if not moved:
        note = f" The environment record changed ({'; '.join(env)}) without changing them." if env else ""
        return {**out, "status": "reproduced",
                "text": f"Sentinel seed {seed} reproduced run {prev['run']} bit for bit "
                        f"({len(set(old) & set(new))} accuracies).{note}"}
    nums = "; ".join(f"{k} {v['previous']:.6f} -> {v['tonight']:.6f}" for k, v in moved.items())
    cause = f"Changed in the environment record: {'; '.join(env)}." if env else "Nothing recorded changed."
    return {**out, "status": "drift",
            "text": f"Environment drift: sentinel seed {seed} no longer reproduces run {prev['run']} ({nums}). {cause}"}

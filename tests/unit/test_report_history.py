"""Run history under concurrent writers, and the champion gate: beats / does not beat / never touched."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from include import history
from include.artifacts import RunPaths
from include.config import ExperimentConfig
from tasks import promote

ROOT = Path(__file__).resolve().parents[2]
SHA = {"train_images": "a" * 64, "test_images": "b" * 64}


def test_append_history_from_concurrent_processes_keeps_every_line(tmp_path):
    """Eight processes append 15 lines each at once: read-modify-replace without the lock would lose lines."""
    path = tmp_path / "reports" / "history.jsonl"
    worker = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        from include import history
        w = sys.argv[1]
        for i in range(15):
            history.append_history(Path({str(path)!r}), {{"run": f"w{{w}}-{{i}}", "worker": w, "i": i}})
    """)
    procs = [subprocess.Popen([sys.executable, "-c", worker, str(w)]) for w in range(8)]
    assert [p.wait(timeout=120) for p in procs] == [0] * 8
    lines = path.read_text().splitlines()
    rows = [json.loads(line) for line in lines]  # every line is whole JSON
    assert len(rows) == 120 and {r["run"] for r in rows} == {f"w{w}-{i}" for w in range(8) for i in range(15)}
    for w in range(8):  # each writer's lines keep their order
        assert [r["i"] for r in rows if r["worker"] == str(w)] == list(range(15))
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".history.jsonl.")]  # no temp leftovers


def test_a_rerun_replaces_its_own_history_line_in_place(tmp_path):
    path = tmp_path / "history.jsonl"
    history.append_history(path, {"run": "a", "v": 1})
    history.append_history(path, {"run": "b", "v": 1})
    rows = history.append_history(path, {"run": "a", "v": 2})
    # The file's order is the order nights arrived (the pooled evidence's order): a re-run keeps its place.
    assert [(r["run"], r["v"]) for r in rows] == [("a", 2), ("b", 1)] == \
        [(r["run"], r["v"]) for r in history.read_history(path)]


# -- champion gate ---------------------------------------------------------------------------------
def _candidate(tmp_path: Path, run: str, acc: float, sha=SHA) -> dict:
    model = tmp_path / "models" / run / "transfer_seed42_frac0.7.keras"
    model.parent.mkdir(parents=True, exist_ok=True)
    model.write_bytes(f"model of {run}".encode())
    return {"run": run, "run_id": f"manual__{run}", "seed": 42, "fraction": 0.7, "model": "transfer",
            "test_accuracy": acc, "model_path": str(model), "data_sha256": sha}


def _gate(tmp_path: Path, candidate: dict, margin: float = 0.0) -> dict:
    cfg = ExperimentConfig(champion_margin=margin)
    return promote.run(cfg, {"candidate": candidate}, RunPaths(root=tmp_path, run=candidate["run"]))


def _snapshot(folder: Path) -> dict:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir() if not p.name.endswith(".lock")}


def test_first_candidate_becomes_champion(tmp_path):
    d = _gate(tmp_path, _candidate(tmp_path, "run1", 0.962))
    assert d["promoted"] and d["reason"] == "no champion yet"
    meta = json.loads((tmp_path / "models" / "champion" / "champion.json").read_text())
    assert (meta["run"], meta["seed"], meta["test_accuracy"], meta["data_sha256"]) == ("run1", 42, 0.962, SHA)
    assert Path(meta["model_path"]).read_bytes() == b"model of run1"
    assert Path(meta["model_path"]).parent == tmp_path / "models" / "champion"


def test_a_better_candidate_replaces_the_champion(tmp_path):
    _gate(tmp_path, _candidate(tmp_path, "run1", 0.962))
    d = _gate(tmp_path, _candidate(tmp_path, "run2", 0.965))
    assert d["promoted"] and d["previous"]["run"] == "run1" and "beats champion" in d["reason"]
    meta = history.read_champion(tmp_path / "models" / "champion")
    assert meta["run"] == "run2" and Path(meta["model_path"]).read_bytes() == b"model of run2"


@pytest.mark.parametrize("acc, margin", [(0.960, 0.0), (0.962, 0.0), (0.964, 0.005), (float("nan"), 0.0)],
                         ids=["worse", "equal", "within-margin", "nan"])
def test_a_candidate_that_does_not_beat_the_champion_touches_nothing(tmp_path, acc, margin):
    _gate(tmp_path, _candidate(tmp_path, "run1", 0.962))
    champ = tmp_path / "models" / "champion"
    before = _snapshot(champ)
    d = _gate(tmp_path, _candidate(tmp_path, "run2", acc), margin)
    assert not d["promoted"] and "does not beat" in d["reason"]
    assert _snapshot(champ) == before  # same files, same bytes, same modification times


def test_a_candidate_on_different_data_is_not_compared(tmp_path):
    _gate(tmp_path, _candidate(tmp_path, "run1", 0.962))
    before = _snapshot(tmp_path / "models" / "champion")
    d = _gate(tmp_path, _candidate(tmp_path, "run2", 0.999, sha={"train_images": "c" * 64}))
    assert not d["promoted"] and "different data" in d["reason"]
    assert _snapshot(tmp_path / "models" / "champion") == before


def test_a_failed_promotion_leaves_the_old_champion(tmp_path):
    _gate(tmp_path, _candidate(tmp_path, "run1", 0.962))
    before = _snapshot(tmp_path / "models" / "champion")
    broken = _candidate(tmp_path, "run2", 0.99)
    Path(broken["model_path"]).unlink()  # the run's model is gone: the copy fails
    with pytest.raises(FileNotFoundError):
        _gate(tmp_path, broken)
    assert _snapshot(tmp_path / "models" / "champion") == before  # no half-copied model, pointer unchanged

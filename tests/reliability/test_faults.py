"""Faults: a SIGKILLed training task, killed writes, reruns, and writers racing on history and champion."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from include import history
from include.artifacts import RunPaths, atomic_path, load_model, write_json
from include.config import ExperimentConfig
from tests.reliability.helpers import ROOT, parse_result, python, subprocess_env
from tests.synthetic import TINY_CONF, write_tiny_fashion_mnist

PRETRAIN = r"""
import json, logging, sys
from pathlib import Path
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
from include.artifacts import RunPaths
from include.config import ExperimentConfig
from tasks.train import pretrain
conf, manifest, run, root = sys.argv[1:5]
r = pretrain(ExperimentConfig.from_params(json.loads(conf)), manifest, 42, RunPaths.for_run(run, root=Path(root)))
print("RESULT " + json.dumps(r), flush=True)
"""


def _complete(path: Path) -> str | None:
    """Why a file under its final name is not a complete artifact, or None when it is."""
    try:
        if path.suffix == ".keras":
            with zipfile.ZipFile(path) as zf:
                bad = zf.testzip()
                return None if bad is None and "model.weights.h5" in zf.namelist() else f"bad zip member {bad}"
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".npy":
            np.load(path, allow_pickle=False)
        return None
    except FileNotFoundError:
        return None  # replaced between listing and opening: fine, the next poll sees the new one
    except Exception as exc:  # any failure to read is the finding
        return f"{type(exc).__name__}: {exc}"


class FinalNameWatcher(threading.Thread):
    """Polls a folder and opens every file under its final (non-hidden) name while tasks write there."""

    def __init__(self, folder: Path) -> None:
        super().__init__(daemon=True)
        self.folder, self.stop, self.seen, self.partial = folder, threading.Event(), set(), []

    def run(self) -> None:
        while not self.stop.is_set():
            if self.folder.is_dir():
                for p in self.folder.iterdir():
                    if not p.name.startswith("."):  # temp files are hidden: .<final name>.XXXX.tmp
                        self.seen.add(p.name)
                        why = _complete(p)
                        if why:
                            self.partial.append((p.name, why))
            time.sleep(0.002)


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> dict:
    from tasks import split_data

    base = tmp_path_factory.mktemp("faults")
    conf = {**TINY_CONF, "seeds": [42], "fractions": [0.5], "data_dir": str(write_tiny_fashion_mnist(base / "idx"))}
    root = base / "artifacts"
    job = split_data.run(ExperimentConfig.from_params(conf), RunPaths.for_run("faults", root=root))[0]
    return {"conf": conf, "root": root, "manifest": job["manifest"]}


@pytest.mark.training
def test_sigkill_mid_epoch_then_rerun_gives_the_uninterrupted_result(split, tmp_path):
    conf = json.dumps({**split["conf"], "pretrain_epochs": 20})
    root, manifest = split["root"], split["manifest"]
    run_dir = RunPaths.for_run("killed", root=root).models
    watcher = FinalNameWatcher(run_dir)
    watcher.start()
    env = subprocess_env()
    # The uninterrupted reference runs alongside the doomed one (same seed, separate run folder).
    reference = subprocess.Popen([sys.executable, "-c", PRETRAIN, conf, manifest, "reference", str(root)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    with open(tmp_path / "killed.stderr", "w") as err:
        doomed = subprocess.Popen([sys.executable, "-c", PRETRAIN, conf, manifest, "killed", str(root)],
                                  stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT, env=env)
        log = []
        for line in doomed.stdout:  # one log line per epoch: wait for the end of epoch 3, then kill in epoch 4
            log.append(line)
            if "pretrain[seed=42] epoch 3:" in line:
                doomed.send_signal(signal.SIGKILL)
                break
        doomed.wait()
    assert doomed.returncode == -signal.SIGKILL, "".join(log)
    assert not (run_dir / "pretrain_seed42.keras").exists()  # killed before the end: nothing final written

    rerun = python(PRETRAIN, conf, manifest, "killed", str(root))  # the retry: same task, same run folder
    out, err = reference.communicate()
    ref = parse_result(reference.returncode, out, err)
    watcher.stop.set()
    watcher.join()

    assert watcher.partial == [], watcher.partial  # never a half-written file under a final name
    assert "pretrain_seed42.keras" in watcher.seen  # the watcher did see the final files appear
    assert rerun["epochs_run"] == ref["epochs_run"] == {"pretrain": 20}
    assert rerun["val_accuracy"] == ref["val_accuracy"]
    a, b = load_model(rerun["model_path"]), load_model(ref["model_path"])
    assert all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights(), strict=True))  # bit-identical


KILL_WRITER = r"""
import sys, time
from pathlib import Path
from include.artifacts import atomic_path
with atomic_path(Path(sys.argv[1])) as tmp:
    with open(tmp, "wb") as fh:
        for i in range(100000):
            fh.write(b"new" * 4096)
            fh.flush()
            print("chunk", i, flush=True)
            time.sleep(0.001)
"""


@pytest.mark.unit
def test_sigkill_during_a_write_leaves_the_old_file(tmp_path):
    final = tmp_path / "metrics.json"
    final.write_text('{"old": true}\n')
    proc = subprocess.Popen([sys.executable, "-c", KILL_WRITER, str(final)], stdout=subprocess.PIPE, text=True,
                            cwd=ROOT, env=subprocess_env())
    for line in proc.stdout:
        if line.startswith("chunk 20"):  # the temp file holds 20 chunks: the write is well under way
            temps = list(tmp_path.glob(".metrics.json.*.tmp"))
            assert len(temps) == 1 and temps[0].stat().st_size >= 20 * 3 * 4096
            proc.send_signal(signal.SIGKILL)
            break
    assert proc.wait() == -signal.SIGKILL
    assert json.loads(final.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == ["metrics.json"]
    # The rerun's write of the same file clears the killed writer's temp file.
    neighbour = tmp_path / ".other.json.abc.tmp"  # another file's temp is not touched
    neighbour.write_text("x")
    write_json(final, {"new": True})
    assert json.loads(final.read_text()) == {"new": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.json.abc.tmp", "metrics.json"]


@pytest.mark.unit
def test_failed_write_removes_its_temp_file_and_keeps_the_old_one(tmp_path):
    final = tmp_path / "report.html"
    final.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(final) as tmp:
        tmp.write_text("half")
        raise RuntimeError("renderer crashed")
    assert final.read_text() == "old" and sorted(tmp_path.iterdir()) == [final]


@pytest.mark.training
def test_rerunning_a_task_gives_the_same_outputs(split, tmp_path):
    """Clearing a task and running it again (same run, same seed) reproduces its outputs."""
    from tasks import split_data, train

    cfg = ExperimentConfig.from_params(split["conf"])
    paths = RunPaths.for_run("rerun", root=tmp_path)

    def data_bytes():  # the run's scratch and the split arrays in the shared store
        return {p.relative_to(paths.root): p.read_bytes() for folder in (paths.data, paths.split_store)
                for p in folder.rglob("*") if p.is_file()}

    jobs1 = split_data.run(cfg, paths)
    first = data_bytes()
    assert split_data.run(cfg, paths) == jobs1 and data_bytes() == first and len(first) >= 12

    manifest, job = jobs1[0]["manifest"], jobs1[0]

    def outputs(results):
        """Everything a training task hands on: metrics, weights of its models, test predictions."""
        results = results if isinstance(results, list) else [results]
        out = []
        for r in results:
            out.append({k: v for k, v in r.items() if "wall" not in k and k != "time_to_accuracy"})
            out.append([w.tobytes() for w in load_model(r["model_path"]).get_weights()])
            if "predictions_path" in r:
                out.append(Path(r["predictions_path"]).read_bytes())
        return out

    pretrained = train.pretrain(cfg, manifest, 42, paths)
    assert outputs(pretrained) == outputs(train.pretrain(cfg, manifest, 42, paths)), "pretrain"
    scratch = train.scratch_for_chunk(cfg, job, paths)
    assert outputs(scratch) == outputs(train.scratch_for_chunk(cfg, job, paths)), "train_scratch"
    heads = train.head_for_chunk(cfg, job, [pretrained], paths)
    assert outputs(heads) == outputs(train.head_for_chunk(cfg, job, [pretrained], paths)), "transfer.head"
    tuned = train.finetune_for_chunk(cfg, job, heads, paths)
    assert outputs(tuned) == outputs(train.finetune_for_chunk(cfg, job, heads, paths)), "transfer.finetune"
    assert [p.name for p in paths.models.iterdir() if p.name.startswith(".")] == []  # no temp debris


RACER = r"""
import json, sys, time
from pathlib import Path
from include import history
root, worker, n = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
accs = json.loads(sys.argv[4])
while not (root / "go").exists():
    time.sleep(0.001)
for i in range(n):
    run = f"w{worker}-{i}"
    history.append_history(root / "reports" / "history.jsonl", {"run": run, "acc": accs[i], "pad": "x" * 4000})
    history.promote_if_better(root / "models" / "champion",
                              {"run": run, "test_accuracy": accs[i], "model_path": str(root / "runs" / f"{run}.keras")},
                              0.0)
print("RESULT " + json.dumps({"worker": worker}), flush=True)
"""


@pytest.mark.unit
def test_history_and_champion_stay_valid_under_racing_writers(tmp_path):
    workers, n = 4, 20
    rng = np.random.default_rng(0)
    accs = {w: rng.random(n).round(6).tolist() for w in range(workers)}
    (tmp_path / "runs").mkdir()
    for w in range(workers):
        for i in range(n):
            (tmp_path / "runs" / f"w{w}-{i}.keras").write_bytes(f"model w{w}-{i}\n".encode() * 200)
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(tmp_path), str(w), str(n), json.dumps(accs[w])],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                              env=subprocess_env()) for w in range(workers)]
    hist, champ_dir = tmp_path / "reports" / "history.jsonl", tmp_path / "models" / "champion"
    problems = []
    (tmp_path / "go").touch()  # start everyone at once
    while any(p.poll() is None for p in procs):  # a reader racing the writers sees only whole files
        try:
            rows = history.read_history(hist)
            champ = history.read_champion(champ_dir)
            if champ is not None:
                content = Path(champ["model_path"]).read_bytes()
                if not content.startswith(f"model {champ['run']}\n".encode()):
                    problems.append(("champion pointer and model disagree", champ["run"]))
            if len({r["run"] for r in rows}) != len(rows):
                problems.append("duplicate history line")
        except (ValueError, OSError) as exc:
            problems.append(repr(exc))
    for p in procs:
        parse_result(p.returncode, *p.communicate())
    assert problems == []
    rows = history.read_history(hist)
    assert sorted(r["run"] for r in rows) == sorted(f"w{w}-{i}" for w in range(workers) for i in range(n))
    champ = history.read_champion(champ_dir)
    best = max((a, f"w{w}-{i}") for w in range(workers) for i, a in enumerate(accs[w]))
    assert (champ["test_accuracy"], champ["run"]) == best
    assert Path(champ["model_path"]).read_bytes() == (tmp_path / "runs" / f"{best[1]}.keras").read_bytes()
    assert not list(tmp_path.rglob(".*.tmp*"))  # no temp files left behind

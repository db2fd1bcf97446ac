"""Steps 2-4: pretrain (8 classes), scratch baseline (2 classes), two-phase transfer."""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from include import artifacts
from include.artifacts import RunPaths
from include.config import ExperimentConfig
from include.results import HeadResult, ModelResult, PretrainResult, SplitJob
from tasks.common import frac_tag

log = logging.getLogger("tl.train")


class Split:
    """Read-only view of the split manifest; arrays are memory-mapped, never decoded again."""

    def __init__(self, manifest_path: str | Path) -> None:
        self.path = Path(manifest_path)
        try:
            self.manifest = artifacts.read_json(self.path)
        except (OSError, ValueError) as exc:  # missing or damaged: only re-running split_data helps
            raise artifacts.BadArtifactError(f"{self.path}: split manifest is missing or unreadable ({exc}). "
                                             "Clear and re-run split_data for this run.") from exc

    def array(self, name: str) -> np.ndarray:
        return artifacts.load_npy(self.manifest["arrays"][name])

    def subset_rows(self, seed: int, fraction: float) -> np.ndarray:
        """Rows of the binary training set in this seed's stratified subset of `fraction`."""
        return artifacts.load_npy(self.manifest["subsets"][f"seed{seed}_frac{frac_tag(fraction)}"], mmap=False)

    def target_val(self) -> tuple[np.ndarray, np.ndarray]:
        return self.array("target_x_val"), self.array("target_y_val")

    def target_test(self) -> tuple[np.ndarray, np.ndarray]:
        return self.array("target_x_test"), self.array("target_y_test")


def _orders(split: Split, seeds: list[int], fraction: float, stream: str, epochs: int) -> np.ndarray:
    """(K, epochs, n) rows of the binary training set: each seed's subset, in its own shuffle orders."""
    from include.replicas import epoch_orders

    subsets = [split.subset_rows(s, fraction) for s in seeds]
    if len({len(s) for s in subsets}) != 1:  # stratified subsets of one fraction have one size
        raise artifacts.BadArtifactError(f"{split.path}: the subsets of fraction {fraction:g} differ in size "
                                         "between seeds. Clear and re-run split_data for this run.")
    return np.stack([sub[epoch_orders(s, f"{stream}:{fraction:g}", len(sub), epochs)]
                     for s, sub in zip(seeds, subsets)])


def _phase(name: str, seed: int, fraction: float | None = None) -> str:
    return f"{name}[seed={seed}" + ("]" if fraction is None else f",fraction={fraction:g}]")


def _history(fit: Any, k: int, phase: str) -> dict[str, Any]:
    return {"phase": phase, "epochs": fit.records[k], "wall_seconds": fit.wall_seconds,
            "epochs_run": len(fit.records[k])}


def _save_tested(ev: dict[str, Any], models: list[Any], paths: RunPaths, stems: list[str]) -> list[dict[str, Any]]:
    """Save each replica's test predictions (from one batched pass whose accuracy is the share of
    them that are right) and the replica as its seed's usual .keras model."""
    out = []
    for k, (model, stem) in enumerate(zip(models, stems)):
        pred_path = artifacts.save_npy(paths.models / f"{stem}.predictions.npy", ev["predictions"][k])
        model_path = artifacts.save_model(model, paths.models / f"{stem}.keras")
        out.append({"test_accuracy": float(ev["accuracy"][k]), "test_loss": float(ev["loss"][k]),
                    "model_path": str(model_path), "predictions_path": str(pred_path)})
    return out


def _seeded(seed: int, build: Any) -> Any:
    """A model built right after seeding every RNG with `seed`: its initial weights are the seed's."""
    import keras

    keras.utils.set_random_seed(seed)
    return build()


def _tensors(split: Split, *names: str) -> list[Any]:
    """The split's arrays as tensors, converted once per task and shared by its fits."""
    from include.replica_graph import as_tensor

    return [as_tensor(split.array(n), labels="_y_" in n) for n in names]


def _chunk_seeds(job: dict[str, Any]) -> list[int]:
    return SplitJob.from_dict(job).seeds


# The entry points below take and return plain dicts (XCom), read and written through the result
# types of include/results.py.

# -- pretraining: one graph per seed (batching buys nothing at 1,344 steps an epoch) -------------
def pretrain_chunk(cfg: ExperimentConfig, job: dict[str, Any], paths: RunPaths) -> list[dict[str, Any]]:
    """8-class MLP on every class but the two targets, for each seed of the chunk; the seeds' fits
    run side by side on the task's threads. Validated once at the end: no metric reads the
    pretraining's per-epoch validation."""
    from include.networks import build_mlp
    from include.replicas import ReplicaMLP, epoch_orders, map_parallel
    from include.training import configure_tensorflow, tf_threads

    seeds = _chunk_seeds(job)
    split = Split(job["manifest"])
    paths.ensure(paths.models)
    configure_tensorflow(seeds[0])
    x_tr, y_tr, x_va, y_va = _tensors(split, "pretrain_x_train", "pretrain_y_train", "pretrain_x_val", "pretrain_y_val")
    models = [_seeded(s, lambda: build_mlp(len(cfg.pretrain_labels), name="pretrain")) for s in seeds]

    def train(k: int) -> tuple[Any, Any]:
        net = ReplicaMLP.reuse_for([models[k]], cfg.pretrain_lr)
        orders = epoch_orders(seeds[k], "pretrain", len(y_tr), cfg.pretrain_epochs)[None]
        fit = net.fit(x_tr, y_tr, orders, cfg.batch_size, phase=_phase("pretrain", seeds[k]))
        net.to_models([models[k]])
        return fit, net.evaluate(x_va, y_va)

    out = []
    for k, (fit, ev) in enumerate(map_parallel(train, list(range(len(seeds))), tf_threads())):
        seed, stem = seeds[k], f"pretrain_seed{seeds[k]}"
        hist = _history(fit, 0, fit.phase)
        history_path = artifacts.write_json(paths.models / f"{stem}.history.json", {"phases": [hist]})
        model_path = artifacts.save_model(models[k], paths.models / f"{stem}.keras")
        val_acc = float(ev["accuracy"][0])
        log.info("pretrain seed=%d: val_accuracy=%.4f on %d examples in %.1fs", seed, val_acc, len(y_tr),
                 hist["wall_seconds"])
        out.append(PretrainResult(seed=seed, model_path=str(model_path), history_path=str(history_path),
                                  val_accuracy=val_acc, n_train=len(y_tr), epochs_run={"pretrain": hist["epochs_run"]},
                                  wall_seconds={"pretrain": hist["wall_seconds"]}).to_dict())
    return out


def pretrain(cfg: ExperimentConfig, manifest: str, seed: int, paths: RunPaths) -> dict[str, Any]:
    """One seed's pretraining (a chunk of one)."""
    return pretrain_chunk(cfg, {"manifest": manifest, "seeds": [seed]}, paths)[0]


# -- binary phases: one graph per fraction, the chunk's seeds as its replicas -----------------------
def scratch_for_chunk(cfg: ExperimentConfig, job: dict[str, Any], paths: RunPaths) -> list[dict[str, Any]]:
    """Binary MLP from scratch for every seed of the chunk, on 100% and on every fraction's subset."""
    from include.networks import build_mlp
    from include.replicas import ReplicaMLP, map_parallel
    from include.training import configure_tensorflow, tf_threads, time_to_accuracy

    seeds = _chunk_seeds(job)
    split = Split(job["manifest"])
    paths.ensure(paths.models)
    configure_tensorflow(seeds[0])
    x_tr, y_tr, *val = _tensors(split, "target_x_train", "target_y_train", "target_x_val", "target_y_val")
    test = _tensors(split, "target_x_test", "target_y_test")
    fractions = list(cfg.scratch_fractions)
    built = {f: [_seeded(s, lambda: build_mlp(1, name="scratch")) for s in seeds] for f in fractions}

    def train(fraction: float) -> tuple[Any, Any]:
        net = ReplicaMLP.reuse_for(built[fraction], cfg.scratch_lr)
        orders = _orders(split, seeds, fraction, "scratch", cfg.scratch_epochs)
        fit = net.fit(x_tr, y_tr, orders, cfg.batch_size, validation=val,
                      phase=f"scratch[seeds={','.join(map(str, seeds))},fraction={fraction:g}]")
        net.to_models(built[fraction])
        return fit, net.evaluate(*test)  # on this thread: its graph is reused next

    out = []
    for fraction, (fit, ev) in zip(fractions, map_parallel(train, fractions, tf_threads(), cost=lambda f: f)):
        stems = [f"scratch_seed{s}_frac{frac_tag(fraction)}" for s in seeds]
        tested = _save_tested(ev, built[fraction], paths, stems)
        n_train = len(split.subset_rows(seeds[0], fraction))
        for k, seed in enumerate(seeds):
            hist = _history(fit, k, _phase("scratch", seed, fraction))
            history_path = artifacts.write_json(paths.models / f"{stems[k]}.history.json", {"phases": [hist]})
            log.info("scratch seed=%d fraction=%g: test_accuracy=%.4f on %d examples", seed, fraction,
                     tested[k]["test_accuracy"], n_train)
            out.append(ModelResult(
                model="scratch", seed=seed, fraction=fraction, n_train=n_train, history_path=str(history_path),
                epochs_run={"train": hist["epochs_run"]}, wall_seconds={"train": hist["wall_seconds"]},
                time_to_accuracy=time_to_accuracy(hist["epochs"], cfg.target_val_accuracy), **tested[k]).to_dict())
    return out


def head_for_chunk(cfg: ExperimentConfig, job: dict[str, Any], pretrained: list[dict[str, Any]],
                   paths: RunPaths) -> list[dict[str, Any]]:
    """Transfer phase 1 for every seed of the chunk and every fraction: new sigmoid head on the
    seed's pretrained body, body frozen."""
    from include.networks import replace_head, set_trainable
    from include.replicas import ReplicaMLP, map_parallel
    from include.training import configure_tensorflow, tf_threads

    seeds = _chunk_seeds(job)
    pretrained = [PretrainResult.from_dict(p) for p in pretrained]
    if [p.seed for p in pretrained] != seeds:
        raise ValueError(f"pretrained models of seeds {[p.seed for p in pretrained]} handed to seeds {seeds}")
    split = Split(job["manifest"])
    paths.ensure(paths.models)
    configure_tensorflow(seeds[0])
    x_tr, y_tr, *val = _tensors(split, "target_x_train", "target_y_train", "target_x_val", "target_y_val")
    fractions = list(cfg.fractions)

    def new_head(model_path: str) -> Any:
        return set_trainable(replace_head(artifacts.load_model(model_path), 1), trainable=False)

    built = {f: [_seeded(p.seed, partial(new_head, p.model_path)) for p in pretrained] for f in fractions}

    def train(fraction: float) -> Any:
        net = ReplicaMLP.reuse_for(built[fraction], cfg.head_lr)
        orders = _orders(split, seeds, fraction, "head", cfg.head_epochs)
        fit = net.fit(x_tr, y_tr, orders, cfg.batch_size, validation=val,
                      phase=f"transfer.head[seeds={','.join(map(str, seeds))},fraction={fraction:g}]")
        net.to_models(built[fraction])
        return fit

    out = []
    for fraction, fit in zip(fractions, map_parallel(train, fractions, tf_threads(), cost=lambda f: f)):
        for k, p in enumerate(pretrained):
            seed = seeds[k]
            stem = f"transfer_head_seed{seed}_frac{frac_tag(fraction)}"
            hist = _history(fit, k, _phase("transfer.head", seed, fraction))
            history_path = artifacts.write_json(paths.models / f"{stem}.history.json", {"phases": [hist]})
            model_path = artifacts.save_model(built[fraction][k], paths.models / f"{stem}.keras")
            out.append(HeadResult(seed=seed, fraction=fraction, n_train=len(split.subset_rows(seed, fraction)),
                                  model_path=str(model_path), history_path=str(history_path),
                                  epochs_run={"head": hist["epochs_run"]},
                                  wall_seconds={"head": hist["wall_seconds"],
                                                "pretrain": p.wall_seconds["pretrain"]}).to_dict())
    return out


def finetune_for_chunk(cfg: ExperimentConfig, job: dict[str, Any], heads: list[dict[str, Any]],
                       paths: RunPaths) -> list[dict[str, Any]]:
    """Transfer phase 2: every layer of each head model unfrozen and trained on the same subset."""
    from include.networks import set_trainable
    from include.replicas import ReplicaMLP, map_parallel
    from include.training import configure_tensorflow, tf_threads, time_to_accuracy

    seeds = _chunk_seeds(job)
    heads = [HeadResult.from_dict(h) for h in heads]
    split = Split(job["manifest"])
    paths.ensure(paths.models)
    configure_tensorflow(seeds[0])
    x_tr, y_tr, *val = _tensors(split, "target_x_train", "target_y_train", "target_x_val", "target_y_val")
    test = _tensors(split, "target_x_test", "target_y_test")
    fractions = sorted({h.fraction for h in heads}, key=list(cfg.fractions).index)
    by_fraction = {f: sorted((h for h in heads if h.fraction == f), key=lambda h: seeds.index(h.seed))
                   for f in fractions}
    for f, hs in by_fraction.items():
        if [h.seed for h in hs] != seeds:
            raise ValueError(f"heads of seeds {[h.seed for h in hs]} at fraction {f:g} handed to seeds {seeds}")
    built = {f: [set_trainable(artifacts.load_model(h.model_path), trainable=True) for h in hs]
             for f, hs in by_fraction.items()}

    def train(fraction: float) -> tuple[Any, Any]:
        net = ReplicaMLP.reuse_for(built[fraction], cfg.finetune_lr)
        orders = _orders(split, seeds, fraction, "finetune", cfg.finetune_epochs)
        fit = net.fit(x_tr, y_tr, orders, cfg.batch_size, validation=val,
                      epoch_offset=by_fraction[fraction][0].epochs_run["head"],
                      phase=f"transfer.finetune[seeds={','.join(map(str, seeds))},fraction={fraction:g}]")
        net.to_models(built[fraction])
        return fit, net.evaluate(*test)

    out = []
    for fraction, (fit, ev) in zip(fractions, map_parallel(train, fractions, tf_threads(), cost=lambda f: f)):
        stems = [f"transfer_seed{s}_frac{frac_tag(fraction)}" for s in seeds]
        tested = _save_tested(ev, built[fraction], paths, stems)
        for k, (seed, head) in enumerate(zip(seeds, by_fraction[fraction])):
            hist = _history(fit, k, _phase("transfer.finetune", seed, fraction))
            for rec in hist["epochs"]:  # one clock across both phases, for time-to-accuracy
                rec["elapsed_s"] += head.wall_seconds["head"]
            head_hist = artifacts.read_json(head.history_path)["phases"][0]
            history_path = artifacts.write_json(paths.models / f"{stems[k]}.history.json",
                                                {"phases": [head_hist, hist]})
            log.info("transfer seed=%d fraction=%g: test_accuracy=%.4f on %d examples", seed, fraction,
                     tested[k]["test_accuracy"], head.n_train)
            out.append(ModelResult(
                model="transfer", seed=seed, fraction=fraction, n_train=head.n_train, history_path=str(history_path),
                epochs_run={**head.epochs_run, "finetune": hist["epochs_run"]},
                wall_seconds={"head": head.wall_seconds["head"], "finetune": hist["wall_seconds"],
                              "pretrain": head.wall_seconds["pretrain"]},
                time_to_accuracy=time_to_accuracy(head_hist["epochs"] + hist["epochs"], cfg.target_val_accuracy),
                **tested[k]).to_dict())
    return out

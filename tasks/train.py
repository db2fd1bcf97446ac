"""Steps 2-4: pretrain (8 classes), scratch baseline (2 classes), two-phase transfer."""

from __future__ import annotations

import logging
from dataclasses import dataclass
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
    from include.models.training import epoch_orders

    subsets = [split.subset_rows(s, fraction) for s in seeds]
    if len({len(s) for s in subsets}) != 1:  # stratified subsets of one fraction have one size
        raise artifacts.BadArtifactError(f"{split.path}: the subsets of fraction {fraction:g} differ in size "
                                         "between seeds. Clear and re-run split_data for this run.")
    return np.stack([sub[epoch_orders(s, f"{stream}:{fraction:g}", len(sub), epochs)]
                     for s, sub in zip(seeds, subsets)])


def _phase(name: str, seed: int, fraction: float | None = None) -> str:
    return f"{name}[seed={seed}" + ("]" if fraction is None else f",fraction={fraction:g}]")


@dataclass
class Trained:
    """One replica's part of a graph's fit: its epoch records, its share of the graph's seconds and,
    when the graph was tested, its test loss, accuracy and predicted labels."""

    records: list[dict[str, float]]
    wall_seconds: float
    test: dict[str, Any] | None = None

    def history(self, phase: str) -> dict[str, Any]:
        return {"phase": phase, "epochs": self.records, "wall_seconds": self.wall_seconds,
                "epochs_run": len(self.records)}


def _save_tested(trained: list[Trained], models: list[Any], paths: RunPaths, stems: list[str]) -> list[dict[str, Any]]:
    """Save each replica's test predictions (from one batched pass whose accuracy is the share of
    them that are right) and the replica as its seed's usual .keras model."""
    out = []
    for t, model, stem in zip(trained, models, stems):
        pred_path = artifacts.save_npy(paths.models / f"{stem}.predictions.npy", t.test["predictions"])
        model_path = artifacts.save_model(model, paths.models / f"{stem}.keras")
        out.append({"test_accuracy": float(t.test["accuracy"]), "test_loss": float(t.test["loss"]),
                    "model_path": str(model_path), "predictions_path": str(pred_path)})
    return out


def _seeded(seed: int, build: Any) -> Any:
    """A model built right after seeding every RNG with `seed`: its initial weights are the seed's."""
    import keras

    keras.utils.set_random_seed(seed)
    return build()


def _tensors(split: Split, *names: str) -> list[Any]:
    """The split's arrays as tensors, converted once per task and shared by its fits."""
    from include.models.replicas import as_tensor

    return [as_tensor(split.array(n), labels="_y_" in n) for n in names]


def _chunk_seeds(job: dict[str, Any]) -> list[int]:
    return SplitJob.from_dict(job).seeds


def _builder(cfg: ExperimentConfig, split: Split, images: str) -> Any:
    """build(n_outputs, name): the run's architecture for the images' shape, read from the data. An
    architecture that cannot take that shape fails here, before anything is trained or written."""
    from include.models.architectures import architecture, build_model

    shape = tuple(split.array(images).shape[1:])
    architecture(cfg.architecture).check(shape)
    return lambda n_outputs, name: build_model(cfg.architecture, n_outputs, shape, name=name)


def _train_binary(cfg: ExperimentConfig, split: Split, seeds: list[int], built: dict[float, list[Any]],
                  lr: float, stream: str, label: str, epochs: int, data: list[Any], test: list[Any] | None = None,
                  epoch_offset: dict[float, int] | None = None) -> dict[float, list[Trained]]:
    """Train every fraction's replicas (built[fraction][k] is seed k's model) on their subsets.

    Each fraction's K replicas are split into graphs of at most max_replicas_per_graph
    (include/models/training.py:replica_groups) and the graphs run side by side on the task's
    threads, costliest first. A replica's result does not depend on its graph. Returns, per
    fraction, each seed's `Trained`; the trained weights are back in `built`."""
    from include.models.replicas import ReplicaTrainer
    from include.models.training import map_parallel, replica_groups, tf_threads

    x_tr, y_tr, *val = data
    graphs = [(f, group) for f in built for group in replica_groups(len(seeds), cfg.max_replicas_per_graph)]

    def train(graph: tuple[float, list[int]]) -> tuple[Any, Any]:
        fraction, group = graph
        models = [built[fraction][i] for i in group]
        net = ReplicaTrainer.reuse_for(models, lr)
        fit = net.fit(x_tr, y_tr, _orders(split, [seeds[i] for i in group], fraction, stream, epochs),
                      cfg.batch_size, validation=val, epoch_offset=(epoch_offset or {}).get(fraction, 0),
                      phase=f"{label}[seeds={','.join(str(seeds[i]) for i in group)},fraction={fraction:g}]")
        net.to_models(models)
        return fit, (net.evaluate(*test) if test else None)  # on this thread: its graph is reused next

    out: dict[float, list[Trained]] = {f: [] for f in built}
    for (fraction, group), (fit, ev) in zip(graphs, map_parallel(train, graphs, tf_threads(),
                                                                   cost=lambda g: g[0] * len(g[1]))):
        for j in range(len(group)):
            tested = None if ev is None else {key: ev[key][j] for key in ("accuracy", "loss", "predictions")}
            out[fraction].append(Trained(fit.records[j], fit.wall_seconds, tested))
    return out


# The entry points below take and return plain dicts (XCom), read and written through the result
# types of include/results.py.

# -- pretraining: one graph per seed (batching buys nothing at 1,344 steps an epoch) -------------
def pretrain_chunk(cfg: ExperimentConfig, job: dict[str, Any], paths: RunPaths) -> list[dict[str, Any]]:
    """The run's architecture with an 8-class head on every class but the two targets, for each seed
    of the chunk; the seeds' fits run side by side on the task's threads. Validated once at the end:
    no metric reads the pretraining's per-epoch validation."""
    from include.models.replicas import ReplicaTrainer
    from include.models.training import configure_tensorflow, epoch_orders, map_parallel, tf_threads

    seeds = _chunk_seeds(job)
    split = Split(job["manifest"])
    build = _builder(cfg, split, "pretrain_x_train")
    paths.ensure(paths.models)
    configure_tensorflow(seeds[0])
    x_tr, y_tr, x_va, y_va = _tensors(split, "pretrain_x_train", "pretrain_y_train", "pretrain_x_val", "pretrain_y_val")
    models = [_seeded(s, lambda: build(split.manifest["dataset"]["n_pretrain_classes"], "pretrain")) for s in seeds]

    def train(k: int) -> tuple[Any, Any]:
        net = ReplicaTrainer.reuse_for([models[k]], cfg.pretrain_lr)
        orders = epoch_orders(seeds[k], "pretrain", len(y_tr), cfg.pretrain_epochs)[None]
        fit = net.fit(x_tr, y_tr, orders, cfg.batch_size, phase=_phase("pretrain", seeds[k]))
        net.to_models([models[k]])
        return fit, net.evaluate(x_va, y_va)

    out = []
    for k, (fit, ev) in enumerate(map_parallel(train, list(range(len(seeds))), tf_threads())):
        seed, stem = seeds[k], f"pretrain_seed{seeds[k]}"
        hist = Trained(fit.records[0], fit.wall_seconds).history(fit.phase)
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


# -- binary phases: per fraction, the chunk's seeds as replicas in graphs of at most N ----------------
def scratch_for_chunk(cfg: ExperimentConfig, job: dict[str, Any], paths: RunPaths) -> list[dict[str, Any]]:
    """The run's architecture with a sigmoid head, from scratch, for every seed of the chunk, on 100%
    and on every fraction's subset."""
    from include.models.training import configure_tensorflow, time_to_accuracy

    seeds = _chunk_seeds(job)
    split = Split(job["manifest"])
    build = _builder(cfg, split, "target_x_train")
    paths.ensure(paths.models)
    configure_tensorflow(seeds[0])
    data = _tensors(split, "target_x_train", "target_y_train", "target_x_val", "target_y_val")
    test = _tensors(split, "target_x_test", "target_y_test")
    built = {f: [_seeded(s, lambda: build(1, "scratch")) for s in seeds] for f in cfg.scratch_fractions}
    trained = _train_binary(cfg, split, seeds, built, cfg.scratch_lr, "scratch", "scratch", cfg.scratch_epochs,
                            data, test)
    out = []
    for fraction, results in trained.items():
        stems = [f"scratch_seed{s}_frac{frac_tag(fraction)}" for s in seeds]
        tested = _save_tested(results, built[fraction], paths, stems)
        n_train = len(split.subset_rows(seeds[0], fraction))
        for k, seed in enumerate(seeds):
            hist = results[k].history(_phase("scratch", seed, fraction))
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
    from include.models.architectures import replace_head, set_trainable
    from include.models.training import configure_tensorflow

    seeds = _chunk_seeds(job)
    pretrained = [PretrainResult.from_dict(p) for p in pretrained]
    if [p.seed for p in pretrained] != seeds:
        raise ValueError(f"pretrained models of seeds {[p.seed for p in pretrained]} handed to seeds {seeds}")
    split = Split(job["manifest"])
    paths.ensure(paths.models)
    configure_tensorflow(seeds[0])
    data = _tensors(split, "target_x_train", "target_y_train", "target_x_val", "target_y_val")

    def new_head(model_path: str) -> Any:
        return set_trainable(replace_head(artifacts.load_model(model_path), 1), trainable=False)

    built = {f: [_seeded(p.seed, partial(new_head, p.model_path)) for p in pretrained] for f in cfg.fractions}
    trained = _train_binary(cfg, split, seeds, built, cfg.head_lr, "head", "transfer.head", cfg.head_epochs, data)
    out = []
    for fraction, results in trained.items():
        for k, p in enumerate(pretrained):
            seed = seeds[k]
            stem = f"transfer_head_seed{seed}_frac{frac_tag(fraction)}"
            hist = results[k].history(_phase("transfer.head", seed, fraction))
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
    from include.models.architectures import set_trainable
    from include.models.training import configure_tensorflow, time_to_accuracy

    seeds = _chunk_seeds(job)
    heads = [HeadResult.from_dict(h) for h in heads]
    split = Split(job["manifest"])
    paths.ensure(paths.models)
    configure_tensorflow(seeds[0])
    data = _tensors(split, "target_x_train", "target_y_train", "target_x_val", "target_y_val")
    test = _tensors(split, "target_x_test", "target_y_test")
    fractions = sorted({h.fraction for h in heads}, key=list(cfg.fractions).index)
    by_fraction = {f: sorted((h for h in heads if h.fraction == f), key=lambda h: seeds.index(h.seed))
                   for f in fractions}
    for f, hs in by_fraction.items():
        if [h.seed for h in hs] != seeds:
            raise ValueError(f"heads of seeds {[h.seed for h in hs]} at fraction {f:g} handed to seeds {seeds}")
    built = {f: [set_trainable(artifacts.load_model(h.model_path), trainable=True) for h in hs]
             for f, hs in by_fraction.items()}
    trained = _train_binary(cfg, split, seeds, built, cfg.finetune_lr, "finetune", "transfer.finetune",
                            cfg.finetune_epochs, data, test,
                            epoch_offset={f: hs[0].epochs_run["head"] for f, hs in by_fraction.items()})
    out = []
    for fraction, results in trained.items():
        stems = [f"transfer_seed{s}_frac{frac_tag(fraction)}" for s in seeds]
        tested = _save_tested(results, built[fraction], paths, stems)
        for k, (seed, head) in enumerate(zip(seeds, by_fraction[fraction])):
            hist = results[k].history(_phase("transfer.finetune", seed, fraction))
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

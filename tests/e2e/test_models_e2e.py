"""The training tasks with any architecture and any graph layout, on tiny synthetic IDX data.

- A seed's models do not depend on how many replicas share a graph (`max_replicas_per_graph`):
  every saved prediction and weight is the same, bit for bit, for 1, 2 or 3 replicas per graph.
- `architecture=cnn` runs the whole pipeline and the saved models are the builder's CNN.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from include.artifacts import RunPaths, load_model
from tests.e2e.tiny_pipeline import run_tiny, tiny_config, train_all
from tests.synthetic import write_tiny_fashion_mnist


def _trained(root: Path, data: Path, n: int) -> dict[str, dict]:
    cfg = tiny_config(data, seeds=[42, 7, 3], fractions=[0.5], max_replicas_per_graph=n)
    _, scratch, transfer = train_all(cfg, RunPaths.for_run(f"n{n}", root=root))
    return {f"{r['model']}:{r['seed']}:{r['fraction']}": r for r in scratch + transfer}


@pytest.mark.training
@pytest.mark.slow
def test_results_do_not_change_with_the_number_of_replicas_per_graph(tmp_path: Path):
    data = write_tiny_fashion_mnist(tmp_path / "idx")
    runs = {n: _trained(tmp_path / f"n{n}", data, n) for n in (1, 2, 3)}
    assert len(runs[3]) == 3 * 3  # scratch at 0.5 and 1.0, transfer at 0.5, for 3 seeds
    for key, ref in runs[3].items():
        for n in (1, 2):
            other = runs[n][key]
            assert other["test_accuracy"] == ref["test_accuracy"] and other["test_loss"] == ref["test_loss"], key
            assert np.array_equal(np.load(other["predictions_path"]), np.load(ref["predictions_path"])), key
            a, b = load_model(other["model_path"]).get_weights(), load_model(ref["model_path"]).get_weights()
            assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True)), key


@pytest.mark.training
def test_a_cnn_run_trains_and_saves_the_builders_cnn(tmp_path: Path):
    result = run_tiny(tmp_path, "cnn-run", architecture="cnn", seeds=[42], fractions=[0.5])
    models = sorted((tmp_path / "models" / "cnn-run").glob("*.keras"))
    assert {p.name.split("_seed")[0] for p in models} >= {"pretrain", "scratch", "transfer", "transfer_head"}
    for path in models:
        kinds = [layer.__class__.__name__ for layer in load_model(path).layers]
        assert kinds[1:5] == ["Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D"], (path.name, kinds)
    # The transfer model's body is the pretrained model's, trained on: its first kernel moved on
    # from the pretrained one, and both differ from the scratch model's.
    pre = load_model(next(p for p in models if p.name.startswith("pretrain"))).layers[1].get_weights()[0]
    tra = load_model(next(p for p in models if p.name.startswith("transfer_seed"))).layers[1].get_weights()[0]
    assert pre.shape == tra.shape == (3, 3, 1, 8) and not np.array_equal(pre, tra)
    assert result  # compare_report ran on the CNN's models

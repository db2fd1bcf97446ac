"""Split invariants: disjoint, stratified, exact sizes; standardisation."""

import numpy as np
import pytest

from include.data import splits


@pytest.fixture
def labels():
    rng = np.random.default_rng(0)
    return rng.permutation(np.repeat(np.array([0, 2]), [60, 40]))


def test_holdout_is_disjoint_exact_and_stratified(labels):
    tr, va = splits.stratified_holdout(labels, val_size=20, random_state=42)
    assert len(tr) == 80 and len(va) == 20
    assert not set(tr) & set(va) and len(set(tr) | set(va)) == 100
    assert (labels[va] == 0).sum() == 12 and (labels[va] == 2).sum() == 8  # 60/40 kept
    tr2, va2 = splits.stratified_holdout(labels, val_size=20, random_state=42)
    assert np.array_equal(tr, tr2) and np.array_equal(va, va2)  # random_state fixes it


def test_subset_stratified_and_seeded(labels):
    a = splits.stratified_subset(labels, 0.5, seed=1)
    assert len(a) == 50 and (labels[a] == 0).sum() == 30
    assert np.array_equal(a, splits.stratified_subset(labels, 0.5, seed=1))
    assert not np.array_equal(a, splits.stratified_subset(labels, 0.5, seed=2))
    assert np.array_equal(splits.stratified_subset(labels, 1.0, seed=1), np.arange(100))


def test_seed_sizes_on_seed_shaped_labels():
    y = np.repeat(np.array([0, 2]), 6000)
    tr, va = splits.stratified_holdout(y, 3000, 42)
    assert (len(tr), len(va)) == (9000, 3000)
    assert len(splits.stratified_subset(y[tr], 0.7, 42)) == 6300


def test_encode_labels_matches_label_encoder():
    from sklearn.preprocessing import LabelEncoder

    y = np.array([2, 0, 0, 2, 2])
    assert splits.encode_labels(y, (2, 0)).tolist() == LabelEncoder().fit_transform(y).tolist() == [1, 0, 0, 1, 1]
    with pytest.raises(ValueError):
        splits.encode_labels(np.array([3]), (0, 2))


def test_standardise_uses_train_stats_and_guards_zero_std():
    train = np.zeros((4, 2, 2), np.uint8)
    train[:, 0, 0] = [0, 2, 4, 6]  # one varying pixel, three constant ones
    other = np.full((1, 2, 2), 3, np.uint8)
    (tr, ot), info = splits.standardise(train, other)
    assert tr.dtype == np.float32 and ot.dtype == np.float32
    assert abs(tr[:, 0, 0].mean()) < 1e-6 and np.isclose(tr[:, 0, 0].std(), 1)
    assert np.isfinite(tr).all() and np.all(tr[:, 1, 1] == 0)
    assert np.isclose(ot[0, 0, 0], 0.0)  # (3 - 3) / std
    assert ot[0, 1, 1] == 3.0  # constant pixel: divided by 1, not 0
    assert info["zero_std_pixels"] == 3


def test_blocked_scaling_is_bit_identical_to_the_whole_array_expression():
    # The seed computes float64 (x - mean) / std over the whole array; blocks must not move a bit.
    x = np.random.default_rng(3).integers(0, 256, size=(1000, 28, 28), dtype=np.uint8)
    mean = x.mean(axis=0, keepdims=True, dtype=np.float64)
    std = x.std(axis=0, keepdims=True, dtype=np.float64)
    whole = ((x - mean) / std).astype(np.float32)
    assert np.array_equal(splits._scale(x, mean, std, rows=37), whole)
    (tr,), _ = splits.standardise(x)
    assert np.array_equal(tr, whole)

"""reference.data: the digits loader and the synthetic control set."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from reference import data


@pytest.fixture(scope="module")
def digits():
    return data.digits()


def test_digits_sizes_shapes_and_classes(digits):
    assert len(digits) == 1797
    assert len(digits.test) == 360  # ceil(0.2 * 1797)
    assert digits.image_shape == (3, 32, 32)
    assert digits.num_classes == 10
    for split in (digits.train, digits.test):
        images, labels = split.tensors
        assert images.dtype == torch.float32 and labels.dtype == torch.int64
        assert set(labels.tolist()) == set(range(10))
        assert torch.equal(images[:, 0], images[:, 2])  # grey replicated to every channel


def test_digits_split_is_stratified(digits):
    totals = np.bincount(load_digits().target, minlength=10)
    test_counts = np.bincount(digits.test.tensors[1].numpy(), minlength=10)
    assert np.all(np.abs(test_counts - 0.2 * totals) <= 1)


def test_digits_normalised_with_train_statistics(digits):
    train = digits.train.tensors[0].double()
    assert abs(train.mean().item()) < 1e-6
    assert train.std().item() == pytest.approx(1.0, abs=1e-6)
    assert 0 < digits.mean < 1 and digits.std > 0  # statistics of [0, 1] pixels


def test_digits_at_native_size_are_the_raw_images():
    d = data.digits(size=8, channels=1, test_fraction=0.5, seed=3)
    raw = load_digits()
    images = torch.cat([d.train.tensors[0], d.test.tensors[0]]).double() * d.std + d.mean
    scaled = torch.from_numpy(raw.images / 16.0)[:, None]
    # every loaded image is one of the raw ones: match them through their sums and labels
    key = lambda imgs: sorted(np.round(imgs.sum(dim=(1, 2, 3)).numpy(), 4).tolist())  # noqa: E731
    assert key(images) == key(scaled)


def test_digits_deterministic_for_a_seed(digits):
    again = data.digits()
    for a, b in zip(
        digits.train.tensors + digits.test.tensors,
        again.train.tensors + again.test.tensors,
        strict=True,
    ):
        assert torch.equal(a, b)
    other = data.digits(seed=1)
    assert not torch.equal(digits.test.tensors[1], other.test.tensors[1])


def test_synthetic_shapes_balance_and_determinism():
    s = data.synthetic(n=500, size=16, num_classes=5, seed=2, channels=3)
    assert len(s) == 500 and s.image_shape == (3, 16, 16) and s.num_classes == 5
    labels = torch.cat([s.train.tensors[1], s.test.tensors[1]])
    assert torch.equal(torch.bincount(labels), torch.full((5,), 100))
    again = data.synthetic(n=500, size=16, num_classes=5, seed=2, channels=3)
    assert torch.equal(s.train.tensors[0], again.train.tensors[0])
    other = data.synthetic(n=500, size=16, num_classes=5, seed=3, channels=3)
    assert not torch.equal(s.train.tensors[0], other.train.tensors[0])


def test_synthetic_is_learnable():
    """Nearest class mean (fit on train) classifies the test split almost perfectly."""
    s = data.synthetic(n=1000, size=16, seed=0)
    xtr, ytr = s.train.tensors
    xte, yte = s.test.tensors
    means = torch.stack([xtr[ytr == k].mean(0) for k in range(s.num_classes)])
    pred = torch.cdist(xte.flatten(1), means.flatten(1)).argmin(1)
    assert (pred == yte).float().mean().item() > 0.95


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda: data.digits(size=4), "size must be an integer >= 8"),
        (lambda: data.digits(test_fraction=1.0), r"test_fraction must lie in \(0, 1\)"),
        (lambda: data.digits(channels=0), "channels"),
        (lambda: data.synthetic(n=30, num_classes=10), "fewer than num_classes"),
        (lambda: data.synthetic(noise=-1.0), "noise must be >= 0"),
    ],
)
def test_bad_arguments_raise(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()

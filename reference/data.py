"""Small image data sets for the convergence checks, with no download.

- :func:`digits`: scikit-learn's bundled handwritten digits (1,797 real 8x8 grey images, 10
  classes; the UCI "Optical Recognition of Handwritten Digits" test set, Alpaydin & Kaynak 1998),
  upsampled to ``size x size`` and replicated to ``channels`` channels so an ImageNet-shaped
  network takes them.
- :func:`synthetic`: a generated control set: one smooth random template per class plus Gaussian
  pixel noise; learnable by construction, so a failure to learn it points at the network or the
  optimiser, not the data.

Both normalise with the mean and standard deviation of their *training* split (one scalar each,
over all pixels), so nothing about the test images leaks into the inputs, and both split with
stratification, so every class has its share in train and test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch.utils.data import TensorDataset

__all__ = ["ImageData", "digits", "synthetic"]


@dataclass(frozen=True)
class ImageData:
    """A train/test pair of ``TensorDataset(images float32 (n, C, H, W), labels int64 (n,))``."""

    name: str
    train: TensorDataset
    test: TensorDataset
    num_classes: int
    mean: float  # the training split's pixel mean, before normalisation
    std: float  # ... and its standard deviation

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.train.tensors[0].shape[1:])

    def __len__(self) -> int:
        return len(self.train) + len(self.test)


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {name}={value!r}")
    return int(value)


def _check_fraction(test_fraction: float) -> float:
    test_fraction = float(test_fraction)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(
            f"test_fraction must lie in (0, 1), got test_fraction={test_fraction!r}; "
            f"0.2 keeps a fifth of the images for testing"
        )
    return test_fraction


def _split_and_normalise(
    name: str,
    images: torch.Tensor,
    labels: np.ndarray,
    *,
    num_classes: int,
    channels: int,
    seed: int,
    test_fraction: float,
) -> ImageData:
    """Stratified split, scalar normalisation with train statistics, channel replication."""
    n = len(labels)
    n_test = math.ceil(test_fraction * n)  # scikit-learn's rounding of a fractional test_size
    if min(n_test, n - n_test) < num_classes:
        raise ValueError(
            f"a stratified split of {n} images with test_fraction={test_fraction} leaves "
            f"{n_test} test and {n - n_test} training images, fewer than num_classes="
            f"{num_classes} in one of them; use more images or a test_fraction nearer 0.5"
        )
    train_idx, test_idx = train_test_split(
        np.arange(n), test_size=test_fraction, stratify=labels, random_state=seed
    )
    train_idx, test_idx = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    mean = images[train_idx].mean()
    std = images[train_idx].std()
    images = (images - mean) / std
    # Replicate the grey channel rather than learn from one: the reference stem takes 3.
    if images.shape[1] == 1 and channels != 1:
        images = images.expand(-1, channels, -1, -1)
    images = images.to(torch.float32).contiguous()
    labels_t = torch.as_tensor(labels, dtype=torch.int64)
    return ImageData(
        name=name,
        train=TensorDataset(images[train_idx], labels_t[train_idx]),
        test=TensorDataset(images[test_idx], labels_t[test_idx]),
        num_classes=num_classes,
        mean=float(mean),
        std=float(std),
    )


def digits(
    *, size: int = 32, seed: int = 0, test_fraction: float = 0.2, channels: int = 3
) -> ImageData:
    """scikit-learn's digits: 1,797 images, 10 classes, as ``(channels, size, size)`` float32.

    Pixels (0..16) are scaled to [0, 1], upsampled 8x8 -> size x size with bilinear
    interpolation (``torch.nn.functional.interpolate``, ``align_corners=False``), normalised with
    the training split's mean and standard deviation and replicated to ``channels`` channels.
    The split is stratified and fixed by ``seed``.
    """
    size = _check_int(size, "size", 8)
    seed = _check_int(seed, "seed", 0)
    channels = _check_int(channels, "channels", 1)
    test_fraction = _check_fraction(test_fraction)

    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float64) / 16.0)[:, None]  # (n, 1, 8, 8)
    if size != 8:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return _split_and_normalise(
        "digits",
        images,
        bunch.target.astype(np.int64),
        num_classes=10,
        channels=channels,
        seed=seed,
        test_fraction=test_fraction,
    )


def synthetic(
    *,
    n: int = 2000,
    size: int = 32,
    num_classes: int = 10,
    seed: int = 0,
    channels: int = 3,
    test_fraction: float = 0.2,
    noise: float = 1.0,
) -> ImageData:
    """A control set: class ``k``'s images are ``template_k + noise * N(0, 1)`` per pixel.

    The templates are ``(channels, 4, 4)`` standard-normal grids upsampled bilinearly to
    ``size x size``: smooth, class-specific patterns a convolutional network learns quickly.
    Classes are balanced (``n // num_classes`` or one more each); everything is drawn from a
    ``torch.Generator`` seeded with ``seed``, so a seed fixes the data set.
    """
    n = _check_int(n, "n", 2)
    size = _check_int(size, "size", 4)
    num_classes = _check_int(num_classes, "num_classes", 2)
    seed = _check_int(seed, "seed", 0)
    channels = _check_int(channels, "channels", 1)
    test_fraction = _check_fraction(test_fraction)
    noise = float(noise)
    if not noise >= 0.0:
        raise ValueError(f"noise must be >= 0 (a standard deviation), got noise={noise!r}")

    gen = torch.Generator().manual_seed(seed)
    grid = torch.randn(num_classes, channels, 4, 4, generator=gen, dtype=torch.float64)
    templates = F.interpolate(grid, size=(size, size), mode="bilinear", align_corners=False)
    labels = torch.arange(n) % num_classes
    labels = labels[torch.randperm(n, generator=gen)]
    images = templates[labels] + noise * torch.randn(
        n, channels, size, size, generator=gen, dtype=torch.float64
    )
    return _split_and_normalise(
        "synthetic",
        images,
        labels.numpy().astype(np.int64),
        num_classes=num_classes,
        channels=channels,
        seed=seed,
        test_fraction=test_fraction,
    )

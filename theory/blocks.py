"""Rounding-error propagation through a residual block: the bound behind residual.forward.

A float32 block computes y = relu(F(x) + shortcut(x)) with convolutions, batch norms, ReLUs and
an add. Each step below carries a float64 value of the reference computation and a per-element
bound on the float32 error there (:class:`Bounded`): local roundings come from
:mod:`theory.rounding` (Higham & Mary's probabilistic gamma~ for the convolutions' dot products,
bn_forward_tolerance for the batch norms), errors already present propagate through each step's
Jacobian in the worst case. The layers are read off a reference block (torch modules in float64:
their weights and running statistics), hence the torch import.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from theory import rounding

FLOAT32 = rounding.Precision.of("float32")


@dataclass(frozen=True)
class Bounded:
    """A float64 value of the reference computation and a bound on the float32 error there."""

    v: np.ndarray
    e: np.ndarray


def _conv(conv: nn.Conv2d, a: Bounded, prec: rounding.Precision) -> Bounded:
    """A convolution is one dot product of length K = C_in k_h k_w per output. With its input
    carrying errors |dx| <= e and exact (float32) weights W, Higham & Mary's probabilistic bound
    gives |fl(W * x_hat) - W * x| <= |W| * e + gamma~_K(u_acc) |W| * (|x| + e)."""
    w = conv.weight.detach().double()

    def apply(t: np.ndarray, weight: torch.Tensor) -> np.ndarray:
        return F.conv2d(
            torch.from_numpy(t), weight, stride=conv.stride, padding=conv.padding
        ).numpy()

    k = w.shape[1] * w.shape[2] * w.shape[3]
    aw = w.abs()
    e = apply(a.e, aw) + rounding.gamma_prob(k, prec.u_acc) * apply(np.abs(a.v) + a.e, aw)
    return Bounded(apply(a.v, w), e)


def _bn(bn: nn.BatchNorm2d, a: Bounded, train: bool, prec: rounding.Precision) -> Bounded:
    """Batch norm of an input known to within e, first order.

    Training mode, x_hat = (c - mu)/s over the m values of a channel, s = sqrt(var + eps):
    perturbing c by dc (|dc| <= e) moves mu by mean(dc), var by 2 s mean(x_hat dc) (the sum of
    c - mu is 0), s by mean(x_hat dc), so
        |d x_hat| <= (e + mean(e) + |x_hat| mean(|x_hat| e)) / s,
    times |gamma| for y. Eval mode uses the (exact) running statistics: |d x_hat| <= e / s.
    The kernel's own rounding on top is theory.rounding.bn_forward_tolerance (batch statistics
    in training, m=None in eval).
    """
    c = a.v
    axes = (0, 2, 3)
    shape = (1, -1, 1, 1)
    gamma = bn.weight.detach().double().numpy()
    beta = bn.bias.detach().double().numpy()
    if train:
        mean, var = c.mean(axis=axes), c.var(axis=axes)
    else:
        mean = bn.running_mean.detach().double().numpy()
        var = bn.running_var.detach().double().numpy()
    s = np.sqrt(var + bn.eps).reshape(shape)
    x_hat = (c - mean.reshape(shape)) / s
    y = gamma.reshape(shape) * x_hat + beta.reshape(shape)
    if train:
        prop = (
            a.e
            + a.e.mean(axis=axes, keepdims=True)
            + np.abs(x_hat) * (np.abs(x_hat) * a.e).mean(axis=axes, keepdims=True)
        ) / s
        m = c.size // c.shape[1]
    else:
        prop, m = a.e / s, None
    own = rounding.bn_forward_tolerance(
        x_hat, y, m=m, mean=mean, var=var, eps=bn.eps, gamma_=gamma, beta=beta, prec=prec
    )
    return Bounded(y, np.abs(gamma).reshape(shape) * prop + own)


def relu(a: Bounded) -> Bounded:
    # ReLU is exact and 1-Lipschitz: |relu(a) - relu(b)| <= |a - b|.
    return Bounded(np.maximum(a.v, 0.0), a.e)


def _add(a: Bounded, b: Bounded, prec: rounding.Precision) -> Bounded:
    # fl(a_hat + b_hat) = (a_hat + b_hat)(1 + d), |d| <= u.
    v = a.v + b.v
    return Bounded(v, a.e + b.e + prec.u * (np.abs(v) + a.e + b.e))


def _scale(a: Bounded, factor: float, prec: rounding.Precision) -> Bounded:
    # x * mask / keep: the mask multiply is exact, 1/keep costs the rounding of keep to float32
    # and of the product: 2u.
    v = a.v * factor
    return Bounded(v, a.e * factor + 2 * prec.u * np.abs(v))


def _branch_layers(ref) -> list:
    names = ["conv1", "bn1", "act1", "conv2", "bn2"]
    if hasattr(ref, "conv3"):
        names += ["act2", "conv3", "bn3"]
    return [getattr(ref, n) for n in names]


def _apply(layer, a: Bounded, train: bool, prec) -> Bounded:
    if isinstance(layer, nn.Conv2d):
        return _conv(layer, a, prec)
    if isinstance(layer, nn.BatchNorm2d):
        return _bn(layer, a, train, prec)
    return relu(a)


def branch_and_shortcut(
    ref, values: np.ndarray, *, train: bool, prec: rounding.Precision = FLOAT32
) -> tuple[Bounded, Bounded]:
    """F(x) and shortcut(x) of the reference block, each with its float32 error bound."""
    x = Bounded(values, np.zeros_like(values))
    f = x
    for layer in _branch_layers(ref):
        f = _apply(layer, f, train, prec)
    sc = x
    if ref.downsample is not None:
        for layer in ref.downsample:
            sc = _apply(layer, sc, train, prec)
    return f, sc


def block_forward_bound(
    ref,
    values: np.ndarray,
    *,
    train: bool,
    branch_scale: float = 1.0,
    prec: rounding.Precision = FLOAT32,
) -> Bounded:
    """y = relu(branch_scale F(x) + shortcut(x)) and a per-element bound on its float32 error.

    Derivation (first order in u; every step's bound is a function above): the input is exact
    (float32 values). Each convolution is a K = C_in k k dot product per output: error
    |W| * e_in + gamma~_K |W| * (|x| + e_in) (theory.rounding.gamma_prob, lambda = 8: fails with
    probability < 2.6e-14 per output). Batch norm propagates its input's error through its
    Jacobian (see :func:`_bn`) and adds its own rounding (theory.rounding.bn_forward_tolerance).
    ReLU is exact and 1-Lipschitz. The residual add costs u |sum|; drop-path scaling 2u |value|.

    Only the local roundings use the probabilistic gamma~; errors already present propagate in
    the worst case (|W| * e: all aligned). Where the output is dominated by the shortcut the
    bound is the add's own rounding u |y|, exact for round-to-nearest (correct blocks reach
    error/allowed ~0.9 there); inside the branch, in training mode, the worst-case propagation
    through two batch norms leaves ~1e-3 of |y| allowed: a 1% error of the branch still fails.
    """
    f, sc = branch_and_shortcut(ref, values, train=train, prec=prec)
    if branch_scale != 1.0:
        f = _scale(f, branch_scale, prec)
    return relu(_add(f, sc, prec))

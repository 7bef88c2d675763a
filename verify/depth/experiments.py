"""Measured-vs-theory depth curves: the experiments of the `depth` stage (verify/depth/stage.py).

Each curve is measured on torch's own modules and initialisers (torch.nn.Linear, BatchNorm1d,
torch.nn.init.*, torch.relu / torch.selu) at a fixed seed, and set next to the curve the theory
package derives:

* forward variance of the pre-activations h_l = W_l f(h_{l-1}) (h_0 = the N(0, 1) input) against
  depth, as E[h_l^2] pooled over batch and units: theory.propagation.variance_through_depth with
  weight_scale = fan_in Var[w] taken from theory.init (Xavier + ReLU halves per layer, He + ReLU
  stays, LeCun normal + SELU stays at its fixed point q = 1);
* BN + ReLU: the BatchNorm outputs stay at variance 1 whatever the initialisation (Ioffe & Szegedy
  2015, Algorithm 1), though Xavier + ReLU alone would halve them per layer;
* the residual stream x_{l+1} = x_l + F(x_l): theory.residual.stream_variance, var0 + L with
  BatchNorm in the branch, var0 2^L with an unnormalised variance-preserving branch;
* the squared input-gradient norm k layers below the output, relative to the output gradient:
  a plain BN-ReLU stack grows by theory.propagation's bn_relu_gradient_growth,
  lambda = E[relu'^2] / Var[relu] = pi/(pi-1), per layer. The residual stack with BN in the branch
  does not grow geometrically: the identity path carries the gradient unchanged and the branch
  adds its own squared gain. Its curve uses the mean-field heuristic of theory.propagation's
  docstring, applied to the block x + W relu(BN(x)) (He init, sigma_w^2 = 2), stated so it can be
  judged: backward through block l, |g|^2 becomes |g|^2 (1 + sigma_w^2 E[relu'^2] / s_l) =
  |g|^2 (1 + 1 / s_l), with s_l the per-unit batch variance of the stream that BN divides by.
  Each branch adds sigma_w^2 Var[relu(z)] = 1/lambda to s_l (its per-unit mean is common to the
  batch: it counts in the pooled second moment, stream_variance's var0 + L, not in s_l), so
  s_l = s_0 + l / lambda and the squared gain k blocks down is prod_{l=D-k}^{D-1} (1 + 1/s_l):
  it grows like a power of the depth (43 at D = 20), against the plain stack's lambda^k (2129).

Everything is small (width 256, batch 1024, depth 20, float32 on the CPU): a few seconds, most of
it SymPy deriving the SELU moments once per process.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from theory import init as init_theory
from theory import propagation, residual

WIDTH = 256
BATCH = 1024
DEPTH = 20
SEED = 0

Curve = tuple[list[int], list[float], list[float]]

#: What each curve shows, for the report's legend and table (name -> (title, theory in words)).
DESCRIPTIONS: dict[str, tuple[str, str]] = {
    "xavier_relu": (
        "Xavier normal + ReLU: E[h_l^2]",
        "variance_through_depth(relu, fan_in Var[w] = 1): halves per layer",
    ),
    "he_relu": (
        "Kaiming (He) normal + ReLU: E[h_l^2]",
        "variance_through_depth(relu, fan_in Var[w] = 2): constant",
    ),
    "lecun_selu": (
        "LeCun normal + SELU: E[h_l^2]",
        "variance_through_depth(selu, fan_in Var[w] = 1): stays at the fixed point 1",
    ),
    "bn_relu": (
        "Xavier normal + BatchNorm + ReLU: E[BN(h_l)^2]",
        "BatchNorm output variance 1 at every depth (Ioffe & Szegedy 2015)",
    ),
    "residual_bn": (
        "residual stream, BN in the branch: E[x_L^2]",
        "residual.stream_variance(L, branch='bn') = 1 + L",
    ),
    "residual_plain": (
        "residual stream, no normalisation: E[x_L^2]",
        "residual.stream_variance(L, branch='doubling') = 2^L",
    ),
    "grad_plain_bn_relu": (
        "plain BN-ReLU stack: |dloss/dh_(D-k)|^2 / |dloss/dh_D|^2",
        "bn_relu_gradient_growth^k = (pi/(pi-1))^k",
    ),
    "grad_residual_bn": (
        "residual stack, BN in the branch: |dloss/dx_(D-k)|^2 / |dloss/dx_D|^2",
        "prod over the top k blocks of (1 + 1/s_l), s_l = s_0 + l / bn_relu_gradient_growth: "
        "polynomial in depth",
    ),
}


def _second_moment(h: torch.Tensor) -> float:
    return float(h.detach().double().pow(2).mean())


def _linear(gen: torch.Generator, init: Callable[[torch.Tensor, torch.Generator], object]):
    layer = nn.Linear(WIDTH, WIDTH, bias=False)
    with torch.no_grad():
        init(layer.weight, gen)
    layer.weight.requires_grad_(False)
    return layer


def _xavier(w: torch.Tensor, gen: torch.Generator) -> None:
    nn.init.xavier_normal_(w, generator=gen)


def _he(w: torch.Tensor, gen: torch.Generator) -> None:
    nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="relu", generator=gen)


def _lecun(w: torch.Tensor, gen: torch.Generator) -> None:
    # kaiming_normal_ with gain 1 ('linear') is LeCun normal: Var[w] = 1 / fan_in.
    nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="linear", generator=gen)


def _input(gen: torch.Generator) -> torch.Tensor:
    return torch.randn(BATCH, WIDTH, generator=gen)


def _forward_variance(gen, init, act, depth: int) -> list[float]:
    """E[h_l^2] for h_0 = x, h_l = W_l act(h_{l-1}), l = 0..depth."""
    h = _input(gen)
    out = [_second_moment(h)]
    with torch.no_grad():
        for _ in range(depth):
            h = _linear(gen, init)(act(h))
            out.append(_second_moment(h))
    return out


def _bn_relu_variance(gen, depth: int) -> list[float]:
    """E[BN(h_l)^2] with h_l = W_l relu(BN(h_{l-1})), Xavier init, BN in training mode."""
    h = _input(gen)
    out = [_second_moment(h)]
    with torch.no_grad():
        for _ in range(depth):
            h = nn.BatchNorm1d(WIDTH)(_linear(gen, _xavier)(torch.relu(h)))
            out.append(_second_moment(h))
    return out


def _residual_stream(gen, depth: int, *, bn: bool):
    """Stream second moments E[x_l^2], l = 0..depth, and the gradients' squared norms at x_l.

    Block: x + W relu(BN(x)) (pre-activation, He init) with BN, x + W relu(x) without. The loss is
    <g, x_depth> for a fixed Gaussian g, so the gradient at the output is g.
    """
    x = _input(gen).requires_grad_(True)
    stream = [x]
    for _ in range(depth):
        branch_in = nn.BatchNorm1d(WIDTH)(stream[-1]) if bn else stream[-1]
        nxt = stream[-1] + _linear(gen, _he)(torch.relu(branch_in))
        nxt.retain_grad()
        stream.append(nxt)
    g = torch.randn(BATCH, WIDTH, generator=gen)
    (stream[-1] * g).sum().backward()
    variances = [_second_moment(s) for s in stream]
    grads = [_second_moment(s.grad) for s in stream]
    return variances, grads


def _plain_bn_relu_grads(gen, depth: int) -> list[float]:
    """Squared gradient norms at h_0..h_depth of h_l = relu(BN(W_l h_{l-1})), with one extra layer
    below h_0 so that every measured h_l is a hidden BN-ReLU output (the theory's homogeneous
    regime; the raw Gaussian input would change the bottom layer's factor)."""
    x = _input(gen)
    h = torch.relu(nn.BatchNorm1d(WIDTH)(_linear(gen, _xavier)(x))).detach().requires_grad_(True)
    hs = [h]
    for _ in range(depth):
        h = torch.relu(nn.BatchNorm1d(WIDTH)(_linear(gen, _xavier)(h)))
        h.retain_grad()
        hs.append(h)
    g = torch.randn(BATCH, WIDTH, generator=gen)
    (hs[-1] * g).sum().backward()
    return [_second_moment(t.grad) for t in hs]


def _relative_from_top(sq_norms: list[float]) -> list[float]:
    """[|g_{D-k}|^2 / |g_D|^2 for k = 0..D]."""
    top = sq_norms[-1]
    return [v / top for v in reversed(sq_norms)]


def curves(depth: int = DEPTH, *, seed: int = SEED) -> dict[str, Curve]:
    """Curve name -> (depths, measured, theory); see DESCRIPTIONS for what each one is.

    Deterministic for a given seed; torch's global RNG and thread count are left as they were.
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth={depth!r}: must be an int >= 1 (number of layers)")
    # One thread: these matrices are small, and on a shared machine torch's thread pool loses far
    # more to contention than it gains (10-30x slower, measured at load 7 on 2 cores).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            return _curves(depth, torch.Generator().manual_seed(seed))
    finally:
        torch.set_num_threads(threads)


def _curves(depth: int, gen: torch.Generator) -> dict[str, Curve]:
    depths = list(range(depth + 1))
    # fan_in Var[w] for a square layer, from theory.init's closed forms.
    xavier_scale = WIDTH * init_theory.xavier_normal_std(WIDTH, WIDTH) ** 2
    he_scale = WIDTH * init_theory.kaiming_normal_std(WIDTH, gain=math.sqrt(2)) ** 2
    lecun_scale = WIDTH * init_theory.kaiming_normal_std(WIDTH, gain=1.0) ** 2
    lam = float(propagation.bn_gradient_growth_expr("relu"))

    out: dict[str, Curve] = {}
    for name, init, act, activation, scale in (
        ("xavier_relu", _xavier, torch.relu, "relu", xavier_scale),
        ("he_relu", _he, torch.relu, "relu", he_scale),
        ("lecun_selu", _lecun, torch.selu, "selu", lecun_scale),
    ):
        measured = _forward_variance(gen, init, act, depth)
        theory = propagation.variance_through_depth(
            depth, activation=activation, weight_scale=scale, var0=measured[0]
        )
        out[name] = (depths, measured, theory)

    out["bn_relu"] = (depths, _bn_relu_variance(gen, depth), [1.0] * (depth + 1))

    res_var, res_grad = _residual_stream(gen, depth, bn=True)
    v0 = res_var[0]
    out["residual_bn"] = (
        depths,
        res_var,
        [residual.stream_variance(d, var0=v0, branch="bn") for d in depths],
    )
    plain_var, _ = _residual_stream(gen, depth, bn=False)
    out["residual_plain"] = (
        depths,
        plain_var,
        [residual.stream_variance(d, var0=plain_var[0], branch="doubling") for d in depths],
    )

    out["grad_plain_bn_relu"] = (
        depths,
        _relative_from_top(_plain_bn_relu_grads(gen, depth)),
        [lam**k for k in depths],
    )
    batch_var = [v0 + layer / lam for layer in depths]  # s_l, module docstring
    residual_gain = [
        math.prod(1 + 1 / batch_var[layer] for layer in range(depth - k, depth)) for k in depths
    ]
    out["grad_residual_bn"] = (depths, _relative_from_top(res_grad), residual_gain)
    return out

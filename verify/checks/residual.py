"""Residual-block checks: a float32 block against its float64 reference and against theory/.

residual.forward           output vs the float64 reference (same weights), BN in train or eval
residual.identity_gradient zero last gamma: y = relu(x) and dx = relu'(x) dy, exactly
residual.variance_depth    stream variance of a deep stack at init vs theory.residual
residual.plain_vs_residual input-gradient growth of a deep stack: residual, not plain, theory
residual.no_mutation       forward and backward leave the caller's input unchanged
residual.stochastic_depth  drop-path: identity in eval, per-sample keep-or-drop scaled 1/(1-p)

The forward tolerance is derived below (:func:`block_forward_bound`) from theory.rounding's
primitives; the statistical checks state their false-alarm rate (:data:`ALPHA`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import strategies as st
from scipy import stats
from torch import nn

from theory import rounding
from theory.residual import branch_variance, gradient_growth_predictions, stream_variance
from verify.assertions import compare, input_changed, worst
from verify.checks.base import Check, Measurement
from verify.profiles import Profile
from verify.strategies.common import round_to
from verify.strategies.residual import (
    COMPILED_SHAPES,
    BlockCase,
    StackCase,
    block_cases,
    make_grad,
    make_input,
    stack_cases,
)
from verify.targets import residual as adapter
from verify.targets.base import Target

#: False-alarm probability of each statistical decision (per case), as DESIGN.md asks.
ALPHA = 1e-6
FLOAT32 = rounding.Precision.of("float32")
FORWARD_BOUND = (
    "verify.checks.residual.block_forward_bound (theory.rounding.gamma_prob, bn_forward_tolerance)"
)


# --- the forward error bound -------------------------------------------------------------------


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


def _relu(a: Bounded) -> Bounded:
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
    return _relu(a)


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
    return _relu(_add(f, sc, prec))


# --- comparing a block's output, with drop-path's per-sample keep-or-drop -------------------


@dataclass(frozen=True)
class OutputComparison:
    ratio: float
    message: str
    kept: np.ndarray | None = None  # per sample, where drop-path was active
    decidable: np.ndarray | None = None  # samples whose keep and drop outputs differ provably


def compare_output(
    target: Target, ref, values: np.ndarray, y: np.ndarray, *, train: bool, what: str
) -> OutputComparison:
    """The target's output y against the reference. With drop-path active (training, p > 0)
    each sample's branch is either dropped (y = relu(shortcut)) or kept and scaled by 1/(1-p)
    (y = relu(shortcut + F/(1-p))): every sample must match one of the two within the bound."""
    p = adapter.drop_prob(target) if train else 0.0
    if p == 0.0:
        out = block_forward_bound(ref, values, train=train)
        c = compare(y, out.v, out.e + 1e-30, what=what, bound=FORWARD_BOUND)
        return OutputComparison(c.ratio, c.message())
    kept = block_forward_bound(ref, values, train=True, branch_scale=1.0 / (1.0 - p))
    _, sc = branch_and_shortcut(ref, values, train=True)
    dropped = _relu(sc)
    axes = tuple(range(1, y.ndim))
    with np.errstate(invalid="ignore", divide="ignore"):
        r_keep = np.nan_to_num(np.abs(y - kept.v) / (kept.e + 1e-30), nan=np.inf).max(axis=axes)
        r_drop = np.nan_to_num(np.abs(y - dropped.v) / (dropped.e + 1e-30), nan=np.inf).max(
            axis=axes
        )
    is_kept = r_keep <= r_drop
    pick = is_kept.reshape((-1,) + (1,) * len(axes))
    expected = np.where(pick, kept.v, dropped.v)
    allowed = np.where(pick, kept.e, dropped.e) + 1e-30
    c = compare(
        y,
        expected,
        allowed,
        bound=FORWARD_BOUND,
        what=f"{what} (drop-path p={p}: each sample relu(shortcut + F/(1-p)) if kept, "
        f"relu(shortcut) if dropped)",
    )
    decidable = (np.abs(kept.v - dropped.v) - kept.e - dropped.e).max(axis=axes) > 0
    return OutputComparison(c.ratio, c.message(), is_kept, decidable)


# --- residual.forward --------------------------------------------------------------------------


def _block_strategy(**kw):
    def cases(target: Target, profile: Profile) -> st.SearchStrategy[BlockCase]:
        return block_cases(
            expansion=adapter.expansion(target),
            modes=target.modes,
            max_elements=target.size_budget(profile.max_elements),
            compiled=target.compile,
            **kw,
        )

    return cases


def known_blocks(target: Target, *, identity_only: bool = False, depth: int = 1) -> list[BlockCase]:
    """Both shortcut kinds (identity; stride 2 with a channel change) in every mode of the
    target: the add-after-ReLU, missing-BN and stride-placement bugs show on the first two."""
    e = adapter.expansion(target)
    planes = max(8 // e, 2) if e > 1 else 8
    shapes = [(4, 8, 8, 1, True), (4, 8, 8, 2, False)] if not target.compile else COMPILED_SHAPES
    out = []
    for mode in target.modes:
        for i, (n, h, w, stride, identity) in enumerate(shapes):
            if identity_only and not identity:
                continue
            out.append(
                BlockCase(
                    batch=n,
                    in_channels=planes * e if identity else 3,
                    planes=planes,
                    height=h,
                    width=w,
                    stride=stride,
                    mode=mode,
                    seed=11 + i,
                    depth=depth,
                )
            )
    return out


def _block_output(target: Target, case: BlockCase, *, what: str) -> OutputComparison:
    """Run one block of the case and compare its output with the reference's."""
    ref = adapter.reference_block(
        target, case.in_channels, case.planes, case.stride, seed=case.seed
    )
    module = adapter.build(target, ref)
    values = make_input(case)
    train = case.mode == "train"
    run = adapter.run_blocks(
        target, [module], values, train=train, seed=case.seed, noncontiguous=case.noncontiguous
    )
    return compare_output(target, ref, values, run.y, train=train, what=what)


def measure_forward(target: Target, case: BlockCase) -> Measurement:
    c = _block_output(target, case, what=f"block output ({case.mode}-mode BN)")
    return Measurement(c.ratio, c.message)


# --- residual.identity_gradient ----------------------------------------------------------------


def measure_identity_gradient(target: Target, case: BlockCase) -> Measurement:
    """With the branch's last BN at gamma = beta = 0 (zero-init), F(x) = 0 and dF/dx = 0 exactly,
    so d(x + F(x))/dx = I (theory.residual.block_jacobian) and a stack of such blocks computes
    y = relu(x), dx = relu'(x) dy. Multiplying by a zero gamma is exact in floating point, so
    the comparison is exact: any difference means the identity path is not what carries the
    signal (an add after the ReLU, a detached shortcut, a mis-scaled identity)."""
    refs = []
    for i in range(case.depth):
        ref = adapter.reference_block(target, case.in_channels, case.planes, 1, seed=case.seed + i)
        ref.zero_init_last_gamma_()
        with torch.no_grad():
            ref.last_norm.bias.zero_()
        refs.append(ref)
    modules = [adapter.build(target, r) for r in refs]
    values = make_input(case)
    dy = make_grad(values.shape, case.seed)
    run = adapter.run_blocks(
        target,
        modules,
        values,
        train=case.mode == "train",
        seed=case.seed,
        noncontiguous=case.noncontiguous,
        dy=dy,
    )
    bound = "exact: theory.residual.block_jacobian, d(x + F(x))/dx = I + dF/dx with dF/dx = 0"
    stack = f"{case.depth} zero-init block{'s' if case.depth > 1 else ''}"
    c_y = compare(
        run.y,
        np.maximum(values, 0.0),
        0.0,
        bound=bound,
        what=f"output of {stack} (oracle: relu(x))",
    )
    c_dx = compare(
        run.dx,
        dy * (values > 0),
        0.0,
        bound=bound,
        what=f"input gradient through {stack} (oracle: relu'(x) dy, the identity path)",
    )
    c = worst(c_y, c_dx)
    return Measurement(c.ratio, c.message())


# --- the stream regime: deep stacks at init -------------------------------------------------


def stack_replicate(target: Target, case: StackCase, r: int) -> tuple:
    """Blocks and input of replicate r: ``depth`` fresh identity-shortcut blocks at init (the
    reference's weights, BN gamma 1 and beta 0) and a float32 input on a 1x1 grid.

    The stream regime: a train-mode BN output satisfies |x_hat| <= sqrt(m - 1) (Samuelson's
    inequality over the m = batch values of a channel), so each branch adds at most
    sqrt(m - 1)/(1 - p) in magnitude (p: drop-path). Shifting the input by
    max|z| + depth sqrt(m - 1)/(1 - p) + 1 keeps every x_l + F(x_l) > 0: the block's final ReLU
    is provably the identity on the stream, x_{l+1} = x_l + F(x_l) exactly as in De & Smith's
    recursion, while every BN in the branch removes the shift (a 3x3 conv of a constant on a 1x1
    grid is a constant). The shift changes nothing else.
    """
    e = adapter.expansion(target)
    seeds = np.random.SeedSequence([case.seed, r]).generate_state(case.depth + 1)
    refs = [
        adapter.reference_block(
            target, case.width, case.width // e, 1, seed=int(s), randomize_bn=False
        )
        for s in seeds[:-1]
    ]
    rng = np.random.default_rng(int(seeds[-1]))
    z = rng.normal(size=(case.batch, case.width, 1, 1)) * 10.0**case.log10_scale
    p = adapter.drop_prob(target)
    shift = math.ceil(np.abs(z).max() + case.depth * math.sqrt(case.batch - 1) / (1 - p) + 1)
    return refs, round_to(z + shift, "float32")


def _stack_strategy(*, depth: tuple[int, int], replicates, scale: tuple[float, float]):
    def cases(target: Target, profile: Profile) -> st.SearchStrategy[StackCase]:
        # A compiled target keeps one batch size: each new shape is a recompilation.
        batches = (256,) if target.compile else (128, 256, 512)
        return stack_cases(
            depth=depth, replicates=replicates(profile), scale=scale, batches=batches
        )

    return cases


def _variance_replicates(profile: Profile) -> int:
    """Independent stacks per variance case: 16 in quick, 32 beyond (the t quantile at
    ALPHA / depth falls from 9.6 to 7.0): more replicates tighten the band around the theory."""
    return 16 if profile.statistical_samples < 1_000_000 else 32


def _gradient_replicates(profile: Profile) -> int:
    # The gradient band is wide (>= 1.2 nats) against a spread of ~0.2 nats: a few stacks do.
    return 2 if profile.statistical_samples < 1_000_000 else 4


def _stack_examples(profile: Profile) -> int:
    # Each case draws its own replicates; the known case plus a few drawn ones suffice.
    return max(1, profile.examples // 12)


def _train_only(target: Target) -> str | None:
    return None if "train" in target.modes else "the stream regime needs training-mode BN"


def measure_variance_depth(target: Target, case: StackCase) -> Measurement:
    """Stream variance at every depth vs theory.residual.stream_variance (branch 'bn').

    Per replicate r and depth l the statistic is d = Var_l/Var_0 - pred_l/Var_0, Var the
    per-channel batch variance averaged over channels, pred_l = stream_variance(l, var0=Var_0)
    (var0 + l; with drop-path in training each block adds :func:`branch_variance` instead of 1,
    i.e. v stream_variance(l, var0/v)). In the stream regime x_{l+1} = x_l + F_l exactly and
    Var(F_l) is exactly 1 (a BN output), so d sums the covariances Cov(x_l, F_l); flipping the
    sign of the branch's last conv weight (a symmetric init) flips F_l and leaves x_l, so
    E[d] = 0 exactly. The replicates are independent (fresh weights and data), so a two-sided
    Student t test per depth at ALPHA / depth (Bonferroni: ALPHA per case) decides; ratio =
    |t| / t_crit.
    """
    p = adapter.drop_prob(target)
    v = branch_variance(p, case.batch)
    d = np.zeros((case.replicates, case.depth))
    ratios = np.zeros((case.replicates, case.depth + 1))
    for r in range(case.replicates):
        refs, values = stack_replicate(target, case, r)
        modules = [adapter.build(target, ref) for ref in refs]
        # Autograd on, as in a training step (a compiled target then reuses one graph for this
        # check and plain_vs_residual); the stack is small.
        x = adapter.to_input(target, values).requires_grad_(True) * 1
        var0 = float(values.var(axis=(0, 2, 3)).mean())
        ratios[r, 0] = 1.0
        for l, m in enumerate(modules, start=1):
            m.train(True)
            x = adapter.call(target, m, x, seed=case.seed + 7919 * r + l)
            var_l = float(adapter.as_numpy(x).var(axis=(0, 2, 3)).mean())
            pred = v * stream_variance(l, var0=var0 / v, branch="bn")
            ratios[r, l] = var_l / var0
            d[r, l - 1] = (var_l - pred) / var0
    mean, sd = d.mean(axis=0), d.std(axis=0, ddof=1)
    t_crit = stats.t.ppf(1 - ALPHA / (2 * case.depth), case.replicates - 1)
    t_stat = np.abs(mean) / np.maximum(sd / math.sqrt(case.replicates), 1e-300)
    l = int(np.argmax(t_stat))
    depth_l = l + 1
    measured = ratios[:, depth_l].mean()
    predicted = measured - mean[l]
    verdict = "within" if t_stat[l] <= t_crit else "outside"
    drop = f", drop-path p={p} (branch variance {v:.4g})" if p else ""
    msg = (
        f"stream variance ratio Var_l/Var_0 over {case.replicates} independent stacks of "
        f"{case.depth} blocks (width {case.width}, batch {case.batch}{drop}): worst depth "
        f"l={depth_l}: measured {measured:.4g} +- {sd[l] / math.sqrt(case.replicates):.2g} "
        f"(s.e.), theory.residual.stream_variance {predicted:.4g}: {verdict} the "
        f"t-band (|t| {t_stat[l]:.3g} vs {t_crit:.3g} at alpha {ALPHA:g}/{case.depth}); "
        f"final depth: measured {ratios[:, -1].mean():.4g}, theory "
        f"{ratios[:, -1].mean() - mean[-1]:.4g}"
    )
    return Measurement(float(t_stat[l] / t_crit), msg)


# --- residual.plain_vs_residual ---------------------------------------------------------------


def _grad_growth(modules: list[nn.Module], x: torch.Tensor, dy: torch.Tensor, call) -> float:
    leaf = x.detach().requires_grad_(True)
    y = leaf * 1
    for i, m in enumerate(modules):
        m.train(True)
        y = call(m, y, i)
    (g,) = torch.autograd.grad(y, leaf, dy.to(y.dtype))
    return float(g.double().pow(2).sum() / dy.double().pow(2).sum())


@dataclass(frozen=True)
class GradientGrowth:
    """log G = log(|dL/dx_0|^2 / |dL/dx_L|^2) of a stack: measured (mean over replicates) on the
    target, on the float64 plain control, and both mean-field predictions."""

    measured: float
    per_stack: tuple[float, ...]
    plain_control: float
    residual_prediction: float
    plain_prediction: float

    @property
    def half_width(self) -> float:
        return abs(self.plain_prediction - self.residual_prediction) / 2


def gradient_growth(target: Target, case: StackCase) -> GradientGrowth:
    """Measure log G on ``case.replicates`` independent stacks of the target and of the same
    weights with the shortcuts removed (reference.residual, skip=False, float64)."""
    n_act = 2 if adapter.block_kind(target) == "bottleneck" else 1
    cls = adapter.REFERENCE_BLOCKS[adapter.block_kind(target)]
    logs, plain_logs, var0s = [], [], []
    for r in range(case.replicates):
        refs, values = stack_replicate(target, case, r)
        modules = [adapter.build(target, ref) for ref in refs]
        dy = torch.from_numpy(make_grad(values.shape, case.seed + r))
        x = adapter.to_input(target, values)
        logs.append(
            math.log(
                _grad_growth(
                    modules,
                    x,
                    dy,
                    lambda m, y, i, r=r: adapter.call(target, m, y, seed=case.seed + 7919 * r + i),
                )
            )
        )
        plain = [cls(case.width, case.width // cls.expansion, skip=False) for _ in refs]
        for pl, ref in zip(plain, refs, strict=True):
            pl.load_state_dict(ref.state_dict())
        plain_logs.append(
            math.log(_grad_growth(plain, torch.from_numpy(values), dy, lambda m, y, i: m(y)))
        )
        var0s.append(float(values.var(axis=(0, 2, 3)).mean()))
    res_pred, plain_pred = gradient_growth_predictions(
        n_act=n_act,
        depth=case.depth,
        var0=float(np.mean(var0s)),
        p=adapter.drop_prob(target),
        m=case.batch,
    )
    return GradientGrowth(
        float(np.mean(logs)), tuple(logs), float(np.mean(plain_logs)), res_pred, plain_pred
    )


def measure_plain_vs_residual(target: Target, case: StackCase) -> Measurement:
    """Input-gradient growth through a deep stack: polynomial with skips, exponential without.

    We use the BN-ReLU version (theory.propagation, pi/(pi-1) per layer) rather than sigmoid's
    (1/4)^d: the plain control must be the target's own architecture and weights with the
    shortcuts removed (reference.residual, skip=False), and a BN-ReLU block has no sigmoid; the
    (1/4)^d result is also only an upper bound, which gives no band for the residual side. The
    measured log G of the target (mean over replicates) must lie nearer the residual prediction
    than the plain one: |log G - log G_res| <= |log G_plain - log G_res| / 2, a band that is
    >= 1.2 nats wide for the drawn depths (>= 8) and input scales (std <= 1), where the
    mean-field values are met to ~0.2 nats at width 64. The float64 plain stack with the same
    weights is measured as a control and reported: it shows the band discriminates.
    """
    g = gradient_growth(target, case)
    ratio = abs(g.measured - g.residual_prediction) / g.half_width
    side = (
        "residual"
        if ratio <= 1
        else ("plain (exploding)" if g.measured > g.residual_prediction else "vanishing")
    )
    msg = (
        f"log squared input-gradient growth through {case.depth} blocks (width {case.width}, "
        f"batch {case.batch}, {case.replicates} stacks): measured {g.measured:.3g} "
        f"(per stack {min(g.per_stack):.3g}..{max(g.per_stack):.3g}); theory: residual "
        f"{g.residual_prediction:.3g}, plain {g.plain_prediction:.3g} (band: within "
        f"{g.half_width:.3g} of residual); plain control (same weights, no skips) "
        f"{g.plain_control:.3g}; the target behaves as {side}"
    )
    return Measurement(ratio, msg)


# --- residual.no_mutation ----------------------------------------------------------------------


def measure_no_mutation(target: Target, case: BlockCase) -> Measurement:
    """A training step (forward + backward on a non-leaf input, as from a previous layer) and
    no-grad eval-mode inference (on the input as laid out, strided or not) leave the caller's
    tensor as it was, in-place ReLU or not. Autograd's version counter catching an in-place
    write to a tensor it saved for backward is a mutation too. (``case.mode`` is unused: both
    modes run, each the way it is used.)"""
    ref = adapter.reference_block(
        target, case.in_channels, case.planes, case.stride, seed=case.seed
    )
    module = adapter.build(target, ref)
    before = make_input(case)
    dy = make_grad((case.batch, ref.out_channels, *case.output_hw()), case.seed)
    x = adapter.to_input(target, before)
    leaf = x.detach().requires_grad_(True)
    x_in = leaf * 1
    module.train()
    try:
        y = adapter.call(target, module, x_in, seed=case.seed)
        y.backward(torch.from_numpy(dy).to(y.dtype))
    except RuntimeError as exc:
        if "inplace" not in str(exc) and "in-place" not in str(exc):
            raise
        return Measurement(
            math.inf,
            f"training forward/backward wrote to the input in place: "
            f"autograd says {str(exc).splitlines()[0]}",
        )
    x_eval = adapter.to_input(target, before, noncontiguous=case.noncontiguous)
    module.eval()
    with torch.no_grad():
        adapter.call(target, module, x_eval, seed=case.seed)
    for where, after in (("training forward/backward", x_in), ("no-grad eval forward", x_eval)):
        changed = input_changed(before, adapter.as_numpy(after), where)
        if changed:
            return Measurement(math.inf, changed)
    return Measurement(0.0, "input unchanged by training and by no-grad inference")


# --- residual.stochastic_depth ----------------------------------------------------------------


def _has_drop_path(target: Target) -> str | None:
    return None if adapter.drop_prob(target) > 0 else "block has no stochastic depth"


def _stochastic_cases(target: Target, profile: Profile) -> st.SearchStrategy[BlockCase]:
    # Batches of 32-128 samples give the keep count its power; the spatial size stays small.
    return st.tuples(
        block_cases(
            expansion=adapter.expansion(target),
            modes=target.modes,
            max_elements=target.size_budget(profile.max_elements),
        ),
        st.integers(32, 128),
    ).map(
        lambda cn: replace(
            cn[0], batch=cn[1], height=min(cn[0].height, 5), width=min(cn[0].width, 5)
        )
    )


def _stochastic_known(target: Target) -> list[BlockCase]:
    return [
        BlockCase(batch=64, in_channels=8, planes=8, height=4, width=4, mode=mode, seed=5)
        for mode in target.modes
    ] + [
        BlockCase(
            batch=48, in_channels=3, planes=8, height=5, width=5, stride=2, mode="train", seed=6
        )
    ]


def measure_stochastic_depth(target: Target, case: BlockCase) -> Measurement:
    """Eval: the block equals the deterministic one (drop-path is the identity). Training: each
    sample's branch is dropped or kept and scaled by exactly 1/(1-p), which keeps E[output]
    (checked exactly, per sample, via the mask this recovers); and the number kept among the
    samples whose two outcomes differ is Binomial(n, 1-p): two-sided exact test at ALPHA,
    ratio log(1/pvalue) / log(1/ALPHA)."""
    p = adapter.drop_prob(target)
    c = _block_output(target, case, what=f"block output ({case.mode} mode)")
    if case.mode != "train" or c.ratio > 1:
        return Measurement(c.ratio, c.message)
    n = int(c.decidable.sum())
    k = int((c.kept & c.decidable).sum())
    if n == 0:
        return Measurement(c.ratio, c.message + "; no sample decides keep vs drop")
    pvalue = stats.binomtest(k, n, 1 - p).pvalue
    ratio = math.log(1 / max(pvalue, 1e-300)) / math.log(1 / ALPHA)
    msg = (
        f"{c.message}; kept {k} of {n} decidable samples, expected {n * (1 - p):.1f} "
        f"(Binomial(n, 1-p={1 - p:g}) two-sided p-value {pvalue:.3g}, alpha {ALPHA:g})"
    )
    return Measurement(max(c.ratio, ratio), msg)


# --- the checks --------------------------------------------------------------------------------


def _identity_known(target: Target) -> list[BlockCase]:
    return (
        known_blocks(target, identity_only=True)
        + [c for c in known_blocks(target, identity_only=True, depth=3) if c.mode == "train"][:1]
    )


def _variance_known(target: Target) -> list[StackCase]:
    return [StackCase(width=64, batch=256, depth=8, replicates=16, seed=3)]


def _gradient_known(target: Target) -> list[StackCase]:
    return [StackCase(width=64, batch=256, depth=8, replicates=2, seed=3)]


CHECKS = [
    Check(
        "residual.forward",
        "block output vs the float64 reference (same weights), BN in training or eval mode",
        FORWARD_BOUND,
        _block_strategy(),
        measure_forward,
        known_blocks,
    ),
    Check(
        "residual.identity_gradient",
        "zero last gamma: y = relu(x), dx = relu'(x) dy exactly (the identity path)",
        "exact: theory.residual.block_jacobian",
        _block_strategy(identity_only=True, max_depth=3),
        measure_identity_gradient,
        _identity_known,
    ),
    Check(
        "residual.variance_depth",
        "stream variance of a deep stack at init grows linearly (var0 + L)",
        f"theory.residual.stream_variance; Student t, alpha {ALPHA:g}",
        _stack_strategy(depth=(8, 16), replicates=_variance_replicates, scale=(-1.0, 1.0)),
        measure_variance_depth,
        _variance_known,
        _train_only,
        max_examples=_stack_examples,
    ),
    Check(
        "residual.plain_vs_residual",
        "input-gradient growth of a deep stack: polynomial with "
        "skips, exponential (BN-ReLU, pi/(pi-1) per layer) without",
        "theory.residual.stream_variance + theory.propagation.bn_gradient_growth_expr",
        _stack_strategy(depth=(8, 16), replicates=_gradient_replicates, scale=(-1.0, 0.0)),
        measure_plain_vs_residual,
        _gradient_known,
        _train_only,
        max_examples=_stack_examples,
    ),
    Check(
        "residual.no_mutation",
        "forward and backward leave the input unchanged (in-place ReLU)",
        "exact",
        _block_strategy(),
        measure_no_mutation,
        known_blocks,
    ),
    Check(
        "residual.stochastic_depth",
        "drop-path: identity in eval; per sample dropped or kept "
        "and scaled 1/(1-p) in training; keep count Binomial(n, 1-p)",
        f"{FORWARD_BOUND}; exact binomial test, alpha {ALPHA:g}",
        _stochastic_cases,
        measure_stochastic_depth,
        _stochastic_known,
        _has_drop_path,
    ),
]

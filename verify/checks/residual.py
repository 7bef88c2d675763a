"""Residual-block checks: a float32 block against its float64 reference and against theory/.

residual.forward           output vs the float64 reference (same weights), BN in train or eval
residual.identity_gradient zero last gamma: y = relu(x) and dx = relu'(x) dy, exactly
residual.variance_depth    stream variance of a deep stack at init vs theory.residual
residual.plain_vs_residual input-gradient growth of a deep stack: residual, not plain, theory
residual.no_mutation       forward and backward leave the caller's input unchanged
residual.stochastic_depth  drop-path: identity in eval, per-sample keep-or-drop scaled 1/(1-p)

The forward tolerance is theory.blocks.block_forward_bound (from theory.rounding's primitives);
the statistical checks run at theory.sampling.FALSE_ALARM.
"""

from __future__ import annotations

import functools
import math
import subprocess
import sys
from dataclasses import dataclass, replace

import numpy as np
import torch
from hypothesis import strategies as st
from torch import nn

from theory import residual as theory_residual
from theory import sampling
from theory.blocks import block_forward_bound, branch_and_shortcut, relu
from theory.residual import branch_variance, gradient_growth_predictions, stream_variance
from theory.sampling import FALSE_ALARM
from verify.adapters import residual as adapter
from verify.adapters.base import as_numpy, to_input
from verify.assertions import EXACT, compare, input_changed, worst
from verify.checks.base import Checks, KnownDefect, Measurement
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
from verify.strategies.residual import dimensions as block_dimensions
from verify.targets.base import Target


def _dimensions(target: Target, profile: Profile) -> dict[str, tuple[str, ...]]:
    return block_dimensions(
        expansion=adapter.expansion(target),
        modes=target.modes,
        max_elements=target.size_budget(profile.max_elements),
        compiled=target.compile,
    )


CHECKS = Checks("residual", dimensions=_dimensions)


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
        c = compare(y, out.v, out.e + 1e-30, what=what, bound=block_forward_bound)
        return OutputComparison(c.ratio, c.message())
    kept = block_forward_bound(ref, values, train=True, branch_scale=1.0 / (1.0 - p))
    _, sc = branch_and_shortcut(ref, values, train=True)
    dropped = relu(sc)
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
        bound=block_forward_bound,
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
                    expansion=e,
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


@CHECKS.register(
    name="residual.forward",
    summary="block output vs the float64 reference (same weights), BN in training or eval mode",
    bound=block_forward_bound,
    cases=_block_strategy(),
    known=known_blocks,
)
def measure_forward(target: Target, case: BlockCase) -> Measurement:
    c = _block_output(target, case, what=f"block output ({case.mode}-mode BN)")
    return Measurement(c.ratio, c.message)


# --- residual.identity_gradient ----------------------------------------------------------------


def _identity_known(target: Target) -> list[BlockCase]:
    return (
        known_blocks(target, identity_only=True)
        + [c for c in known_blocks(target, identity_only=True, depth=3) if c.mode == "train"][:1]
    )


@CHECKS.register(
    name="residual.identity_gradient",
    summary="zero last gamma: y = relu(x), dx = relu'(x) dy exactly (the identity path)",
    bound=(EXACT, theory_residual.block_jacobian),
    cases=_block_strategy(identity_only=True, max_depth=3),
    known=_identity_known,
)
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
    bound = (EXACT, theory_residual.block_jacobian)  # d(x + F(x))/dx = I + dF/dx, dF/dx = 0
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
    FALSE_ALARM / depth falls from 9.6 to 7.0): more replicates tighten the band."""
    return 16 if profile.statistical_samples < 1_000_000 else 32


def _gradient_replicates(profile: Profile) -> int:
    # The gradient band is wide (>= 1.2 nats) against a spread of ~0.2 nats: a few stacks do.
    return 2 if profile.statistical_samples < 1_000_000 else 4


def _stack_examples(profile: Profile) -> int:
    # Each case draws its own replicates; the known case plus a few drawn ones suffice.
    return max(1, profile.examples // 12)


def _train_only(target: Target) -> str | None:
    return None if "train" in target.modes else "the stream regime needs training-mode BN"


def _variance_known(target: Target) -> list[StackCase]:
    return [StackCase(width=64, batch=256, depth=8, replicates=16, seed=3)]


@CHECKS.register(
    name="residual.variance_depth",
    summary="stream variance of a deep stack at init grows linearly (var0 + L)",
    bound=(stream_variance, sampling.student_t_quantile),
    cases=_stack_strategy(depth=(8, 16), replicates=_variance_replicates, scale=(-1.0, 1.0)),
    known=_variance_known,
    applies=_train_only,
    max_examples=_stack_examples,
)
def measure_variance_depth(target: Target, case: StackCase) -> Measurement:
    """Stream variance at every depth vs theory.residual.stream_variance (branch 'bn').

    Per replicate r and depth l the statistic is d = Var_l/Var_0 - pred_l/Var_0, Var the
    per-channel batch variance averaged over channels, pred_l = stream_variance(l, var0=Var_0)
    (var0 + l; with drop-path in training each block adds :func:`branch_variance` instead of 1,
    i.e. v stream_variance(l, var0/v)). In the stream regime x_{l+1} = x_l + F_l exactly and
    Var(F_l) is exactly 1 (a BN output), so d sums the covariances Cov(x_l, F_l); flipping the
    sign of the branch's last conv weight (a symmetric init) flips F_l and leaves x_l, so
    E[d] = 0 exactly. The replicates are independent (fresh weights and data), so a two-sided
    Student t test per depth at FALSE_ALARM / depth (Bonferroni: FALSE_ALARM per case) decides;
    ratio = |t| / t_crit.
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
        x = to_input(target, values).requires_grad_(True) * 1
        var0 = float(values.var(axis=(0, 2, 3)).mean())
        ratios[r, 0] = 1.0
        for l, m in enumerate(modules, start=1):
            m.train(True)
            x = adapter.call(target, m, x, seed=case.seed + 7919 * r + l)
            var_l = float(as_numpy(x).var(axis=(0, 2, 3)).mean())
            pred = v * stream_variance(l, var0=var0 / v, branch="bn")
            ratios[r, l] = var_l / var0
            d[r, l - 1] = (var_l - pred) / var0
    mean, sd = d.mean(axis=0), d.std(axis=0, ddof=1)
    t_crit = sampling.student_t_quantile(FALSE_ALARM, case.replicates - 1, case.depth)
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
        f"t-band (|t| {t_stat[l]:.3g} vs {t_crit:.3g} at alpha {FALSE_ALARM:g}/{case.depth}); "
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
    (g,) = torch.autograd.grad(y, leaf, dy.to(device=y.device, dtype=y.dtype))
    return float(g.double().pow(2).sum().cpu() / dy.double().pow(2).sum())


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
        x = to_input(target, values)
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


def _gradient_known(target: Target) -> list[StackCase]:
    return [StackCase(width=64, batch=256, depth=8, replicates=2, seed=3)]


@CHECKS.register(
    name="residual.plain_vs_residual",
    summary="input-gradient growth of a deep stack: polynomial with "
    "skips, exponential (BN-ReLU, pi/(pi-1) per layer) without",
    bound=(stream_variance, gradient_growth_predictions),
    cases=_stack_strategy(depth=(8, 16), replicates=_gradient_replicates, scale=(-1.0, 0.0)),
    known=_gradient_known,
    applies=_train_only,
    max_examples=_stack_examples,
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


@CHECKS.register(
    name="residual.no_mutation",
    summary="forward and backward leave the input unchanged (in-place ReLU)",
    bound=EXACT,
    cases=_block_strategy(),
    known=known_blocks,
)
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
    x = to_input(target, before)
    leaf = x.detach().requires_grad_(True)
    x_in = leaf * 1
    module.train()
    try:
        y = adapter.call(target, module, x_in, seed=case.seed)
        y.backward(torch.from_numpy(dy).to(device=y.device, dtype=y.dtype))
    except RuntimeError as exc:
        if "inplace" not in str(exc) and "in-place" not in str(exc):
            raise
        return Measurement(
            math.inf,
            f"training forward/backward wrote to the input in place: "
            f"autograd says {str(exc).splitlines()[0]}",
        )
    x_eval = to_input(target, before, noncontiguous=case.noncontiguous)
    module.eval()
    with torch.no_grad():
        adapter.call(target, module, x_eval, seed=case.seed)
    for where, after in (("training forward/backward", x_in), ("no-grad eval forward", x_eval)):
        changed = input_changed(before, as_numpy(after), where)
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
    e = adapter.expansion(target)
    return [
        BlockCase(
            batch=64, in_channels=8, planes=8, height=4, width=4, mode=mode, seed=5, expansion=e
        )
        for mode in target.modes
    ] + [
        BlockCase(
            batch=48,
            in_channels=3,
            planes=8,
            height=5,
            width=5,
            stride=2,
            mode="train",
            seed=6,
            expansion=e,
        )
    ]


@CHECKS.register(
    name="residual.stochastic_depth",
    summary="drop-path: identity in eval; per sample dropped or kept "
    "and scaled 1/(1-p) in training; keep count Binomial(n, 1-p)",
    bound=(block_forward_bound, sampling.binomial_two_sided_p),
    cases=_stochastic_cases,
    known=_stochastic_known,
    applies=_has_drop_path,
)
def measure_stochastic_depth(target: Target, case: BlockCase) -> Measurement:
    """Eval: the block equals the deterministic one (drop-path is the identity). Training: each
    sample's branch is dropped or kept and scaled by exactly 1/(1-p), which keeps E[output]
    (checked exactly, per sample, via the mask this recovers); and the number kept among the
    samples whose two outcomes differ is Binomial(n, 1-p): two-sided exact test at FALSE_ALARM,
    ratio log(1/pvalue) / log(1/FALSE_ALARM)."""
    p = adapter.drop_prob(target)
    c = _block_output(target, case, what=f"block output ({case.mode} mode)")
    if case.mode != "train" or c.ratio > 1:
        return Measurement(c.ratio, c.message)
    n = int(c.decidable.sum())
    k = int((c.kept & c.decidable).sum())
    if n == 0:
        return Measurement(c.ratio, c.message + "; no sample decides keep vs drop")
    pvalue = sampling.binomial_two_sided_p(k, n, 1 - p)
    ratio = math.log(1 / max(pvalue, 1e-300)) / math.log(1 / FALSE_ALARM)
    msg = (
        f"{c.message}; kept {k} of {n} decidable samples, expected {n * (1 - p):.1f} "
        f"(Binomial(n, 1-p={1 - p:g}) two-sided p-value {pvalue:.3g}, alpha {FALSE_ALARM:g})"
    )
    return Measurement(max(c.ratio, ratio), msg)


# --- the checks --------------------------------------------------------------------------------


# --- known defects of real implementations ---------------------------------------------------

#: The smallest program that shows it, run in a child process by the probe (it corrupts the
#: heap of the process that runs it).
ONEDNN_STRIDED_1X1_SCRIPT = """\
import torch
torch.set_num_threads(1)
for i in range(20):
    torch.manual_seed(i)
    conv = torch.nn.Conv2d(3, 8, kernel_size=1, stride=2, bias=False)
    x = torch.randn(4, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    y = conv(x.requires_grad_(True))
    y.backward(torch.randn(y.shape))
"""


@functools.lru_cache(maxsize=1)
def _onednn_strided_1x1_crashes() -> bool:
    """Whether the reproduction above still kills its process on this machine and torch."""
    run = subprocess.run(
        [sys.executable, "-c", ONEDNN_STRIDED_1X1_SCRIPT], capture_output=True, timeout=300
    )
    return run.returncode != 0


def _runs_channels_last_convs(target: Target) -> bool:
    # Inductor lays convolutions out channels_last on the CPU too (its layout optimisation).
    return (
        target.family == "residual"
        and (target.memory_format == "channels_last" or target.compile)
        and torch.backends.mkldnn.is_available()
    )


#: Found by varguard on torch 2.13.0 (CPU, oneDNN, an AVX2 AMD EPYC): the backward of a 1x1
#: stride-2 convolution on channels_last input corrupts the heap ("double free or corruption",
#: "corrupted size vs. prev_size"; SIGABRT or SIGSEGV, sometimes a later allocation) for small
#: input channel counts (2 to 5 measured) and even spatial sizes (6 to 16 measured); 1, 7, 8, 16
#: channels and odd sizes survived 100 calls, and torch.backends.mkldnn.enabled = False cures it.
#: A residual block's projection shortcut is that convolution: the search steps around stride-2
#: projections in the one check that runs their backward, and each run probes the defect again.
ONEDNN_STRIDED_1X1_BACKWARD_CRASH = CHECKS.add_defect(
    KnownDefect(
        checks=("residual.no_mutation",),
        description="torch CPU (oneDNN) backward of a 1x1 stride-2 convolution on channels_last "
        "input corrupts the heap: the projection shortcut of a strided block (reproduction: "
        "verify.checks.residual.ONEDNN_STRIDED_1X1_SCRIPT)",
        applies_to=_runs_channels_last_convs,
        matches=lambda case: case.stride == 2,
        example=BlockCase(
            batch=4, in_channels=3, planes=8, height=8, width=8, stride=2, mode="train", seed=12
        ),
        probe=_onednn_strided_1x1_crashes,
    )
)

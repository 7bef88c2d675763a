"""Batch-norm checks: each compares a target with the float64 reference or a theory oracle.

Every tolerance is a bound from theory.rounding (the check's ``bound``); statistics errors use
its probabilistic model with a false-alarm probability below 1e-13 per reduction.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import subprocess
import sys

import numpy as np
import torch
from hypothesis import strategies as st

from reference import batchnorm as ref
from reference.sharding import chan_combine
from theory import batchnorm as theory_bn
from theory import rounding
from verify.adapters import batchnorm as adapter
from verify.adapters.base import as_run, layout_of, to_input
from verify.assertions import EXACT, Times, argmax_index, compare, input_changed, worst
from verify.checks.base import Checks, KnownDefect, Measurement
from verify.dimensions import LAYOUTS
from verify.strategies.batchnorm import (
    BNCase,
    bn_cases,
    dimensions,
    make_affine,
    make_grad,
    make_input,
)
from verify.strategies.common import round_to
from verify.targets.base import Target


def _dimensions(target: Target, profile) -> dict[str, tuple[str, ...]]:
    return dimensions(target, max_elements=target.size_budget(profile.max_elements))


CHECKS = Checks("batchnorm", dimensions=_dimensions)


def _prec(target: Target) -> rounding.Precision:
    return rounding.Precision.of(target.dtype)


def _training_only(target: Target) -> str | None:
    return None if "train" in target.modes else "target exists for inference only"


def _cases(**kw):
    def cases(target: Target, profile) -> st.SearchStrategy[BNCase]:
        return adapter_cases(target, profile, **kw)

    return cases


def adapter_cases(target: Target, profile, **kw) -> st.SearchStrategy[BNCase]:
    return bn_cases(target=target, max_elements=target.size_budget(profile.max_elements), **kw)


def shape_for(target: Target, n: int, c: int, *spatial: int) -> tuple[int, ...]:
    """(n, c, *spatial) in the target's first input rank: the spatial sizes folded into the
    batch for (N, C), into one length for (N, C, L), padded with ones for 5-D."""
    rank = min(target.ranks)
    if rank == 2:
        return (n * math.prod(spatial), c)
    if rank == 3:
        return (n, c, math.prod(spatial))
    return (n, c, *(1,) * (rank - 2 - len(spatial)), *spatial)


def _known(target: Target) -> list[BNCase]:
    """Known failure modes, tried before any search: they make mutants die deterministically."""
    d = target.dtype
    high_kappa = {"float32": 4.0, "float64": 6.0, "bfloat16": 1.0, "float16": 2.0}[d]
    layout = (target.layouts or ("contiguous",))[0]
    if layout == "expanded":
        layout = "contiguous"
    known = functools.partial(BNCase, dtype=d, x_layout=layout)
    return [
        known(shape=shape_for(target, 2, 3, 1, 1), seed=1),  # m = 2: biased vs unbiased, x2
        known(shape=shape_for(target, 8, 4, 16, 16), log10_kappa=high_kappa, seed=2),
        known(
            shape=shape_for(target, 4, 2, 8, 8), distribution="constant", log10_scale=-2.0, seed=3
        ),
        known(
            shape=shape_for(target, 16, 3, 32, 32),
            log10_scale=-3.0,
            eps=1e-3,
            momentum=None,
            steps=3,
            seed=4,
        ),  # small variance: eps placement matters; cumulative average
        known(shape=shape_for(target, 64, 2, 32, 32), log10_scale=1.0, seed=5),  # 65536 sums
        # dy following the output: sum dy x_hat grows with the batch, and a parameter gradient
        # summed in the activations' dtype stops counting (torch's own layer norm does).
        known(shape=shape_for(target, 16, 2, 8, 8), grad_law="output", seed=12),
        *_known_tiles(target),
    ][: 3 if target.compile else None]  # each new shape recompiles (~2 s on a CPU)


def _known_tiles(target: Target) -> list[BNCase]:
    """The layout paths a kernel takes: each kind of view (strided, expanded, offset); then, for
    channels_last input, the input and gradient both channels_last and each mixed pair, a
    channel count past 64, and a reduction past 4096 values with a channel count that is no
    power of two (4-D)."""
    rank = max(target.ranks)
    layouts = target.layouts or LAYOUTS
    views = [
        BNCase(shape=shape_for(target, 4, 3, 5, 6), dtype=target.dtype, x_layout=v, seed=9)
        for v in ("strided", "expanded", "offset")
        if v in layouts
    ]
    if rank < 4 or "channels_last" not in layouts:
        return views
    known = functools.partial(BNCase, dtype=target.dtype, x_layout="channels_last")
    small = (2, 3) + (3,) * (rank - 2)
    cases = [
        *views,
        known(shape=small, dy_layout="channels_last", seed=8),
        # The mixed pairs: a kernel chosen from one tensor's layout alone reads the other wrong.
        known(shape=small, dy_layout="contiguous", seed=10),
        known(shape=(2, 65) + (2,) * (rank - 2), seed=6),
    ]
    if "contiguous" in layouts:  # (a variant may be checked in channels_last alone)
        cases.append(known(shape=small, x_layout="contiguous", dy_layout="channels_last", seed=11))
    if rank == 4:
        cases.append(known(shape=(2, 3, 48, 48), seed=7))
    return cases


def _reference(case: BNCase, values: np.ndarray):
    gamma, beta = make_affine(case)
    return ref.forward(values, gamma=gamma, beta=beta, eps=case.eps), gamma, beta


def _expected(target: Target, case: BNCase, values: np.ndarray):
    """The float64 reference forward of ``values`` and the bound on a target's output."""
    fw, gamma, beta = _reference(case, values)
    tol = rounding.bn_forward_tolerance(
        fw.xhat,
        fw.y,
        m=case.m,
        mean=fw.mean,
        var=fw.var_biased,
        eps=case.eps,
        gamma_=gamma,
        beta=beta,
        prec=_prec(target),
        spread=rounding.bulk_spread(values),
    )
    return fw, tol


# --- forward ---------------------------------------------------------------------------------


@CHECKS.register(
    name="batchnorm.forward",
    mode="train",
    summary="training forward vs the float64 two-pass reference",
    bound=rounding.bn_forward_tolerance,
    cases=_cases(),
    known=_known,
    applies=_training_only,
)
def measure_forward(target: Target, case: BNCase) -> Measurement:
    run = adapter.train_step(target, case, backward=False)
    values = make_input(case)
    fw, tol = _expected(target, case, values)
    c = compare(
        run.y,
        fw.y,
        tol,
        what="batchnorm forward output y",
        bound=rounding.bn_forward_tolerance,
        storage=target.dtype,
    )
    return Measurement(c.ratio, c.message())


# --- output moments ------------------------------------------------------------------------


@CHECKS.register(
    name="batchnorm.moments",
    mode="train",
    summary="per-channel output mean 0 and variance var/(var+eps)",
    bound=(theory_bn.expected_biased_variance_expr, rounding.bn_moments_tolerance),
    cases=_cases(),
    known=_known,
    applies=_training_only,
)
def measure_moments(target: Target, case: BNCase) -> Measurement:
    """Per-channel mean 0 and variance var/(var+eps) of the normalised output (no affine)."""
    case = dataclasses.replace(case, affine=False)
    run = adapter.train_step(target, case, backward=False)
    values = make_input(case)
    fw = ref.forward(values, eps=case.eps)
    tol = rounding.bn_forward_tolerance(
        fw.xhat,
        fw.y,
        m=case.m,
        mean=fw.mean,
        var=fw.var_biased,
        eps=case.eps,
        gamma_=np.ones(case.channels),
        beta=np.zeros(case.channels),
        prec=_prec(target),
        spread=rounding.bulk_spread(values),
    )
    axes = tuple(i for i in range(run.y.ndim) if i != 1)
    mean_t = run.y.mean(axis=axes)
    var_t = run.y.var(axis=axes)
    mean_tol, var_tol = rounding.bn_moments_tolerance(fw.xhat, tol, mean_t, axes)
    expected_var = fw.var_biased / (fw.var_biased + case.eps)
    c_mean = compare(
        mean_t,
        np.zeros(case.channels),
        mean_tol,
        what="per-channel mean of the normalised output (oracle: 0)",
        bound=rounding.bn_moments_tolerance,
    )
    c_var = compare(
        var_t,
        expected_var,
        var_tol,
        what="per-channel variance of the normalised output (oracle: var/(var+eps))",
        bound=(theory_bn.expected_biased_variance_expr, rounding.bn_moments_tolerance),
    )
    c = worst(c_mean, c_var)
    return Measurement(c.ratio, c.message())


# --- backward --------------------------------------------------------------------------------


@CHECKS.register(
    name="batchnorm.backward",
    mode="train+backward",
    summary="dx, dgamma, dbeta vs the closed form",
    bound=rounding.bn_backward_tolerance,
    cases=_cases(),
    known=_known,
    applies=_training_only,
)
def measure_backward(target: Target, case: BNCase) -> Measurement:
    run = adapter.train_step(target, case, backward=True)
    values = make_input(case)
    fw, gamma, _ = _reference(case, values)
    dy = make_grad(case)
    dx, dgamma, dbeta = ref.backward(dy, values, gamma=gamma, eps=case.eps)
    tol_dx, tol_dg, tol_db = rounding.bn_backward_tolerance(
        fw.xhat,
        dy,
        dx,
        m=case.m,
        mean=fw.mean,
        var=fw.var_biased,
        eps=case.eps,
        gamma_=gamma,
        prec=_prec(target),
        spread=rounding.bulk_spread(values),
    )
    bound = rounding.bn_backward_tolerance
    if run.dx is None:
        return Measurement(float("inf"), "batchnorm backward: no gradient reached the input")
    comps = [
        compare(run.dx, dx, tol_dx, what="batchnorm backward dx", bound=bound, storage=target.dtype)
    ]
    if case.affine:
        comps += [
            compare(run.dgamma, dgamma, tol_dg, what="batchnorm backward dgamma", bound=bound),
            compare(run.dbeta, dbeta, tol_db, what="batchnorm backward dbeta", bound=bound),
        ]
    c = worst(*comps)
    return Measurement(c.ratio, c.message())


# --- running statistics ----------------------------------------------------------------------


@CHECKS.register(
    name="batchnorm.running_stats",
    mode="train",
    summary="running mean/var (unbiased), momentum None, num_batches_tracked",
    bound=rounding.running_update_error,
    cases=_cases(steps=3),
    known=_known,
    applies=_training_only,
)
def measure_running(target: Target, case: BNCase) -> Measurement:
    """Running mean/var (unbiased), momentum None, num_batches_tracked over several steps."""
    module = adapter.build(target, case)
    prec = _prec(target)
    c = case.channels
    r_mean, r_var = np.zeros(c), np.ones(c)  # torch's initial buffers
    e_mean, e_var = np.zeros(c), np.zeros(c)
    nbt = 0
    comps = []
    for step in range(case.steps):
        run = adapter.train_step(target, case, module, step_index=step, backward=False)
        values = make_input(case, step=step)
        fw = ref.forward(values, eps=case.eps)
        d_mean, d_var = rounding.bn_statistics_error(
            case.m, fw.mean, fw.var_biased, prec, spread=rounding.bulk_spread(values)
        )
        new = ref.update_running(
            r_mean, r_var, fw.mean, fw.var_unbiased, momentum=case.momentum, num_batches_tracked=nbt
        )
        f = 1.0 / new.num_batches_tracked if case.momentum is None else case.momentum
        e_mean = rounding.running_update_error(e_mean, r_mean, fw.mean, d_mean, f, prec)
        e_var = rounding.running_update_error(
            e_var, r_var, fw.var_unbiased, d_var * case.m / (case.m - 1), f, prec
        )
        r_mean, r_var, nbt = new
        bound = rounding.running_update_error
        comps += [
            compare(
                run.running_mean,
                r_mean,
                e_mean + 1e-30,
                bound=bound,
                what=f"running_mean after step {step + 1} (momentum={case.momentum})",
            ),
            compare(
                run.running_var,
                r_var,
                e_var + 1e-30,
                bound=bound,
                what=f"running_var (unbiased) after step {step + 1} (momentum={case.momentum})",
            ),
        ]
        if run.num_batches_tracked is not None and run.num_batches_tracked != nbt:
            return Measurement(
                float("inf"),
                f"num_batches_tracked is {run.num_batches_tracked} "
                f"after {step + 1} training steps, expected {nbt}",
            )
    c_ = worst(*comps)
    return Measurement(c_.ratio, c_.message())


# --- eval mode ---------------------------------------------------------------------------------


def _running_stats(case: BNCase) -> tuple[np.ndarray, np.ndarray]:
    """Running statistics unlike the batch's, so a target that uses batch stats shows."""
    rng = np.random.default_rng([case.seed, 30_000])
    values = make_input(case)
    axes = tuple(i for i in range(values.ndim) if i != 1)
    mean, std = values.mean(axis=axes), values.std(axis=axes) + 1e-3
    r_mean = rounding_f32(mean + std * rng.normal(0.0, 1.0, case.channels))
    r_var = rounding_f32((std * rng.uniform(0.5, 2.0, case.channels)) ** 2)
    return r_mean, r_var


def rounding_f32(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32).astype(np.float64)


def _eval_cases(target, profile):
    return adapter_cases(target, profile, min_m=1)


def _eval_expected(case: BNCase, values: np.ndarray, r_mean, r_var, *, stat_errors=None):
    """The float64 eval-mode output for running statistics (r_mean, r_var), or with
    track_running_stats=False (a module without them) the batch-statistics output, and the bound
    on a target's output, with the kwargs a backward bound needs."""
    gamma, beta = make_affine(case)
    if not case.track_running_stats:
        fw = ref.forward(values, gamma=gamma, beta=beta, eps=case.eps)
        return fw.y, _expected_tol(case, values, fw, gamma, beta), None
    expected = ref.eval_forward(values, r_mean, r_var, gamma=gamma, beta=beta, eps=case.eps)
    shape = (1, -1) + (1,) * (values.ndim - 2)
    x_hat = (values - r_mean.reshape(shape)) / np.sqrt(r_var.reshape(shape) + case.eps)
    prec = rounding.Precision.of(case.dtype)
    stats = {"mean": r_mean, "var": r_var, "eps": case.eps, "prec": prec}
    tol = rounding.bn_forward_tolerance(
        x_hat, expected, m=None, gamma_=gamma, beta=beta, stat_errors=stat_errors, **stats
    )
    return expected, tol, {"x_hat": x_hat, "gamma_": gamma, "stat_errors": stat_errors, **stats}


def _expected_tol(case: BNCase, values: np.ndarray, fw, gamma, beta) -> np.ndarray:
    return rounding.bn_forward_tolerance(
        fw.xhat,
        fw.y,
        m=case.m,
        mean=fw.mean,
        var=fw.var_biased,
        eps=case.eps,
        gamma_=gamma,
        beta=beta,
        prec=rounding.Precision.of(case.dtype),
        spread=rounding.bulk_spread(values),
    )


@CHECKS.register(
    name="batchnorm.eval",
    mode="eval",
    summary="eval mode normalises with the running statistics (with track_running_stats=False, "
    "with the batch's)",
    bound=rounding.bn_forward_tolerance,
    cases=_eval_cases,
    known=_known,
)
def measure_eval(target: Target, case: BNCase) -> Measurement:
    r_mean, r_var = _running_stats(case)
    run = adapter.eval_step(target, case, r_mean, r_var)
    expected, tol, _ = _eval_expected(case, make_input(case), r_mean, r_var)
    which = "running" if case.track_running_stats else "batch (track_running_stats=False)"
    c = compare(
        run.y,
        expected,
        tol,
        what=f"eval-mode output ({which} statistics)",
        bound=rounding.bn_forward_tolerance,
        storage=target.dtype,
    )
    return Measurement(c.ratio, c.message())


def _backward_comparisons(
    case: BNCase, run, values: np.ndarray, kw: dict | None, *, what: str, index: int = 0
):
    """dx, dgamma, dbeta of a backward step against the reference: the eval-mode closed form
    (running statistics are constants) when ``kw`` holds them, else the training one."""
    dy = make_grad(case, step=index)
    gamma, _ = make_affine(case)
    if kw is None:  # batch statistics: the training backward
        fw = ref.forward(values, gamma=gamma, eps=case.eps)
        dx, dgamma, dbeta = ref.backward(dy, values, gamma=gamma, eps=case.eps)
        tols = rounding.bn_backward_tolerance(
            fw.xhat, dy, dx, m=case.m, mean=fw.mean, var=fw.var_biased, eps=case.eps,
            gamma_=gamma, prec=rounding.Precision.of(case.dtype),
            spread=rounding.bulk_spread(values),
        )  # fmt: skip
        bound = rounding.bn_backward_tolerance
    else:
        shape = (1, -1) + (1,) * (values.ndim - 2)
        s = np.sqrt(kw["var"].reshape(shape) + case.eps)
        dx = gamma.reshape(shape) * dy / s
        axes = tuple(i for i in range(values.ndim) if i != 1)
        dgamma, dbeta = (dy * kw["x_hat"]).sum(axis=axes), dy.sum(axis=axes)
        tols = rounding.bn_eval_backward_tolerance(kw.pop("x_hat"), dy, dx, m=case.m, **kw)
        bound = rounding.bn_eval_backward_tolerance
    if run.dx is None:
        return [compare(np.full(1, np.inf), np.zeros(1), 1.0, what=f"{what}: no dx", bound=bound)]
    comps = [compare(run.dx, dx, tols[0], what=f"{what} dx", bound=bound, storage=case.dtype)]
    if case.affine:
        comps += [
            compare(run.dgamma, dgamma, tols[1], what=f"{what} dgamma", bound=bound),
            compare(run.dbeta, dbeta, tols[2], what=f"{what} dbeta", bound=bound),
        ]
    return comps


@CHECKS.register(
    name="batchnorm.eval_backward",
    mode="eval+backward",
    summary="backward in eval mode (a frozen batch norm being fine-tuned): dx = gamma dy / "
    "sqrt(running_var + eps), dgamma and dbeta against the closed form",
    bound=rounding.bn_eval_backward_tolerance,
    cases=_eval_cases,
    known=_known,
    applies=_training_only,  # an inference-only target (conv-BN folding) has no backward
)
def measure_eval_backward(target: Target, case: BNCase) -> Measurement:
    r_mean, r_var = _running_stats(case)
    run = adapter.eval_step(target, case, r_mean, r_var, backward=True)
    values = make_input(case)
    _, _, kw = _eval_expected(case, values, r_mean, r_var)
    c = worst(*_backward_comparisons(case, run, values, kw, what="eval-mode backward"))
    return Measurement(c.ratio, c.message())


# --- switching modes: a module through a sequence of steps ------------------------------------


def _sequence_cases(target: Target, profile) -> st.SearchStrategy[BNCase]:
    return adapter_cases(target, profile, max_program=12)


def _sequence_known(target: Target) -> list[BNCase]:
    base = _known(target)[1]
    program = ("train+backward",) * 10 + ("eval", "eval+backward", "train", "eval")
    return [
        dataclasses.replace(base, shape=shape_for(target, 4, 3, 4, 4), momentum=m, program=program)
        for m in (None, 0.0, 1.0, 0.3)
    ] + [
        dataclasses.replace(base, shape=shape_for(target, 4, 3, 4, 4), program=program,
                            track_running_stats=False),
    ]  # fmt: skip


@CHECKS.register(
    name="batchnorm.mode_switching",
    mode="switching",
    summary="one module through a sequence of training and eval steps (with and without "
    "backward): every output, the running statistics and num_batches_tracked after each step",
    bound=(rounding.bn_forward_tolerance, rounding.running_update_error),
    cases=_sequence_cases,
    known=_sequence_known,
    applies=_training_only,
)
def measure_mode_switching(target: Target, case: BNCase) -> Measurement:
    """The module lives through ``case.program``; the float64 model follows it: batch statistics
    and the running update (momentum None, 0, 1 or between) in training, the running statistics
    (with the errors the updates accumulated, theory.rounding.running_update_error) or, without
    track_running_stats, the batch's in eval; the eval backward treats them as constants."""
    module = adapter.build(target, case)
    prec = _prec(target)
    c = case.channels
    r_mean, r_var = np.zeros(c), np.ones(c)  # torch's initial buffers
    e_mean, e_var = np.zeros(c), np.zeros(c)
    nbt, comps = 0, []
    for i, token in enumerate(case.program):
        mode, _, grad = token.partition("+")
        run = adapter.step(target, case, module, mode=mode, backward=bool(grad), index=i)
        values = make_input(case, step=i)
        where = f"step {i + 1} ({token}) of {'/'.join(case.program)}"
        gamma, beta = make_affine(case)
        if mode == "train" or not case.track_running_stats:
            fw = ref.forward(values, gamma=gamma, beta=beta, eps=case.eps)
            tol, kw = _expected_tol(case, values, fw, gamma, beta), None
            expected = fw.y
        else:
            expected, tol, kw = _eval_expected(
                case, values, r_mean, r_var, stat_errors=(e_mean, e_var)
            )
        comps.append(
            compare(run.y, expected, tol, what=f"output at {where}",
                    bound=rounding.bn_forward_tolerance, storage=target.dtype)
        )  # fmt: skip
        if grad:
            comps += _backward_comparisons(
                case, run, values, kw, what=f"backward at {where}", index=i
            )
        if mode == "train" and case.track_running_stats:
            fw = ref.forward(values, eps=case.eps)
            d_mean, d_var = rounding.bn_statistics_error(
                case.m, fw.mean, fw.var_biased, prec, spread=rounding.bulk_spread(values)
            )
            new = ref.update_running(
                r_mean, r_var, fw.mean, fw.var_unbiased, momentum=case.momentum,
                num_batches_tracked=nbt,
            )  # fmt: skip
            f = 1.0 / new.num_batches_tracked if case.momentum is None else case.momentum
            e_mean = rounding.running_update_error(e_mean, r_mean, fw.mean, d_mean, f, prec)
            e_var = rounding.running_update_error(
                e_var, r_var, fw.var_unbiased, d_var * case.m / (case.m - 1), f, prec
            )
            r_mean, r_var, nbt = new
        if case.track_running_stats:
            bound = rounding.running_update_error
            comps += [
                compare(run.running_mean, r_mean, e_mean + 1e-30, bound=bound,
                        what=f"running_mean after {where}"),
                compare(run.running_var, r_var, e_var + 1e-30, bound=bound,
                        what=f"running_var after {where}"),
            ]  # fmt: skip
            if run.num_batches_tracked is not None and run.num_batches_tracked != nbt:
                return Measurement(
                    math.inf,
                    f"num_batches_tracked is {run.num_batches_tracked} after {where}, "
                    f"expected {nbt}",
                )
        elif run.running_mean is not None and (
            np.any(run.running_mean != 0) or np.any(run.running_var != 1)
        ):
            return Measurement(
                math.inf,
                f"track_running_stats=False, yet the module's running statistics changed at "
                f"{where}",
            )
    c_ = worst(*comps)
    return Measurement(c_.ratio, c_.message())


# --- invariances -------------------------------------------------------------------------------


def _forward_and_tol(target: Target, case: BNCase, values: np.ndarray):
    """Target output on ``values`` (already rounded; in the case's input layout) and its bound
    against the reference."""
    module = adapter.build(target, case)
    module.train()
    with torch.no_grad():
        x = adapter.input_tensor(target, case, values)
        y = adapter.call(target, module, x).to(torch.float64).cpu().numpy()
    fw, tol = _expected(target, case, values)
    return y, tol, fw.y


@CHECKS.register(
    name="batchnorm.affine_invariance",
    summary="BN(a x + b, eps a^2) = BN(x, eps)",
    bound=Times(2, rounding.bn_forward_tolerance),
    cases=_cases(),
    known=_known,
    applies=_training_only,
)
def measure_affine_invariance(target: Target, case: BNCase) -> Measurement:
    """BN(a x + b; eps a^2) = BN(x; eps) per channel, a > 0: the output ignores input units."""
    rng = np.random.default_rng([case.seed, 40_000])
    # One power-of-two scale for all channels keeps eps a^2 exact; shifts differ per channel.
    values = make_input(case)
    # Keep a x + b finite in the storage dtype: the property is about units, not overflow.
    peak = float(np.max(np.abs(values))) + 4.0
    top = int(np.floor(np.log2(0.25 * float(torch.finfo(target.torch_dtype).max) / peak)))
    a = float(2.0 ** rng.integers(-4, max(min(top, 4), -4) + 1))
    b = rng.normal(0, 4, size=case.channels).reshape((1, -1) + (1,) * (values.ndim - 2))
    shifted = round_to(values * a + b, case.dtype)
    y0, tol0, ref0 = _forward_and_tol(target, case, values)
    case1 = dataclasses.replace(case, eps=case.eps * a**2)
    y1, tol1, ref1 = _forward_and_tol(target, case1, shifted)
    # Both outputs are within their bound of their exact values; the exact values differ only
    # through the rounding of a x + b, which the float64 references measure.
    c = compare(
        y1,
        y0,
        tol0 + tol1 + np.abs(ref1 - ref0),
        what=f"BN(a x + b, eps a^2) vs BN(x, eps), a={a:g}",
        bound=Times(2, rounding.bn_forward_tolerance),
    )
    return Measurement(c.ratio, c.message())


@CHECKS.register(
    name="batchnorm.permutation",
    summary="permuting the batch permutes the output",
    bound=Times(2, rounding.bn_forward_tolerance),
    cases=_cases(),
    known=_known,
    applies=_training_only,
)
def measure_permutation(target: Target, case: BNCase) -> Measurement:
    """Permuting the batch permutes the output: statistics do not depend on sample order."""
    values = make_input(case)
    perm = np.random.default_rng([case.seed, 50_000]).permutation(case.shape[0])
    y0, tol0, _ = _forward_and_tol(target, case, values)
    y1, tol1, _ = _forward_and_tol(target, case, values[perm])
    c = compare(
        y1,
        y0[perm],
        tol0[perm] + tol1,
        what="BN(x[perm]) vs BN(x)[perm]",
        bound=Times(2, rounding.bn_forward_tolerance),
    )
    return Measurement(c.ratio, c.message())


@CHECKS.register(
    name="batchnorm.layout",
    mode="train",
    summary="the same values in two memory layouts give the same output",
    bound=Times(2, rounding.bn_forward_tolerance),
    cases=_cases(),
    known=_known,
    applies=_training_only,
)
def measure_layout(target: Target, case: BNCase) -> Measurement:
    """The same values in the case's layout and in another (contiguous, or channels_last for a
    contiguous case) give the same output: the layout changes the kernel, not the result."""
    values = make_input(case)
    y0, tol0, _ = _forward_and_tol(target, case, values)
    if case.x_layout != "contiguous":
        other = "contiguous"
    else:
        other = "channels_last" if len(case.shape) in (4, 5) else "strided"
    twin = dataclasses.replace(case, x_layout=other)
    y1, tol1, _ = _forward_and_tol(target, twin, values)
    c = compare(
        y1,
        y0,
        tol0 + tol1,
        what=f"output for {other} input vs {case.x_layout} input",
        bound=Times(2, rounding.bn_forward_tolerance),
    )
    return Measurement(c.ratio, c.message())


@CHECKS.register(
    name="batchnorm.sharding",
    summary="shard statistics combined by Chan's formula equal the batch's",
    bound=(rounding.bn_statistics_error, rounding.chan_combine_error),
    cases=_cases(),
    known=_known,
    applies=_training_only,
)
def measure_sharding(target: Target, case: BNCase) -> Measurement:
    """Statistics of batch shards, combined by Chan's formula, equal the full batch's: what
    SyncBatchNorm relies on. Each shard's statistics are read from the target's running
    buffers after one step with momentum 1 (running = batch)."""
    values = make_input(case)
    n = case.shape[0]
    cuts = (
        sorted(set(np.random.default_rng([case.seed, 60_000]).integers(1, n, size=2)))
        if n > 1
        else []
    )
    shards = [s for s in np.split(values, cuts) if s.shape[0] * np.prod(s.shape[2:]) >= 2]
    if sum(s.shape[0] for s in shards) != n:
        shards = [values]
    counts, means, m2s, d_means, d_m2s = [], [], [], [], []
    prec = _prec(target)
    for shard in shards:
        scase = dataclasses.replace(case, shape=shard.shape, momentum=1.0, track_running_stats=True)
        module = adapter.build(target, scase)
        module.train()
        with torch.no_grad():
            adapter.call(target, module, to_input(target, shard, layout="contiguous"))
        m = scase.m
        fw = ref.forward(shard, eps=case.eps)
        d_mean, d_var = rounding.bn_statistics_error(
            m, fw.mean, fw.var_biased, prec, spread=rounding.bulk_spread(shard)
        )
        counts.append(m)
        means.append(module.running_mean.double().cpu().numpy())
        m2s.append(module.running_var.double().cpu().numpy() * (m - 1))
        d_means.append(d_mean)
        # M2 = (m - 1) unbiased var = m biased var; plus the unbiased scaling's rounding.
        d_m2s.append(m * d_var + 2 * prec.u * m * fw.var_biased)
    mean, m2, total = chan_combine(counts, means, m2s)
    full = ref.forward(values, eps=case.eps)
    e_mean, e_m2 = rounding.chan_combine_error(counts, means, d_means, d_m2s, full.mean)
    c1 = compare(
        mean,
        full.mean,
        e_mean + 1e-30,
        what="Chan-combined shard mean",
        bound=(rounding.bn_statistics_error, rounding.chan_combine_error),
    )
    c2 = compare(
        m2 / (total - 1),
        full.var_unbiased,
        e_m2 / (total - 1) + 1e-30,
        what=f"Chan-combined unbiased variance of {len(shards)} shards",
        bound=(rounding.bn_statistics_error, rounding.chan_combine_error),
    )
    c = worst(c1, c2)
    return Measurement(c.ratio, c.message())


# --- hygiene: the input is not mutated, every output element is written --------------------


@CHECKS.register(
    name="batchnorm.no_mutation",
    summary="forward and backward leave the input unchanged",
    bound=EXACT,
    cases=_cases(),
    known=_known,
    applies=_training_only,
)
def measure_no_mutation(target: Target, case: BNCase) -> Measurement:
    """Neither training (forward + backward) nor no-grad inference may write to the input."""
    before = make_input(case)
    run = adapter.train_step(target, case, backward=True)
    module = adapter.build(target, case)
    module.eval()
    x = adapter.input_tensor(target, case, before)
    with torch.no_grad():
        adapter.call(target, module, x)
    for where, after in (
        ("training forward/backward", run.input_after),
        ("no-grad eval forward", x.to(torch.float64).cpu().numpy()),
    ):
        changed = input_changed(before, after, where)
        if changed:
            return Measurement(float("inf"), changed)
    return Measurement(0.0, "input unchanged by training and by no-grad inference")


@contextlib.contextmanager
def _poisoned_memory():
    """Uninitialised tensors come back filled with NaN (torch's deterministic-mode switch)."""
    prev = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    import torch.utils.deterministic as det

    prev_fill = det.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    det.fill_uninitialized_memory = True
    try:
        yield
    finally:
        det.fill_uninitialized_memory = prev_fill
        torch.use_deterministic_algorithms(prev, warn_only=prev_warn)


@CHECKS.register(
    name="batchnorm.output_layout",
    mode="train+backward",
    summary="y and dx are dense, and channels_last inputs give channels_last outputs (y for a "
    "channels_last x; dx when the incoming gradient is channels_last too)",
    bound=EXACT,
    cases=_cases(),
    known=_known,
    applies=_training_only,
)
def measure_output_layout(target: Target, case: BNCase) -> Measurement:
    """Layouts propagate, as through any chain of torch operations: y and dx are dense (no gaps,
    no overlapping elements), y is channels_last when x is, and dx is channels_last when x and
    the incoming gradient both are. A drop-in that breaks this computes the right values but
    breaks what relies on the layout: a channels_last network turns contiguous after it, and a
    kernel that takes dense strides for granted reads the gaps."""
    run = adapter.train_step(target, case, backward=True)
    x = adapter.input_tensor(target, case, make_input(case))
    x_cl = layout_of(x) == "channels_last"  # size-1 dimensions make both formats one
    dy_cl = case.dy_layout == "channels_last"
    wants = {"y": x_cl, "dx": x_cl and dy_cl}
    wrong = {}
    for name, got in (("y", run.y_layout), ("dx", run.dx_layout)):
        if got and (got.startswith("non-dense") or (wants[name] and got != "channels_last")):
            wrong[name] = got
    if wrong:
        want = " and ".join(
            f"{k} {'dense and channels_last' if wants[k] else 'dense'}" for k in wrong
        )
        return Measurement(
            math.inf,
            f"{' and '.join(f'{k} is {v}' for k, v in wrong.items())} for a {case.x_layout} "
            f"input and a {case.dy_layout} incoming gradient of shape {case.shape}; a batch norm "
            f"returns {want}",
        )
    return Measurement(0.0, f"y {run.y_layout}, dx {run.dx_layout}")


@CHECKS.register(
    name="batchnorm.poisoned_outputs",
    summary="every output element is written (NaN-filled memory)",
    bound=EXACT,
    cases=_cases(),
    known=_known,
    applies=_training_only,
)
def measure_poisoned(target: Target, case: BNCase) -> Measurement:
    with _poisoned_memory():
        run = adapter.train_step(target, case, backward=True)
    outputs = {"y": run.y, "dx": run.dx, "dgamma": run.dgamma, "dbeta": run.dbeta}
    values = make_input(case)
    fw, _, _ = _reference(case, values)
    for name, arr in outputs.items():
        if arr is None:
            continue
        bad = np.isnan(arr) & np.isfinite(fw.y).all()
        if bad.any():
            return Measurement(
                float("inf"),
                f"{name}: {int(bad.sum())} of {arr.size} elements "
                f"left unwritten (NaN poison) first at {argmax_index(bad)}",
            )
    return Measurement(0.0, "every output element written")


# --- bad input ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BadInputCase:
    kind: str  # "one_value_per_channel" | "wrong_rank" | "wrong_channels"
    channels: int = 3
    seed: int = 0


def _bad_cases(target, profile):
    return st.builds(
        BadInputCase,
        kind=st.sampled_from(["one_value_per_channel", "wrong_rank", "wrong_channels"]),
        channels=st.integers(1, 8),
        seed=st.integers(0, 1000),
    )


def _bad_known(target):
    return [
        BadInputCase(kind) for kind in ("one_value_per_channel", "wrong_rank", "wrong_channels")
    ]


@CHECKS.register(
    name="batchnorm.bad_input",
    summary="one value per channel, wrong rank, wrong channel count raise a clear error",
    bound=EXACT,
    cases=_bad_cases,
    known=_bad_known,
    applies=_training_only,
    max_examples=lambda profile: 6,
)
def measure_bad_input(target: Target, case: BadInputCase) -> Measurement:
    c = case.channels
    rank = min(target.ranks)
    # 1-D where every rank from 2 to 5 is taken (SyncBatchNorm: any input of 2 dimensions or more).
    wrong_rank = next(r for r in (4, 2, 5, 3, 1) if r not in target.ranks)
    shape = {
        "one_value_per_channel": (1, c) + (1,) * (rank - 2),
        "wrong_rank": (4, c, 3, 3, 3)[:wrong_rank],
        "wrong_channels": (4, c + 1) + (3,) * (rank - 2),
    }[case.kind]
    bn_case = BNCase(shape=(2, c) + (1,) * (rank - 2), dtype=target.dtype, seed=case.seed)
    module = adapter.build(target, bn_case)
    module.train()
    with torch.no_grad():  # a valid input first: a target that refuses it says nothing here
        adapter.call(target, module, adapter.input_tensor(target, bn_case, make_input(bn_case)))
    values = np.random.default_rng(case.seed).normal(size=shape)
    x = torch.from_numpy(values).to(device=target.device, dtype=target.torch_dtype)
    try:
        with torch.no_grad():
            as_run(target, module)(x)  # directly: not the adapter's own shape checks
    except (ValueError, RuntimeError, TypeError, AssertionError) as exc:
        if str(exc).strip():
            return Measurement(0.0, f"{case.kind}: raised {type(exc).__name__}: {exc}")
        return Measurement(
            float("inf"), f"{case.kind}: raised {type(exc).__name__} with no message"
        )
    return Measurement(
        float("inf"),
        f"{case.kind}: input of shape {shape} to a {c}-channel batch norm taking "
        f"{'/'.join(f'{r}-D' for r in target.ranks)} input in training was accepted silently",
    )


# --- known defects of real implementations ---------------------------------------------------


def _one_fast_path(case: BNCase) -> bool:
    """Whether input and incoming gradient are dense in one memory format: torch's CPU batch
    norm backward then takes its fast path (both contiguous, a storage offset included, or both
    channels_last); any other pair takes the generic one."""
    plain = ("contiguous", "offset")
    return (case.x_layout in plain and case.dy_layout in plain) or (
        case.x_layout == case.dy_layout == "channels_last"
    )


def _dy_dot_centered_overflows_fp16(case: BNCase) -> bool:
    """Whether a float16 accumulation of sum(dy * (x - mean)) may pass 65504 at some step: a
    product, or a partial sum in any order, i.e. the sum of the terms' magnitudes."""
    for step in range(max(1, len(case.program))):
        x, dy = make_input(case, step=step), make_grad(case, step=step)
        axes = tuple(i for i in range(x.ndim) if i != 1)
        centered = x - x.mean(axis=axes, keepdims=True)
        if np.max(np.abs(dy * centered).sum(axis=axes)) >= 65504.0:
            return True
    return False


def _torch_bn_cpu_half(target: Target) -> bool:
    """torch's own batch norm module on the CPU with float16 input, not under autocast: where
    the two CPU float16 defects below live."""
    return (
        target.factory in (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)
        and target.dtype == "float16"
        and target.device == "cpu"
        and target.autocast is None
    )


#: Found by varguard on torch 2.13.0 (CPU): the backward of batch norm on float16 input keeps
#: sum(dy * (x - mean)) in float16 on its generic path, so once it passes 65504 dx comes back as
#: +-inf. The generic path is taken whenever the input and the incoming gradient are not dense
#: in one memory format (measured over every pair of the five layouts: contiguous with a
#: storage offset counts as contiguous; both channels_last is fast). Measured: values near the
#: float16 limit, or one outlier of 3.7e4 among 63 values; and a channel whose products pass the
#: limit while their sum does not (x 6e4 and 9.8e3, dy ~ 25 from the offset law: sum 1.8e4, the
#: product 6.4e5 overflows), so the matcher takes the sum of the terms' magnitudes.
FP16_NONCONTIGUOUS_BACKWARD_OVERFLOW = CHECKS.add_defect(
    KnownDefect(
        checks=("batchnorm.backward", "batchnorm.eval_backward", "batchnorm.mode_switching"),
        applies_to=_torch_bn_cpu_half,
        description="torch CPU batch norm backward returns inf on float16 input when the input "
        "and the incoming gradient are not dense in one memory format and sum(dy * (x - mean)) "
        "exceeds 65504 (its generic path accumulates it in float16)",
        matches=lambda case: (
            case.dtype == "float16"
            and not _one_fast_path(case)
            and _dy_dot_centered_overflows_fp16(case)
        ),
        example=BNCase(  # no running statistics: eval mode takes the batch's, the same path
            shape=(1, 1, 1, 3),
            dtype="float16",
            distribution="near_float16_max",
            affine=False,
            track_running_stats=False,
            x_layout="strided",
        ),
    )
)


#: 1/sqrt(var + eps) overflows float16 below this (1/65504^2).
HALF_INVSTD_LIMIT = 65504.0**-2


def _half_invstd_overflows(case: BNCase) -> bool:
    """The pure float16 path (no float32 weight, bias or running statistics) and a channel with
    var + eps within 256x of where 1/sqrt(var + eps) overflows float16 (the margin covers the
    a^2 rescaling of batchnorm.affine_invariance, a in [2^-4, 2^4]), at any step of the case."""
    if case.dtype != "float16" or case.affine or case.track_running_stats:
        return False
    for step in range(max(1, len(case.program))):
        x = make_input(case, step=step)
        axes = tuple(i for i in range(x.ndim) if i != 1)
        if float(np.min(x.var(axis=axes))) + case.eps < 256 * HALF_INVSTD_LIMIT:
            return True
    return False


#: Found by varguard on torch 2.13.0 (CPU): with float16 input and no float32 tensor in the
#: module (affine=False, track_running_stats=False) batch norm keeps 1/sqrt(var + eps) in
#: float16, where it overflows to inf once var + eps < 2.3e-10: a constant channel with eps below
#: that gives NaN (0 x inf). Measured at eps = 1e-12 on constant channels of 2 to 1024 values;
#: with a float32 weight, bias or running statistics the mixed-precision path keeps it in float32.
HALF_INVSTD_OVERFLOW = CHECKS.add_defect(
    KnownDefect(
        checks=(
            "batchnorm.forward",
            "batchnorm.moments",
            "batchnorm.backward",
            "batchnorm.eval",
            "batchnorm.eval_backward",
            "batchnorm.mode_switching",
            "batchnorm.affine_invariance",
            "batchnorm.permutation",
            "batchnorm.layout",
            "batchnorm.poisoned_outputs",
        ),
        applies_to=_torch_bn_cpu_half,
        description="torch CPU batch norm on float16 input with affine=False and "
        "track_running_stats=False keeps 1/sqrt(var + eps) in float16: it overflows to inf "
        "once var + eps < 2.3e-10, and a constant channel gives NaN",
        matches=_half_invstd_overflows,
        example=BNCase(
            shape=(2, 1, 1, 1),
            dtype="float16",
            distribution="constant",
            eps=1e-12,
            affine=False,
            track_running_stats=False,
        ),
    )
)


# --- known defects of torch's CUDA batch norm (measured on an H200, torch 2.11.0+cu130, cuDNN
# 9.19: scripts/probe-cuda-bn and the first GPU report, reports/2026-11-30-cuda/) -------------


def _torch_bn_cuda_half(target: Target) -> bool:
    """torch's own batch norm module on CUDA with float16 input and float32 parameters (how
    this suite runs half targets, and what autocast does), not compiled."""
    return (
        target.factory in (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)
        and str(target.device).startswith("cuda")
        and target.dtype == "float16"
        and not target.compile
    )


#: A float16 view one element into its storage: its data pointer is 2-byte aligned only.
CUDNN_HALF_MISALIGNED_SCRIPT = """\
import sys, torch
bn = torch.nn.BatchNorm2d(3).cuda()
x = torch.randn(4 * 3 * 5 * 6 + 1, device="cuda").half()[1:].view(4, 3, 5, 6)
try:
    bn(x)
    torch.cuda.synchronize()
except Exception as exc:
    sys.exit(3 if "misaligned" in str(exc) else 1)
"""


@functools.lru_cache(maxsize=1)
def _cudnn_half_misaligned() -> bool:
    """Whether the script above still faults (in a child: the fault poisons its process)."""
    run = subprocess.run(
        [sys.executable, "-c", CUDNN_HALF_MISALIGNED_SCRIPT], capture_output=True, timeout=300
    )
    return run.returncode == 3


#: Found by varguard's first GPU run (cuda-autocast-fp16, every check's offset-layout case):
#: cuDNN's training-mode batch norm on float16 input with float32 parameters stops with "CUDA
#: error: misaligned address" when the input's or the incoming gradient's data pointer is only
#: 2-byte aligned (a view at an odd element offset into its storage), and the fault poisons
#: the process. Measured by scripts/probe-cuda-bn over float16/bfloat16/float32 input, float32
#: or same-dtype parameters, cuDNN on and off, training and eval, shapes (4, 3, 5, 6) and
#: (8, 16, 32, 32), offsets 0, 8, 4, 2, 1 elements on x and on dy: only float16 input with
#: float32 parameters, cuDNN on, training, offset 1 faults (4 of 80 combinations), on x and on
#: dy alike; offsets of 2 elements or more, bfloat16, same-dtype parameters, native CUDA
#: (cuDNN off) and eval mode never did. The matcher takes float16 cases with x or dy at the
#: one-element offset, in the checks that train.
CUDNN_HALF_MISALIGNED = CHECKS.add_defect(
    KnownDefect(
        checks=tuple(
            f"batchnorm.{c}"
            for c in (
                "forward",
                "moments",
                "backward",
                "running_stats",
                "mode_switching",
                "affine_invariance",
                "permutation",
                "layout",
                "sharding",
                "no_mutation",
                "output_layout",
                "poisoned_outputs",
            )
        ),  # fmt: skip
        applies_to=lambda target: _torch_bn_cuda_half(target) and target.options.get("cudnn", True),
        description="torch's cuDNN batch norm (training) on float16 input with float32 "
        "parameters faults with 'CUDA error: misaligned address' when x or dy starts one "
        "element into its storage (2-byte aligned)",
        matches=lambda case: (
            case.dtype == "float16" and "offset" in (case.x_layout, case.dy_layout)
        ),
        example=BNCase(shape=(4, 3, 5, 6), dtype="float16", x_layout="offset"),
        probe=_cudnn_half_misaligned,
    )
)


def _eval_backward_step(case: BNCase) -> bool:
    """A float16 case with an eval-mode backward: the eval-backward check's, or a step of a
    mode-switching program."""
    return case.dtype == "float16" and (not case.program or "eval+backward" in case.program)


#: Found by varguard's first GPU run (cuda-autocast-fp16, batchnorm.eval_backward and
#: mode_switching's eval+backward steps): torch's CUDA batch norm backward in eval mode forms
#: dgamma and dbeta of float16 input through float16 although the parameters are float32:
#: dbeta off by 1.19x what one float16 rounding of the float32 sum allows, on a (4, 2, 8, 8)
#: case. Measured by scripts/probe-cuda-bn over 200 cases (4, 2-8, 8, 8), dy ~ N(0, 16), cuDNN
#: on and off alike: dbeta error up to 2284 float32 units of sum|dy| (0.28 float16 units),
#: where a float32 sum stays within 256; the training-mode backward stays within its bound.
#: The matcher takes every float16 eval-mode backward: dx is not searched there meanwhile.
CUDA_EVAL_BACKWARD_HALF_PARAM_GRADS = CHECKS.add_defect(
    KnownDefect(
        checks=("batchnorm.eval_backward", "batchnorm.mode_switching"),
        applies_to=_torch_bn_cuda_half,
        description="torch's CUDA batch norm backward in eval mode rounds dgamma and dbeta of "
        "float16 input through float16 although the parameters are float32 (dbeta error up "
        "to 0.28 float16 units of sum|dy|)",
        matches=_eval_backward_step,
        example=BNCase(
            shape=(4, 2, 8, 8),
            dtype="float16",
            distribution="constant",
            log10_scale=-2.0,
            seed=3,
        ),
    )
)

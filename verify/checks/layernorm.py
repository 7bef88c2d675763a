"""LayerNorm checks: each compares a target with the float64 reference (reference.layernorm) or a
theory oracle, under a bound from theory.rounding (row_statistics_error and the layer-norm
tolerances built on it: the probabilistic model, false-alarm probability below 1e-13 per
reduction)."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import torch
from hypothesis import strategies as st

from reference import layernorm as ref
from theory import layernorm as theory_ln
from theory import rounding
from verify.adapters import layernorm as adapter
from verify.assertions import EXACT, Times, compare, worst
from verify.checks import rows
from verify.checks.base import Checks, KnownDefect, Measurement
from verify.strategies import layernorm as strategies
from verify.strategies.rows import (
    DTYPE_KAPPA,
    RowCase,
    fit,
    make_grad,
    make_input,
    make_params,
)
from verify.targets.base import Target
from verify.targets.layernorm import FunctionalLayerNorm


def _budget(target: Target, profile) -> int:
    return target.size_budget(profile.max_elements)


def _dimensions(target: Target, profile) -> dict[str, tuple[str, ...]]:
    return strategies.dimensions(target, max_elements=_budget(target, profile))


CHECKS = Checks("layernorm", dimensions=_dimensions)


def _cases(target: Target, profile) -> st.SearchStrategy[RowCase]:
    return strategies.cases(target=target, max_elements=_budget(target, profile))


def _known(target: Target) -> list[RowCase]:
    """Known failure modes, tried before any search: each planted bug dies on one of them."""
    high = DTYPE_KAPPA[target.dtype]
    known = functools.partial(RowCase, kind="layer")
    cases = [
        known(shape=(8, 256), log10_kappa=high, seed=1),  # |mean|/std 1e4: one-pass variance
        known(shape=(4, 64), bias=False, seed=2),  # weight without bias
        known(shape=(6, 33), seed=3),  # several rows in one backward block
        known(shape=(4, 2, 48), distribution="constant", log10_scale=-2.0, seed=4),
        known(shape=(2, 3, 4, 5), normalized_dims=2, seed=5),  # two normalised dimensions
        known(shape=(2, 5120), log10_kappa=1.0, seed=6),  # a real model's hidden size
        known(shape=(1, 16385), seed=7),  # a row one past a 16k tile
        # many rows and dy ~ xhat: dweight = sum dy xhat grows with the rows (coarse sums stall)
        known(shape=(1024, 16), grad_law="output", seed=8),
    ]
    return [fit(c, target) for c in cases]


def _prec(case: RowCase) -> rounding.Precision:
    return rounding.Precision.of(case.dtype)


def _reference(case: RowCase, values: np.ndarray):
    weight, bias = make_params(case)
    fw = ref.forward(values, case.normalized_shape, weight=weight, bias=bias, eps=case.eps)
    stats = {
        "normalized_shape": case.normalized_shape,
        "mean": fw.mean,
        "var": fw.var,
        "eps": case.eps,
        "prec": _prec(case),
        "spread": rounding.bulk_spread(values.reshape(-1, case.n), channel_axis=0),
    }
    return fw, weight, bias, stats


def expected(target: Target, case: RowCase, *, backward: bool) -> rows.Expected:
    """The float64 reference's y (and dx, dweight, dbias) and theory.rounding's bound on each."""
    values = make_input(case)
    fw, weight, bias, stats = _reference(case, values)
    out = {"y": fw.y}
    tols = {
        "y": rounding.layer_norm_forward_tolerance(fw.xhat, fw.y, weight=weight, bias=bias, **stats)
    }
    if backward:
        dy = make_grad(case)
        dx, dweight, dbias = ref.backward(
            dy, values, case.normalized_shape, weight=weight, eps=case.eps
        )
        tdx, tdw, tdb = rounding.layer_norm_backward_tolerance(
            fw.xhat, dy, dx, weight=weight, **stats
        )
        out["dx"], tols["dx"] = dx, tdx
        stored = functools.partial(
            rounding.stored_tolerance, dtype=case.param_dtype, prec=_prec(case)
        )
        if weight is not None:
            out["dweight"], tols["dweight"] = dweight, stored(tdw, dweight)
        if bias is not None:
            out["dbias"], tols["dbias"] = dbias, stored(tdb, dbias)
    return rows.Expected(out, tols, {"dweight": case.param_dtype, "dbias": case.param_dtype})


SPEC = rows.Spec(
    title="layer norm",
    step=adapter.step,
    build=adapter.build,
    make_input=make_input,
    make_grad=make_grad,
    expected=expected,
    forward_bound=rounding.layer_norm_forward_tolerance,
    backward_bound=rounding.layer_norm_backward_tolerance,
)


# --- forward, moments, backward ----------------------------------------------------------------


@CHECKS.register(
    name="layernorm.forward",
    mode="forward",
    summary="y vs the float64 two-pass reference",
    bound=rounding.layer_norm_forward_tolerance,
    cases=_cases,
    known=_known,
)
def measure_forward(target: Target, case: RowCase) -> Measurement:
    return rows.measure_forward(SPEC, target, case)


@CHECKS.register(
    name="layernorm.moments",
    mode="forward",
    summary="per-row output mean 0 and variance var/(var+eps) (no affine)",
    bound=(theory_ln.forward_moments_match, rounding.bn_moments_tolerance),
    cases=_cases,
    known=_known,
)
def measure_moments(target: Target, case: RowCase) -> Measurement:
    """Ba et al.'s normalised rows: mean 0 and biased variance var/(var + eps), measured on the
    target's output (elementwise_affine off) within the moments of its forward bound."""
    case = dataclasses.replace(case, affine=False)
    run = adapter.step(target, case, backward=False)
    values = make_input(case)
    fw, _, _, stats = _reference(case, values)
    tol = rounding.layer_norm_forward_tolerance(fw.xhat, fw.y, **stats)
    n = case.n
    y, xhat, tol = run.y.reshape(-1, n), fw.xhat.reshape(-1, n), tol.reshape(-1, n)
    mean_t, var_t = y.mean(axis=1), y.var(axis=1)
    mean_tol, var_tol = rounding.bn_moments_tolerance(xhat, tol, mean_t, (1,))
    var = fw.var.reshape(-1)
    c = worst(
        compare(mean_t, np.zeros_like(mean_t), mean_tol, what="per-row mean of the normalised "
                "output (oracle: 0)", bound=rounding.bn_moments_tolerance),
        compare(var_t, var / (var + case.eps), var_tol, what="per-row variance of the "
                "normalised output (oracle: var/(var+eps))",
                bound=(theory_ln.forward_moments_match, rounding.bn_moments_tolerance)),
    )  # fmt: skip
    return Measurement(c.ratio, c.message())


@CHECKS.register(
    name="layernorm.backward",
    mode="forward+backward",
    summary="dx, dweight, dbias vs the closed form",
    bound=rounding.layer_norm_backward_tolerance,
    cases=_cases,
    known=_known,
)
def measure_backward(target: Target, case: RowCase) -> Measurement:
    return rows.measure_backward(SPEC, target, case)


# --- configuration: parameter dtypes, normalized_shape ------------------------------------------


def _param_dtype_cases(target: Target, profile) -> st.SearchStrategy[RowCase]:
    return rows.param_dtype_cases(target, _cases(target, profile))


def _param_dtype_known(target: Target) -> list[RowCase]:
    return rows.param_dtype_known(target, fit(RowCase(shape=(4, 64), kind="layer", seed=8), target))


@CHECKS.register(
    name="layernorm.param_dtypes",
    mode="forward+backward",
    summary="parameters in another dtype than the activations (float32 weights with half "
    "activations and the reverse): right values, y in the activations' dtype and parameter "
    "gradients in the parameters', or a clear refusal naming the dtype",
    bound=(rounding.layer_norm_backward_tolerance, rounding.stored_tolerance),
    cases=_param_dtype_cases,
    known=_param_dtype_known,
)
def measure_param_dtypes(target: Target, case: RowCase) -> Measurement:
    return rows.measure_param_dtypes(SPEC, target, case)


@CHECKS.register(
    name="layernorm.normalized_shape",
    mode="forward",
    summary="normalized_shape of one or several trailing dimensions normalises the same "
    "elements: (.., a, b) over (a, b) equals (.., a*b) over (a*b,)",
    bound=Times(2, rounding.layer_norm_forward_tolerance),
    cases=_cases,
    known=_known,
)
def measure_normalized_shape(target: Target, case: RowCase) -> Measurement:
    return rows.measure_normalized_shape(SPEC, target, case)


# --- hygiene -----------------------------------------------------------------------------------


@CHECKS.register(
    name="layernorm.no_mutation",
    summary="forward and backward leave the input and the incoming gradient unchanged",
    bound=EXACT,
    cases=_cases,
    known=_known,
)
def measure_no_mutation(target: Target, case: RowCase) -> Measurement:
    return rows.measure_no_mutation(SPEC, target, case)


@CHECKS.register(
    name="layernorm.poisoned_outputs",
    mode="forward+backward",
    summary="every element of y, dx, dweight, dbias is written (NaN-filled memory)",
    bound=EXACT,
    cases=_cases,
    known=_known,
)
def measure_poisoned(target: Target, case: RowCase) -> Measurement:
    return rows.measure_poisoned(SPEC, target, case)


@CHECKS.register(
    name="layernorm.output_layout",
    mode="forward+backward",
    summary="y and dx are dense whatever the input's layout",
    bound=EXACT,
    cases=_cases,
    known=_known,
)
def measure_output_layout(target: Target, case: RowCase) -> Measurement:
    return rows.measure_output_layout(SPEC, target, case)


@CHECKS.register(
    name="layernorm.bad_input",
    summary="an input whose trailing dimensions are not normalized_shape raises a clear error",
    bound=EXACT,
    cases=lambda target, profile: rows.bad_row_cases(),
    known=lambda target: [rows.BadRowInput(kind) for kind in rows.BAD_KINDS],
    max_examples=lambda profile: 6,
)
def measure_bad_input(target: Target, case: rows.BadRowInput) -> Measurement:
    return rows.measure_bad_row_input(SPEC, target, case, kind="layer")


__all__ = ["CHECKS", "SPEC", "expected"]


# --- known defects of real implementations ---------------------------------------------------


def _torch_layer_norm_cpu(dtypes: tuple[str, ...]):
    """Whether a target is torch's own CPU layer norm (the module or the functional) on
    activations of one of ``dtypes``."""

    def applies(target: Target) -> bool:
        runs = rows.runs_forward_of(target, (torch.nn.LayerNorm, FunctionalLayerNorm))
        return runs and target.dtype in dtypes

    return applies


def param_grads_exceed_bound(case: RowCase) -> bool:
    """Whether torch's half-precision parameter gradients, replayed
    (rows.torch_half_layer_norm_param_grads), are past the dweight or dbias bound on this case:
    exactly the cases the defect fails, no others."""
    if case.dtype not in ("bfloat16", "float16") or not case.affine:
        return False
    if case.param_dtype not in ("float32", case.dtype):  # torch refuses the other pairings
        return False
    exp = expected(None, case, backward=True)  # the target is not used by the reference
    return rows.half_param_grads_exceed(
        exp,
        make_input(case).reshape(-1, case.n),
        make_grad(case).reshape(-1, case.n),
        eps=case.eps,
        dtype=case.dtype,
        param_dtype=case.param_dtype,
    )


#: Found by varguard on torch 2.13.0 (CPU): the layer norm backward sums dweight and dbias over
#: the rows in the activations' dtype for bfloat16 and float16 input. Measured: bit for bit the
#: sequential sum of each row's float32 terms (dy xhat, xhat from the float32 row mean and
#: rstd; dy) with the running total rounded to bfloat16/float16 after each row
#: (rows.torch_half_layer_norm_param_grads), for float32 and half parameters alike, every input
#: layout. dbias: errors up to 744 on 1000 repeated rows of bfloat16 (4.5 on 64). dweight shows
#: once its sum grows (dy ~ xhat, the gradient law "output"): 6666 rows of 3, relative error
#: 0.70 in bfloat16 (the running total stalls at 1024) and 0.03 in float16; zero-mean dy keeps
#: the sums small and hid it. RMSNorm's dweight is summed in float32 (measured: relative error
#: 8e-8 on the same rows). The matcher replays the sums and excludes exactly the cases where one
#: exceeds its bound.
HALF_PARAM_GRAD_ACCUMULATION = {
    dtype: CHECKS.add_defect(
        KnownDefect(
            checks=("layernorm.backward", "layernorm.param_dtypes"),
            applies_to=_torch_layer_norm_cpu((dtype,)),
            description=f"torch CPU layer norm backward accumulates dweight and dbias over the "
            f"rows in {dtype} (a sequential sum rounded to {dtype} after each row), past the "
            f"bound of a float32 accumulation",
            matches=param_grads_exceed_bound,
            example=RowCase(shape=(64, 32), kind="layer", dtype=dtype, seed=3),
        )
    )
    for dtype in ("bfloat16", "float16")
}


def half_row_too_flat(case: RowCase) -> bool:
    """float16 activations with a row whose var + eps is below rows.HALF_DX_LIMIT, or whose
    max |dy| / sqrt(var + eps) passes rows.HALF_DY_RSTD_LIMIT."""
    if case.dtype != "float16":  # before the input is made: most cases are not float16
        return False
    x = make_input(case).reshape(-1, case.n)
    return rows.half_too_flat(x, eps=case.eps, dtype=case.dtype) or rows.half_dy_overflows(
        x, make_grad(case).reshape(-1, case.n), eps=case.eps, dtype=case.dtype
    )


#: Found by varguard on torch 2.13.0 (CPU): on float16 input the layer norm backward returns
#: inf/NaN in dx for rows of (near) zero variance when var + eps is small, where the exact dx
#: rounds to a finite float16 value (the forward y stays finite). Measured on constant rows,
#: eps from 1e-12 to 1e-6 in steps of 10^0.1, row values 0, 3 and 1000, three incoming
#: gradients, weight 1 or none: wrong non-finite dx up to eps = 2e-10 for n = 1 to 8 without a
#: weight (never with one), 1.6e-9 at n = 16, 2.0e-9 at 64, 2.5e-9 at 256 and 1024, 4.0e-9 at
#: 4096; rows of variance 9.3e-10 fail at eps 1e-12, of 3.7e-9 do not. bfloat16 never (its range
#: holds 1/sqrt(var + eps)). The matcher takes var + eps < 1e-8, 2.5x the largest measured.
#: The same non-finite dx at larger var + eps where the incoming gradient is large: found by the
#: quick sweep, seed 15 (rows.HALF_DY_RSTD_LIMIT); the matcher takes either.
HALF_FLAT_ROW_DX = CHECKS.add_defect(
    KnownDefect(
        checks=("layernorm.backward", "layernorm.param_dtypes", "layernorm.poisoned_outputs"),
        applies_to=_torch_layer_norm_cpu(("float16",)),
        description="torch CPU layer norm backward on float16 input returns inf/NaN in dx for "
        "rows with var + eps below ~4e-9, or max |dy| / sqrt(var + eps) past ~4e4 (rstd, its "
        "powers or dy times them overflow float16)",
        matches=half_row_too_flat,
        example=RowCase(
            shape=(2, 64),
            kind="layer",
            dtype="float16",
            distribution="constant",
            eps=2e-10,
            affine=False,
        ),  # fmt: skip
    )
)

"""RMSNorm checks: each compares a target with the float64 reference (reference.rmsnorm) or a
theory oracle, under a bound from theory.rounding (rms_statistics_error and the RMSNorm
tolerances: a sum of squares has no cancellation, so no kappa; false-alarm probability below
1e-13 per reduction)."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
from hypothesis import strategies as st

from reference import rmsnorm as ref
from theory import rmsnorm as theory_rms
from theory import rounding
from verify.adapters import rmsnorm as adapter
from verify.assertions import EXACT, Times, compare
from verify.checks import rows
from verify.checks.base import Checks, Measurement
from verify.strategies import rmsnorm as strategies
from verify.strategies.rows import DTYPE_KAPPA, RowCase, fit, make_grad, make_input, make_params
from verify.targets.base import Target


def _budget(target: Target, profile) -> int:
    return target.size_budget(profile.max_elements)


def _dimensions(target: Target, profile) -> dict[str, tuple[str, ...]]:
    return strategies.dimensions(target, max_elements=_budget(target, profile))


CHECKS = Checks("rmsnorm", dimensions=_dimensions)


def _cases(target: Target, profile) -> st.SearchStrategy[RowCase]:
    return strategies.cases(target=target, max_elements=_budget(target, profile))


#: log10 of the row scale in pytorch/pytorch#189581's report (std 0.058): where eps=None's value
#: decides the output (finfo(bfloat16).eps = 2^-7 would change it by 1.7x, finfo(float32).eps not
#: at all).
SMALL_ROWS = -1.24


def _known(target: Target) -> list[RowCase]:
    """Known failure modes, tried before any search: each planted bug dies on one of them."""
    known = functools.partial(RowCase, kind="rms")
    cases = [
        known(shape=(4, 256), eps=None, log10_scale=SMALL_ROWS, seed=1),  # eps=None's value
        known(shape=(2, 8192), seed=2),  # long rows: a sum of squares past bfloat16's counting
        known(shape=(3, 769), seed=3),  # odd hidden size, several rows
        known(shape=(8, 256), log10_kappa=DTYPE_KAPPA[target.dtype], seed=4),
        known(shape=(4, 2, 48), distribution="constant", log10_scale=-2.0, seed=5),
        known(shape=(2, 3, 4, 5), normalized_dims=2, seed=6),
        known(shape=(2, 5120), distribution="outliers", seed=7),  # a real model's hidden size
        known(shape=(1, 16385), seed=8),
        # many rows and dy ~ xhat: dweight = sum dy xhat grows with the rows (coarse sums stall)
        known(shape=(1024, 16), grad_law="output", seed=9),
    ]
    return [fit(c, target) for c in cases]


def _prec(case: RowCase) -> rounding.Precision:
    return rounding.Precision.of(case.dtype)


def _reference(case: RowCase, values: np.ndarray):
    weight, _ = make_params(case)
    fw = ref.forward(values, case.normalized_shape, weight=weight, eps=case.eps, dtype=case.dtype)
    stats = {
        "normalized_shape": case.normalized_shape,
        "ms": fw.ms,
        "eps": ref.resolve_eps(case.eps, case.dtype),
        "prec": _prec(case),
    }
    return fw, weight, stats


def expected(target: Target, case: RowCase, *, backward: bool) -> rows.Expected:
    """The float64 reference's y (and dx, dweight) and theory.rounding's bound on each; eps=None
    is torch's default for the case's dtype (theory.rmsnorm.default_eps)."""
    values = make_input(case)
    fw, weight, stats = _reference(case, values)
    out = {"y": fw.y}
    tols = {"y": rounding.rms_norm_forward_tolerance(fw.xhat, fw.y, weight=weight, **stats)}
    if backward:
        dy = make_grad(case)
        dx, dweight = ref.backward(
            dy, values, case.normalized_shape, weight=weight, eps=case.eps, dtype=case.dtype
        )
        tdx, tdw = rounding.rms_norm_backward_tolerance(fw.xhat, dy, dx, weight=weight, **stats)
        out["dx"], tols["dx"] = dx, tdx
        if weight is not None:
            out["dweight"] = dweight
            tols["dweight"] = rounding.stored_tolerance(
                tdw, dweight, dtype=case.param_dtype, prec=_prec(case)
            )
    return rows.Expected(out, tols, {"dweight": case.param_dtype})


SPEC = rows.Spec(
    title="RMSNorm",
    step=adapter.step,
    build=adapter.build,
    make_input=make_input,
    make_grad=make_grad,
    expected=expected,
    forward_bound=rounding.rms_norm_forward_tolerance,
    backward_bound=rounding.rms_norm_backward_tolerance,
)


# --- forward, moments, backward ----------------------------------------------------------------


@CHECKS.register(
    name="rmsnorm.forward",
    mode="forward",
    summary="y vs the float64 reference",
    bound=rounding.rms_norm_forward_tolerance,
    cases=_cases,
    known=_known,
)
def measure_forward(target: Target, case: RowCase) -> Measurement:
    return rows.measure_forward(SPEC, target, case)


@CHECKS.register(
    name="rmsnorm.moments",
    mode="forward",
    summary="per-row output mean square ms/(ms+eps) (no weight)",
    bound=(theory_rms.forward_moments_match, rounding.rms_moments_tolerance),
    cases=_cases,
    known=_known,
)
def measure_moments(target: Target, case: RowCase) -> Measurement:
    """Zhang & Sennrich's normalised rows have mean square ms/(ms + eps), measured on the
    target's output (elementwise_affine off) within the moment of its forward bound."""
    case = dataclasses.replace(case, affine=False)
    run = adapter.step(target, case, backward=False)
    values = make_input(case)
    fw, _, stats = _reference(case, values)
    tol = rounding.rms_norm_forward_tolerance(fw.xhat, fw.y, **stats).reshape(-1, case.n)
    y, xhat = run.y.reshape(-1, case.n), fw.xhat.reshape(-1, case.n)
    ms, eps = fw.ms.reshape(-1), stats["eps"]
    c = compare(
        (y * y).mean(axis=1),
        ms / (ms + eps),
        rounding.rms_moments_tolerance(xhat, tol, (1,)),
        what="per-row mean square of the normalised output (oracle: ms/(ms+eps))",
        bound=(theory_rms.forward_moments_match, rounding.rms_moments_tolerance),
    )
    return Measurement(c.ratio, c.message())


@CHECKS.register(
    name="rmsnorm.backward",
    mode="forward+backward",
    summary="dx, dweight vs the closed form",
    bound=rounding.rms_norm_backward_tolerance,
    cases=_cases,
    known=_known,
)
def measure_backward(target: Target, case: RowCase) -> Measurement:
    return rows.measure_backward(SPEC, target, case)


# --- configuration: eps=None, parameter dtypes, normalized_shape -----------------------------


def _eps_none_cases(target: Target, profile) -> st.SearchStrategy[RowCase]:
    """Rows small enough that eps matters (scale 1e-3 to 1), eps=None."""
    return st.builds(
        lambda case, scale: dataclasses.replace(case, eps=None, log10_scale=scale),
        _cases(target, profile),
        st.floats(-3.0, 0.0),
    )


def _eps_none_known(target: Target) -> list[RowCase]:
    return [c for c in _known(target) if c.eps is None]


@CHECKS.register(
    name="rmsnorm.eps_none",
    mode="forward",
    summary="eps=None is torch's documented default, finfo(opmath type).eps (2^-23 for "
    "float32, bfloat16 and float16 input): y on rows small enough for eps to matter",
    bound=(theory_rms.default_eps, rounding.rms_norm_forward_tolerance),
    cases=_eps_none_cases,
    known=_eps_none_known,
)
def measure_eps_none(target: Target, case: RowCase) -> Measurement:
    return rows.measure_forward(SPEC, target, case)


def _param_dtype_cases(target: Target, profile) -> st.SearchStrategy[RowCase]:
    return rows.param_dtype_cases(target, _cases(target, profile))


def _param_dtype_known(target: Target) -> list[RowCase]:
    return rows.param_dtype_known(target, fit(RowCase(shape=(4, 64), kind="rms", seed=9), target))


@CHECKS.register(
    name="rmsnorm.param_dtypes",
    mode="forward+backward",
    summary="a weight in another dtype than the activations (float32 with half activations, "
    "half with float32 ones): right values, y in the activations' dtype and dweight in the "
    "weight's, or a clear refusal naming the dtype",
    bound=(rounding.rms_norm_backward_tolerance, rounding.stored_tolerance),
    cases=_param_dtype_cases,
    known=_param_dtype_known,
)
def measure_param_dtypes(target: Target, case: RowCase) -> Measurement:
    return rows.measure_param_dtypes(SPEC, target, case)


@CHECKS.register(
    name="rmsnorm.normalized_shape",
    mode="forward",
    summary="normalized_shape of one or several trailing dimensions normalises the same "
    "elements: (.., a, b) over (a, b) equals (.., a*b) over (a*b,)",
    bound=Times(2, rounding.rms_norm_forward_tolerance),
    cases=_cases,
    known=_known,
)
def measure_normalized_shape(target: Target, case: RowCase) -> Measurement:
    return rows.measure_normalized_shape(SPEC, target, case)


# --- hygiene -----------------------------------------------------------------------------------


@CHECKS.register(
    name="rmsnorm.no_mutation",
    summary="forward and backward leave the input and the incoming gradient unchanged",
    bound=EXACT,
    cases=_cases,
    known=_known,
)
def measure_no_mutation(target: Target, case: RowCase) -> Measurement:
    return rows.measure_no_mutation(SPEC, target, case)


@CHECKS.register(
    name="rmsnorm.poisoned_outputs",
    mode="forward+backward",
    summary="every element of y, dx, dweight is written (NaN-filled memory)",
    bound=EXACT,
    cases=_cases,
    known=_known,
)
def measure_poisoned(target: Target, case: RowCase) -> Measurement:
    return rows.measure_poisoned(SPEC, target, case)


@CHECKS.register(
    name="rmsnorm.output_layout",
    mode="forward+backward",
    summary="y and dx are dense whatever the input's layout",
    bound=EXACT,
    cases=_cases,
    known=_known,
)
def measure_output_layout(target: Target, case: RowCase) -> Measurement:
    return rows.measure_output_layout(SPEC, target, case)


@CHECKS.register(
    name="rmsnorm.bad_input",
    summary="an input whose trailing dimensions are not normalized_shape raises a clear error",
    bound=EXACT,
    cases=lambda target, profile: rows.bad_row_cases(),
    known=lambda target: [rows.BadRowInput(kind) for kind in rows.BAD_KINDS],
    max_examples=lambda profile: 6,
)
def measure_bad_input(target: Target, case: rows.BadRowInput) -> Measurement:
    return rows.measure_bad_row_input(SPEC, target, case, kind="rms")


__all__ = ["CHECKS", "SPEC", "expected"]

"""Pre-norm residual tail checks: ``(y, residual_out) = tail(x, residual)`` with residual_out =
x + residual stored in the activations' dtype and y = norm(residual_out), against the float64
reference (reference.prenorm), under bounds from theory.rounding (residual_add_tolerance for the
stored stream, the norm's own bounds at the rounded stream, residual_add_backward_tolerance for
the gradient both inputs receive)."""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
import torch
from hypothesis import strategies as st

from reference import layernorm as ref_ln
from reference import prenorm as ref
from reference import rmsnorm as ref_rms
from theory import prenorm as theory_pre
from theory import rounding
from verify.adapters import prenorm as adapter
from verify.adapters.base import as_run
from verify.assertions import EXACT, argmax_index, input_changed, worst
from verify.checks import rows
from verify.checks.base import Checks, KnownDefect, Measurement
from verify.strategies import prenorm as strategies
from verify.strategies.prenorm import (
    AddNormCase,
    make_dres,
    make_grad,
    make_input,
    make_residual,
    norm_of,
)
from verify.strategies.rows import DTYPE_KAPPA, fit, make_params, valid_layouts
from verify.targets.base import Target
from verify.targets.prenorm import AddLayerNorm


def _budget(target: Target, profile) -> int:
    return target.size_budget(profile.max_elements)


def _dimensions(target: Target, profile) -> dict[str, tuple[str, ...]]:
    return strategies.dimensions(target, max_elements=_budget(target, profile))


CHECKS = Checks("prenorm", dimensions=_dimensions)


def _cases(target: Target, profile) -> st.SearchStrategy[AddNormCase]:
    return strategies.add_norm_cases(target=target, max_elements=_budget(target, profile))


def fit_tail(case: AddNormCase, target: Target) -> AddNormCase:
    """A fixed case as ``target`` takes it (verify.strategies.rows.fit), with its norm, and a
    contiguous stream for a compiled or in-place target."""
    case = fit(dataclasses.replace(case, kind=norm_of(target)), target)
    if target.compile or target.options.get("inplace"):
        case = dataclasses.replace(case, residual_layout="contiguous")
    if case.residual_layout not in valid_layouts(case.shape, case.normalized_dims):
        case = dataclasses.replace(case, residual_layout="contiguous")
    return case


def _known(target: Target) -> list[AddNormCase]:
    """Known failure modes, tried before any search: each planted bug dies on one of them."""
    known = functools.partial(AddNormCase, kind=norm_of(target))
    cases = [
        known(shape=(4, 256), seed=1),  # stream and branch of one scale
        known(shape=(4, 64), log10_residual_ratio=2.0, dres=True, seed=2),  # a grown stream
        known(shape=(8, 256), log10_kappa=DTYPE_KAPPA[target.dtype], seed=3),
        known(shape=(2, 3, 96), residual_layout="strided", dres=True, seed=4),
        known(shape=(2, 5120), distribution="outliers", seed=5),  # a real model's hidden size
        known(shape=(2, 2, 4, 5), normalized_dims=2, x_layout="offset", seed=6),
    ]
    return [fit_tail(c, target) for c in cases]


def _prec(case: AddNormCase) -> rounding.Precision:
    return rounding.Precision.of(case.dtype)


def _norm_expected(case: AddNormCase, stream: np.ndarray, weight, bias, dy=None):
    """y (and the norm's dx, dweight, dbias with their bounds) of the norm at the stored stream."""
    prec, ns = _prec(case), case.normalized_shape
    if case.kind == "rms":
        fw = ref_rms.forward(stream, ns, weight=weight, eps=case.eps, dtype=case.dtype)
        stats = {
            "normalized_shape": ns,
            "ms": fw.ms,
            "eps": ref_rms.resolve_eps(case.eps, case.dtype),
            "prec": prec,
        }
        tol_y = rounding.rms_norm_forward_tolerance(fw.xhat, fw.y, weight=weight, **stats)
        if dy is None:
            return fw.y, tol_y, None
        dnorm, dweight = ref_rms.backward(
            dy, stream, ns, weight=weight, eps=case.eps, dtype=case.dtype
        )
        tdx, tdw = rounding.rms_norm_backward_tolerance(fw.xhat, dy, dnorm, weight=weight, **stats)
        return fw.y, tol_y, {"dnorm": (dnorm, tdx), "dweight": (dweight, tdw)}
    fw = ref_ln.forward(stream, ns, weight=weight, bias=bias, eps=case.eps)
    stats = {
        "normalized_shape": ns,
        "mean": fw.mean,
        "var": fw.var,
        "eps": case.eps,
        "prec": prec,
        "spread": rounding.bulk_spread(stream.reshape(-1, case.n), channel_axis=0),
    }
    tol_y = rounding.layer_norm_forward_tolerance(fw.xhat, fw.y, weight=weight, bias=bias, **stats)
    if dy is None:
        return fw.y, tol_y, None
    dnorm, dweight, dbias = ref_ln.backward(dy, stream, ns, weight=weight, eps=case.eps)
    tdx, tdw, tdb = rounding.layer_norm_backward_tolerance(
        fw.xhat, dy, dnorm, weight=weight, **stats
    )
    return fw.y, tol_y, {"dnorm": (dnorm, tdx), "dweight": (dweight, tdw), "dbias": (dbias, tdb)}


def expected(target: Target, case: AddNormCase, *, backward: bool) -> rows.Expected:
    """y at the stored (rounded) stream and its bound; residual_out against the exact sum under
    rounding.residual_add_tolerance; dx = dresidual = dresidual_out + the norm's dx, under
    rounding.residual_add_backward_tolerance; dweight (and dbias) as the norm's."""
    x, r = make_input(case), make_residual(case)
    weight, bias = make_params(case)
    prec = _prec(case)
    total = x + r  # exact: two values of a storage dtype, far below float64's 53 bits
    stream = ref.round_to_storage(total, case.dtype)
    dy = make_grad(case) if backward else None
    y, tol_y, grads = _norm_expected(case, stream, weight, bias, dy)
    out = {"y": y, "residual_out": total}
    tols = {"y": tol_y, "residual_out": rounding.residual_add_tolerance(total, prec)}
    if grads is not None:
        dres = make_dres(case)
        dnorm, tdnorm = grads["dnorm"]
        d = dnorm if dres is None else dnorm + dres
        tol_d = rounding.residual_add_backward_tolerance(dres, dnorm, tdnorm, prec)
        out.update(dx=d, dresidual=d)
        tols.update(dx=tol_d, dresidual=tol_d)
        stored = functools.partial(rounding.stored_tolerance, dtype=case.param_dtype, prec=prec)
        for name, param in (("dweight", weight), ("dbias", bias)):
            if param is not None and name in grads:
                value, tol = grads[name]
                out[name], tols[name] = value, stored(tol, value)
    return rows.Expected(out, tols, {"dweight": case.param_dtype, "dbias": case.param_dtype})


def stream_mutation(case: AddNormCase, target: Target, run) -> str | None:
    """The stream handed in is left alone, unless the target writes residual_out into it
    (``residual += x``, options["inplace"]); then it must hold exactly residual_out."""
    given = run.extra.get("residual_after")
    if target.options.get("inplace"):
        written = run.extra.get("residual_out")
        same = (given == written) | (np.isnan(given) & np.isnan(written))
        if not same.all():
            return (
                f"an in-place tail left {int((~same).sum())} of {given.size} elements of residual "
                f"different from the residual_out it returned, first at {argmax_index(~same)}"
            )
        return None
    return input_changed(make_residual(case), given, "the call, in the stream residual,")


SPEC = rows.Spec(
    title="pre-norm tail",
    step=adapter.step,
    build=adapter.build,
    make_input=make_input,
    make_grad=make_grad,
    expected=expected,
    forward_bound=(rounding.residual_add_tolerance, rounding.rms_norm_forward_tolerance),
    backward_bound=rounding.residual_add_backward_tolerance,
    forward_outputs=("residual_out",),
    mutation=stream_mutation,
)


# --- forward: the norm, the stored stream ------------------------------------------------------


@CHECKS.register(
    name="prenorm.forward",
    mode="forward",
    summary="y vs the float64 norm of the stored (rounded) stream x + residual",
    bound=(rounding.rms_norm_forward_tolerance, rounding.layer_norm_forward_tolerance),
    cases=_cases,
    known=_known,
)
def measure_forward(target: Target, case: AddNormCase) -> Measurement:
    run = adapter.step(target, case, backward=False)
    exp = expected(target, case, backward=False)
    c = worst(*rows.comparisons(SPEC, run, exp, ("y",), what="pre-norm tail"))
    return Measurement(c.ratio, c.message())


def stream_roundings(case: AddNormCase) -> tuple[np.ndarray, np.ndarray]:
    """The two values a correct kernel may store for x + residual: the sum rounded once to the
    activations' dtype, and rounded first to float32 (the accumulation type) and then to it
    (theory.rounding.residual_add_tolerance: the second rounding is exact unless the two
    exponents are far apart, and then the two may differ in a tie)."""
    total = make_input(case) + make_residual(case)
    once = ref.round_to_storage(total, case.dtype)
    twice = ref.round_to_storage(ref.round_to_storage(total, "float32"), case.dtype)
    return once, twice


@CHECKS.register(
    name="prenorm.residual_out",
    mode="forward",
    summary="the written-back stream is exactly x + residual rounded to the activations' dtype "
    "(once, or through float32)",
    bound=EXACT,
    cases=_cases,
    known=_known,
)
def measure_residual_out(target: Target, case: AddNormCase) -> Measurement:
    """residual_out bit for bit the rounded sum: the next block adds to it, so a truncating
    store, a stream kept in another precision, or a sum of the wrong pair is wrong exactly
    where it differs, however small the difference."""
    run = adapter.step(target, case, backward=False)
    got = run.extra["residual_out"]
    once, twice = stream_roundings(case)
    right = (got == once) | (got == twice) | (np.isnan(got) & np.isnan(once))
    if not right.all():
        i = argmax_index(~right)
        return Measurement(
            math.inf,
            f"residual_out differs from x + residual rounded to {case.dtype} in "
            f"{int((~right).sum())} of {right.size} elements, first at {i}: {float(got[i])!r}, "
            f"expected {float(once[i])!r}",
        )
    return Measurement(0.0, f"residual_out is x + residual rounded to {case.dtype}, bit for bit")


@CHECKS.register(
    name="prenorm.normalises_stored_stream",
    mode="forward",
    summary="y is the norm of the stream the tail stores: tail(x, residual).y equals "
    "tail(0, residual_out).y bit for bit",
    bound=EXACT,
    cases=_cases,
    known=_known,
)
def measure_normalises_stored_stream(target: Target, case: AddNormCase) -> Measurement:
    """The next block reads the stored (rounded) stream, so the norm that goes with it is the
    norm of that stream (theory.prenorm: reference.prenorm normalises residual_out). Adding 0
    to residual_out is exact, so the same kernel on (0, residual_out) normalises exactly the
    values it should have normalised the first time: the outputs agree bit for bit, unless the
    first call normalised something else (the unrounded float32 sum)."""
    if case.residual_layout == "expanded":  # residual_out need not repeat along that axis
        case = dataclasses.replace(case, residual_layout="contiguous")
    first = adapter.step(target, case, backward=False)
    stream = first.extra["residual_out"]
    again = adapter.step(
        target,
        case,
        backward=False,
        x_values=np.zeros(case.shape),
        residual_values=stream,
    )
    same = (first.y == again.y) | (np.isnan(first.y) & np.isnan(again.y))
    if not same.all():
        i = argmax_index(~same)
        return Measurement(
            math.inf,
            f"y of (x, residual) differs from y of (0, residual_out) in {int((~same).sum())} of "
            f"{same.size} elements, first at {i}: {float(first.y[i])!r} vs "
            f"{float(again.y[i])!r}; the tail normalises something other than the stream it stores",
        )
    return Measurement(0.0, "y is the norm of the stored stream, bit for bit")


# --- backward ----------------------------------------------------------------------------------


@CHECKS.register(
    name="prenorm.backward",
    mode="forward+backward",
    summary="dx = dresidual = dresidual_out + the norm's dx at the stored stream; dweight, dbias",
    bound=(theory_pre.fused_backward_matches, rounding.residual_add_backward_tolerance),
    cases=_cases,
    known=_known,
)
def measure_backward(target: Target, case: AddNormCase) -> Measurement:
    return rows.measure_backward(SPEC, target, case)


def _param_dtype_cases(target: Target, profile) -> st.SearchStrategy[AddNormCase]:
    return rows.param_dtype_cases(target, _cases(target, profile))


def _param_dtype_known(target: Target) -> list[AddNormCase]:
    base = fit_tail(AddNormCase(shape=(4, 64), kind=norm_of(target), seed=9), target)
    return rows.param_dtype_known(target, base)


@CHECKS.register(
    name="prenorm.param_dtypes",
    mode="forward+backward",
    summary="parameters in another dtype than the activations: right values in the right "
    "dtypes, or a clear refusal naming the dtype",
    bound=(rounding.residual_add_backward_tolerance, rounding.stored_tolerance),
    cases=_param_dtype_cases,
    known=_param_dtype_known,
)
def measure_param_dtypes(target: Target, case: AddNormCase) -> Measurement:
    return rows.measure_param_dtypes(SPEC, target, case)


# --- hygiene -----------------------------------------------------------------------------------


@CHECKS.register(
    name="prenorm.no_mutation",
    summary="the branch output, the incoming gradient and (unless the tail writes it in place) "
    "the stream are unchanged",
    bound=EXACT,
    cases=_cases,
    known=_known,
)
def measure_no_mutation(target: Target, case: AddNormCase) -> Measurement:
    return rows.measure_no_mutation(SPEC, target, case)


@CHECKS.register(
    name="prenorm.poisoned_outputs",
    mode="forward+backward",
    summary="every element of y, residual_out and the gradients is written (NaN-filled memory)",
    bound=EXACT,
    cases=_cases,
    known=_known,
)
def measure_poisoned(target: Target, case: AddNormCase) -> Measurement:
    return rows.measure_poisoned(SPEC, target, case)


@dataclasses.dataclass(frozen=True)
class BadTailInput:
    kind: str  # "stream_shape" | "wrong_last"
    n: int = 8
    seed: int = 0


BAD_KINDS = ("stream_shape", "wrong_last")


@CHECKS.register(
    name="prenorm.bad_input",
    summary="a stream of another shape than the branch output, or rows that are not "
    "normalized_shape, raise a clear error",
    bound=EXACT,
    cases=lambda target, profile: st.builds(
        BadTailInput,
        kind=st.sampled_from(BAD_KINDS),
        n=st.integers(1, 64),
        seed=st.integers(0, 1000),
    ),
    known=lambda target: [BadTailInput(kind) for kind in BAD_KINDS],
    max_examples=lambda profile: 6,
)
def measure_bad_input(target: Target, case: BadTailInput) -> Measurement:
    n = case.n
    good = fit_tail(AddNormCase(shape=(2, n), kind=norm_of(target), seed=case.seed), target)
    if target.compile:  # fit gives it its one compiled shape; the module must be built for n
        good = dataclasses.replace(good, shape=(2, n), normalized_dims=1)
    module = adapter.build(target, good)
    adapter.step(target, good, module, backward=False)  # a valid call first
    shapes = {"stream_shape": ((3, n), (3, n + 1)), "wrong_last": ((3, n + 1), (3, n + 1))}
    x_shape, r_shape = shapes[case.kind]
    rng = np.random.default_rng(case.seed)
    x, r = (
        torch.from_numpy(rng.normal(size=s)).to(device=target.device, dtype=target.torch_dtype)
        for s in (x_shape, r_shape)
    )
    try:
        with torch.no_grad(), target.autocast_context():
            as_run(target, module)(x, r)  # directly: not the adapter's own shape checks
    except (ValueError, RuntimeError, TypeError, AssertionError, IndexError) as exc:
        if str(exc).strip():
            return Measurement(0.0, f"{case.kind}: raised {type(exc).__name__}: {exc}")
        return Measurement(math.inf, f"{case.kind}: raised {type(exc).__name__} with no message")
    return Measurement(
        math.inf,
        f"{case.kind}: branch output of shape {x_shape} and stream of shape {r_shape} to a tail "
        f"over normalized_shape=({n},) were accepted silently",
    )


# --- known defects of real implementations ---------------------------------------------------


def param_grads_exceed_bound(case: AddNormCase) -> bool:
    """verify.checks.layernorm.HALF_PARAM_GRAD_ACCUMULATION, as the tail's layer norm shows it:
    the replayed sums over the stored stream (x + residual rounded), the layer norm's input."""
    if case.kind != "layer" or case.dtype not in ("bfloat16", "float16") or not case.affine:
        return False
    if case.param_dtype not in ("float32", case.dtype):
        return False
    exp = expected(None, case, backward=True)
    stream = ref.round_to_storage(make_input(case) + make_residual(case), case.dtype)
    return rows.half_param_grads_exceed(
        exp,
        stream.reshape(-1, case.n),
        make_grad(case).reshape(-1, case.n),
        eps=case.eps,
        dtype=case.dtype,
        param_dtype=case.param_dtype,
    )


#: The layer norm defect verify.checks.layernorm.HALF_PARAM_GRAD_ACCUMULATION records (torch
#: 2.13.0 CPU: dweight and dbias summed over the rows in bfloat16/float16), seen through torch's
#: add + layer_norm. The same measurement and the same replayed sums decide the cases.
HALF_PARAM_GRAD_ACCUMULATION = {
    dtype: CHECKS.add_defect(
        KnownDefect(
            checks=("prenorm.backward", "prenorm.param_dtypes"),
            applies_to=functools.partial(
                lambda target, dtype: (
                    rows.runs_forward_of(target, (AddLayerNorm,)) and target.dtype == dtype
                ),
                dtype=dtype,
            ),
            description=f"torch CPU layer norm backward accumulates dweight and dbias over the "
            f"rows in {dtype} (after x + residual)",
            matches=param_grads_exceed_bound,
            example=AddNormCase(shape=(64, 32), kind="layer", dtype=dtype, seed=3),
        )
    )
    for dtype in ("bfloat16", "float16")
}


__all__ = ["BAD_KINDS", "CHECKS", "SPEC", "BadTailInput", "expected", "fit_tail"]

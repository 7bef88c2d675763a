"""GroupNorm checks: each compares a target with the float64 reference (reference.groupnorm: layer
norm over each group's rows) or a theory oracle, under a bound from theory.rounding
(group_norm_forward_tolerance and group_norm_backward_tolerance: layer norm's row bounds on the
(N, G) groups; false-alarm probability below 1e-13 per reduction)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from hypothesis import strategies as st

from reference import groupnorm as ref
from theory import groupnorm as theory_gn
from theory import rounding
from verify.adapters import groupnorm as adapter
from verify.adapters.base import as_run
from verify.assertions import EXACT, Times, compare, worst
from verify.checks import rows
from verify.checks.base import Checks, KnownDefect, Measurement
from verify.strategies import groupnorm as strategies
from verify.strategies.groupnorm import (
    COMPILED_CASES,
    GNCase,
    make_grad,
    make_input,
    make_params,
    valid_layouts,
)
from verify.strategies.rows import DTYPE_KAPPA, param_dtypes
from verify.targets.base import Target


def _budget(target: Target, profile) -> int:
    return target.size_budget(profile.max_elements)


def _dimensions(target: Target, profile) -> dict[str, tuple[str, ...]]:
    return strategies.dimensions(target, max_elements=_budget(target, profile))


CHECKS = Checks("groupnorm", dimensions=_dimensions)


def _cases(target: Target, profile) -> st.SearchStrategy[GNCase]:
    return strategies.gn_cases(target=target, max_elements=_budget(target, profile))


def fit(case: GNCase, target: Target) -> GNCase:
    """A fixed (known) case as ``target`` can take it: its dtype and a parameter dtype it
    draws, a rank it takes (ones appended, or the spatial sizes folded into one), an input
    layout it takes, a compiled shape for a compiled target, a law its dtype holds."""
    changes: dict = {"dtype": target.dtype}
    if case.param_dtype not in param_dtypes(target):
        changes["param_dtype"] = param_dtypes(target)[0]
    shape, groups, layout = case.shape, case.num_groups, case.x_layout
    if target.compile:
        (shape, groups), layout = COMPILED_CASES[0], "contiguous"
        changes.update(dy_layout="contiguous", eps=1e-5)
    rank = min(target.ranks, key=lambda r: abs(r - len(shape)))
    if rank > len(shape):
        shape = shape + (1,) * (rank - len(shape))
    elif rank < len(shape):
        shape = (*shape[: rank - 1], math.prod(shape[rank - 1 :]))
    if target.layouts and layout not in target.layouts:
        layout = target.layouts[0]
    if layout not in valid_layouts(shape):
        layout = "contiguous"
    changes.update(shape=shape, num_groups=groups, x_layout=layout)
    if case.dy_layout not in valid_layouts(shape):
        changes["dy_layout"] = "contiguous"
    if case.distribution == "near_float16_max" and target.dtype not in ("float16", "float32"):
        changes["distribution"] = "normal"
    changes["log10_kappa"] = min(case.log10_kappa, DTYPE_KAPPA[target.dtype])
    return dataclasses.replace(case, **changes)


def _known(target: Target) -> list[GNCase]:
    """Known failure modes, tried before any search: each planted bug dies on one of them."""
    cases = [
        GNCase(shape=(2, 8, 4, 4), num_groups=4, x_layout="channels_last", seed=1),
        GNCase(shape=(2, 48, 3, 3), num_groups=16, seed=2),  # 3 channels a group: not 2^k
        GNCase(shape=(2, 4, 5, 5), num_groups=2, seed=3),  # H*W = 25: not a multiple of 32
        GNCase(shape=(4, 8, 8, 8), num_groups=2, log10_kappa=DTYPE_KAPPA[target.dtype], seed=4),
        GNCase(shape=(2, 6, 4, 4), num_groups=3, distribution="constant", log10_scale=-2.0),
        GNCase(shape=(16, 6), num_groups=3, seed=6),
        GNCase(shape=(2, 4, 2, 3, 3), num_groups=2, x_layout="channels_last", seed=7),
        GNCase(shape=(1, 4, 64, 64), num_groups=1, seed=8),  # 16384 values in one group
    ]
    return [fit(c, target) for c in cases]


def _prec(case: GNCase) -> rounding.Precision:
    return rounding.Precision.of(case.dtype)


def _reference(case: GNCase, values: np.ndarray):
    weight, bias = make_params(case)
    fw = ref.forward(values, case.num_groups, weight=weight, bias=bias, eps=case.eps)
    groups = values.reshape(case.shape[0] * case.num_groups, case.n)
    stats = {
        "num_groups": case.num_groups,
        "mean": fw.mean,
        "var": fw.var,
        "eps": case.eps,
        "prec": _prec(case),
        "spread": rounding.bulk_spread(groups, channel_axis=0).reshape(fw.mean.shape),
    }
    return fw, weight, bias, stats


def expected(target: Target, case: GNCase, *, backward: bool) -> rows.Expected:
    """The float64 reference's y (and dx, dweight, dbias) and theory.rounding's bound on each."""
    values = make_input(case)
    fw, weight, bias, stats = _reference(case, values)
    out = {"y": fw.y}
    tols = {
        "y": rounding.group_norm_forward_tolerance(fw.xhat, fw.y, weight=weight, bias=bias, **stats)
    }
    if backward:
        dy = make_grad(case)
        dx, dweight, dbias = ref.backward(dy, values, case.num_groups, weight=weight, eps=case.eps)
        tdx, tdw, tdb = rounding.group_norm_backward_tolerance(
            fw.xhat, dy, dx, weight=weight, **stats
        )
        out["dx"], tols["dx"] = dx, tdx
        prec = _prec(case)
        if weight is not None:
            out["dweight"] = dweight
            tols["dweight"] = rounding.stored_tolerance(
                tdw, dweight, dtype=case.param_dtype, prec=prec
            )
            out["dbias"] = dbias
            tols["dbias"] = rounding.stored_tolerance(tdb, dbias, dtype=case.param_dtype, prec=prec)
    return rows.Expected(out, tols, {"dweight": case.param_dtype, "dbias": case.param_dtype})


SPEC = rows.Spec(
    title="group norm",
    step=adapter.step,
    build=adapter.build,
    make_input=make_input,
    make_grad=make_grad,
    expected=expected,
    forward_bound=rounding.group_norm_forward_tolerance,
    backward_bound=rounding.group_norm_backward_tolerance,
    keeps_channels_last=True,
)


# --- forward, moments, backward ----------------------------------------------------------------


@CHECKS.register(
    name="groupnorm.forward",
    mode="forward",
    summary="y vs the float64 reference (layer norm of each group)",
    bound=rounding.group_norm_forward_tolerance,
    cases=_cases,
    known=_known,
)
def measure_forward(target: Target, case: GNCase) -> Measurement:
    return rows.measure_forward(SPEC, target, case)


@CHECKS.register(
    name="groupnorm.moments",
    mode="forward",
    summary="per-group output mean 0 and variance var/(var+eps) (no affine)",
    bound=(theory_gn.forward_moments_match, rounding.bn_moments_tolerance),
    cases=_cases,
    known=_known,
)
def measure_moments(target: Target, case: GNCase) -> Measurement:
    """Wu & He's normalised groups have mean 0 and variance var/(var + eps), measured on the
    target's output (affine off) within the moments of its forward bound."""
    case = dataclasses.replace(case, affine=False)
    run = adapter.step(target, case, backward=False)
    values = make_input(case)
    fw, _, _, stats = _reference(case, values)
    tol = rounding.group_norm_forward_tolerance(fw.xhat, fw.y, **stats)
    groups = case.shape[0] * case.num_groups
    y, xhat, tol = (a.reshape(groups, case.n) for a in (run.y, fw.xhat, tol))
    mean_t, var_t = y.mean(axis=1), y.var(axis=1)
    mean_tol, var_tol = rounding.bn_moments_tolerance(xhat, tol, mean_t, (1,))
    var = fw.var.reshape(-1)
    bound = (theory_gn.forward_moments_match, rounding.bn_moments_tolerance)
    c = worst(
        compare(mean_t, np.zeros_like(mean_t), mean_tol, bound=bound,
                what="per-group mean of the normalised output (oracle: 0)"),
        compare(var_t, var / (var + case.eps), var_tol, bound=bound,
                what="per-group variance of the normalised output (oracle: var/(var+eps))"),
    )  # fmt: skip
    return Measurement(c.ratio, c.message())


@CHECKS.register(
    name="groupnorm.backward",
    mode="forward+backward",
    summary="dx, dweight, dbias vs the closed form",
    bound=rounding.group_norm_backward_tolerance,
    cases=_cases,
    known=_known,
)
def measure_backward(target: Target, case: GNCase) -> Measurement:
    return rows.measure_backward(SPEC, target, case)


# --- configuration: parameter dtypes, layouts --------------------------------------------------


def _param_dtype_cases(target: Target, profile) -> st.SearchStrategy[GNCase]:
    return rows.param_dtype_cases(target, _cases(target, profile))


def _param_dtype_known(target: Target) -> list[GNCase]:
    return rows.param_dtype_known(target, fit(GNCase(shape=(2, 6, 3, 3), num_groups=3), target))


@CHECKS.register(
    name="groupnorm.param_dtypes",
    mode="forward+backward",
    summary="parameters in another dtype than the activations (float32 with half activations "
    "and the reverse): right values, y in the activations' dtype and parameter gradients in "
    "the parameters', or a clear refusal naming the dtype",
    bound=(rounding.group_norm_backward_tolerance, rounding.stored_tolerance),
    cases=_param_dtype_cases,
    known=_param_dtype_known,
)
def measure_param_dtypes(target: Target, case: GNCase) -> Measurement:
    return rows.measure_param_dtypes(SPEC, target, case)


@CHECKS.register(
    name="groupnorm.layout",
    mode="forward",
    summary="the same values in two memory layouts give the same output",
    bound=Times(2, rounding.group_norm_forward_tolerance),
    cases=_cases,
    known=_known,
)
def measure_layout(target: Target, case: GNCase) -> Measurement:
    """The case's layout against another (contiguous, or channels_last for a contiguous 4-D or
    5-D case): the layout picks the kernel, never the result."""
    if case.x_layout != "contiguous":
        other = "contiguous"
    else:
        other = "channels_last" if len(case.shape) in (4, 5) else "strided"
    twin = dataclasses.replace(case, x_layout=other)
    values = make_input(case)
    y0 = adapter.step(target, case, backward=False, values=values).y
    y1 = adapter.step(target, twin, backward=False, values=values).y
    tol = expected(target, case, backward=False).tols["y"]
    c = compare(
        y1,
        y0,
        2 * tol,
        what=f"output for {other} input vs {case.x_layout} input",
        bound=Times(2, rounding.group_norm_forward_tolerance),
    )
    return Measurement(c.ratio, c.message())


# --- hygiene -----------------------------------------------------------------------------------


@CHECKS.register(
    name="groupnorm.no_mutation",
    summary="forward and backward leave the input and the incoming gradient unchanged",
    bound=EXACT,
    cases=_cases,
    known=_known,
)
def measure_no_mutation(target: Target, case: GNCase) -> Measurement:
    return rows.measure_no_mutation(SPEC, target, case)


@CHECKS.register(
    name="groupnorm.poisoned_outputs",
    mode="forward+backward",
    summary="every element of y, dx, dweight, dbias is written (NaN-filled memory)",
    bound=EXACT,
    cases=_cases,
    known=_known,
)
def measure_poisoned(target: Target, case: GNCase) -> Measurement:
    return rows.measure_poisoned(SPEC, target, case)


@CHECKS.register(
    name="groupnorm.output_layout",
    mode="forward+backward",
    summary="y and dx are dense, and channels_last inputs give channels_last outputs (y for a "
    "channels_last x; dx when the incoming gradient is channels_last too)",
    bound=EXACT,
    cases=_cases,
    known=_known,
)
def measure_output_layout(target: Target, case: GNCase) -> Measurement:
    return rows.measure_output_layout(SPEC, target, case)


@dataclasses.dataclass(frozen=True)
class BadGroupInput:
    kind: str  # "wrong_channels" | "one_dimension" | "groups_not_dividing"
    channels: int = 4
    seed: int = 0


BAD_KINDS = ("wrong_channels", "one_dimension", "groups_not_dividing")


@CHECKS.register(
    name="groupnorm.bad_input",
    summary="a wrong channel count, a 1-D input, or channels not divisible into the groups "
    "raise a clear error",
    bound=EXACT,
    cases=lambda target, profile: st.builds(
        BadGroupInput,
        kind=st.sampled_from(BAD_KINDS),
        channels=st.integers(2, 16),
        seed=st.integers(0, 1000),
    ),
    known=lambda target: [BadGroupInput(kind) for kind in BAD_KINDS],
    max_examples=lambda profile: 6,
)
def measure_bad_input(target: Target, case: BadGroupInput) -> Measurement:
    c = case.channels
    groups = 2 if c % 2 == 0 else 1
    if case.kind == "groups_not_dividing":
        try:  # torch refuses at construction; a kernel may refuse at the first call
            module = target.factory(c + 1, c, eps=1e-5, affine=True)
            x = torch.ones((2, c, 3, 3), dtype=target.torch_dtype, device=target.device)
            with torch.no_grad(), target.autocast_context():
                module.to(target.device)(x)
        except (ValueError, RuntimeError, TypeError, AssertionError) as exc:
            if str(exc).strip():
                return Measurement(0.0, f"{case.kind}: raised {type(exc).__name__}: {exc}")
            return Measurement(math.inf, f"{case.kind}: raised {type(exc).__name__}, no message")
        return Measurement(
            math.inf,
            f"{case.kind}: {c} channels in {c + 1} groups were accepted silently",
        )
    good = fit(GNCase(shape=(2, c, 3, 3), num_groups=groups, seed=case.seed), target)
    if target.compile:  # fit gives it its one compiled shape; the module must have c channels
        good = dataclasses.replace(good, shape=(2, c, 3, 3), num_groups=groups)
    module = adapter.build(target, good)
    with torch.no_grad():  # a valid input first: a target that refuses it says nothing here
        adapter.step(target, good, module, backward=False)
    shape = {"wrong_channels": (2, c + 1, 3, 3), "one_dimension": (c,)}[case.kind]
    x = torch.from_numpy(np.random.default_rng(case.seed).normal(size=shape)).to(
        device=target.device, dtype=target.torch_dtype
    )
    try:
        with torch.no_grad(), target.autocast_context():
            as_run(target, module)(x)  # directly: not the adapter's own shape checks
    except (ValueError, RuntimeError, TypeError, AssertionError, IndexError) as exc:
        if str(exc).strip():
            return Measurement(0.0, f"{case.kind}: raised {type(exc).__name__}: {exc}")
        return Measurement(math.inf, f"{case.kind}: raised {type(exc).__name__} with no message")
    return Measurement(
        math.inf,
        f"{case.kind}: input of shape {shape} to a {c}-channel group norm was accepted silently",
    )


__all__ = ["BAD_KINDS", "CHECKS", "SPEC", "BadGroupInput", "expected", "fit"]


# --- known defects of real implementations ---------------------------------------------------


def _example(dtype: str, layout: str) -> GNCase:
    """A case the one-pass defect shows in: kappa 100."""
    return GNCase(
        shape=(2, 8, 8, 8), num_groups=2, dtype=dtype, param_dtype=dtype, log10_kappa=2.0,
        x_layout=layout, seed=1,
    )  # fmt: skip


#: The activation dtypes in which the defect exceeds the bounds. In bfloat16 and float16 the
#: bound's own elementwise term (c u kappa: x * scale rounded in storage precision) grows with
#: kappa as the defect's error does with kappa^2 u_float32 (float32 statistics): they cross past
#: kappa ~ 1e4, beyond what their cases draw (measured: bfloat16 at kappa 1e3, error 6.4 against
#: 0.05 on contiguous input, yet 0.02 of its bound).
GN_DEFECT_DTYPES = ("float32", "float64")


def _torch_group_norm_cpu(dtype: str):
    """Whether a target runs torch's own CPU group norm on ``dtype`` activations."""

    def applies(target: Target) -> bool:
        return rows.runs_forward_of(target, (torch.nn.GroupNorm,)) and target.dtype == dtype

    return applies


def one_pass_exceeds_bound(case: GNCase) -> bool:
    """Whether a one-pass group variance (rounding.one_pass_variance_error) may be off by more
    than the bound allows the variance (rounding.row_statistics_error) in some group."""
    values = make_input(case)
    groups = values.reshape(case.shape[0] * case.num_groups, case.n)
    mean, var = groups.mean(axis=1), groups.var(axis=1)
    prec = _prec(case)
    spread = rounding.bulk_spread(groups, channel_axis=0)
    one_pass = rounding.one_pass_variance_error(case.n, mean, var, prec, spread=spread)
    _, d_var = rounding.row_statistics_error(case.n, mean, var, prec, spread=spread)
    return bool(np.any(one_pass > d_var))


def channels_last_one_pass(case: GNCase) -> bool:
    """A channels_last input (a real permutation) on which one-pass variance can fail."""
    is_cl = case.x_layout == "channels_last" and rows.real_channels_last(case.shape)
    return is_cl and one_pass_exceeds_bound(case)


def layout_pair_one_pass(case: GNCase) -> bool:
    """The layout check compares a case with its channels_last twin (a contiguous 4-D or 5-D
    case) or a channels_last case with its contiguous twin: either way one side is channels_last."""
    if case.x_layout not in ("contiguous", "channels_last"):
        return False
    return rows.real_channels_last(case.shape) and one_pass_exceeds_bound(case)


#: Found by varguard on torch 2.13.0 (CPU): torch.nn.GroupNorm on channels_last input computes
#: each group's variance in one pass, E[x^2] - E[x]^2 (contiguous input takes a two-pass path).
#: Measured against the float64 reference with the group mean at kappa times the spread, shapes
#: (2, 8, 8, 8), (2, 64, 16, 16), (1, 4, 2, 3) in 2 groups: the error grows like kappa^2 on
#: channels_last and stays at the rounding level on contiguous input (float32: 1.1e-6 vs 2.6e-7
#: at kappa 1, 2e-5 vs 1e-6 at 10, 3.5e-3 vs 7e-6 at 100, 0.12 vs 5.8e-5 at 1e3, 1.1e3 vs 6.5e-4
#: at 1e4; float64 6e-8 vs 2e-12 at 1e4; bfloat16 4.5 vs 0.015 and float16 1.0 vs 9e-4 at 1e3).
#: The matcher excludes the channels_last cases whose one-pass error
#: (rounding.one_pass_variance_error) exceeds what the bound allows the variance: kappa past a few.
GROUP_NORM_CHANNELS_LAST_ONE_PASS = {
    dtype: CHECKS.add_defect(
        KnownDefect(
            checks=(
                "groupnorm.forward",
                "groupnorm.moments",
                "groupnorm.backward",
                "groupnorm.param_dtypes",
            ),
            applies_to=_torch_group_norm_cpu(dtype),
            description="torch CPU GroupNorm on channels_last input computes the group variance "
            "in one pass (E[x^2] - E[x]^2): errors grow with kappa^2 (0.12 at kappa 1e3 in "
            "float32)",
            matches=channels_last_one_pass,
            example=_example(dtype, "channels_last"),
        )
    )
    for dtype in GN_DEFECT_DTYPES
}

#: The same defect seen by the layout check, which runs a 4-D or 5-D case in both layouts.
GROUP_NORM_CHANNELS_LAST_ONE_PASS_LAYOUT = {
    dtype: CHECKS.add_defect(
        KnownDefect(
            checks=("groupnorm.layout",),
            applies_to=_torch_group_norm_cpu(dtype),
            description="torch CPU GroupNorm's channels_last path computes the group variance "
            "in one pass, so its output differs from the contiguous path's by the one-pass error",
            matches=layout_pair_one_pass,
            example=_example(dtype, "contiguous"),
        )
    )
    for dtype in GN_DEFECT_DTYPES
}


def half_group_too_flat(case: GNCase) -> bool:
    """float16 activations with a group whose var + eps is below rows.HALF_DX_LIMIT."""
    if case.dtype != "float16":  # before the input is made: most cases are not float16
        return False
    groups = make_input(case).reshape(case.shape[0] * case.num_groups, case.n)
    return rows.half_too_flat(groups, eps=case.eps, dtype=case.dtype)


#: Found by varguard on torch 2.13.0 (CPU, quick profile, seed 1): on float16 input the group
#: norm backward returns inf/NaN in dx for groups of (near) zero variance when var + eps is
#: small, as its layer norm does (HALF_FLAT_ROW_DX); first seen on a (2, 1) input in one group,
#: eps 1e-12, no affine, where the exact dx is 0. Measured on constant groups, eps from 1e-12 to
#: 1e-6 in steps of 10^0.1, group values around 0.01, 1 and 1000, 1 to 8192 values a group,
#: contiguous and channels_last: wrong non-finite dx up to eps 2.0e-10 without affine (1.3e-9 at
#: 8192 values), and with affine only for values around 1000 (up to 6.3e-9); on normal groups
#: of small scale up to var + eps 2.3e-10 (none passed below it, all above 3.2e-10 did).
#: bfloat16 and float32 never. The matcher takes var + eps < rows.HALF_DX_LIMIT (1e-8).
HALF_FLAT_GROUP_DX = CHECKS.add_defect(
    KnownDefect(
        checks=("groupnorm.backward", "groupnorm.param_dtypes", "groupnorm.poisoned_outputs"),
        applies_to=_torch_group_norm_cpu("float16"),
        description="torch CPU group norm backward on float16 input returns inf/NaN in dx for "
        "groups with var + eps below ~6e-9 (rstd and its powers overflow float16)",
        matches=half_group_too_flat,
        example=GNCase(
            shape=(2, 1),
            num_groups=1,
            dtype="float16",
            param_dtype="float16",
            distribution="constant",
            eps=1e-12,
            affine=False,
        ),  # fmt: skip
    )
)


def _torch_group_norm_cuda_half(target: Target) -> bool:
    """torch's own CUDA group norm on float16 activations (not under autocast, where it runs in
    float32; not compiled, where Inductor writes its own kernel)."""
    return (
        rows.runs_forward_of(target, (torch.nn.GroupNorm,), device="cuda")
        and target.dtype == "float16"
        and target.autocast is None
        and not target.compile
    )


def half_eps_rounding_shows(case: GNCase) -> bool:
    """float16 activations with a group where eps rounded to float16 moves var + eps by more
    than 2^-12 of itself (a quarter of float16's unit roundoff in the output), or where var +
    eps is below rows.HALF_DX_LIMIT (rstd kept in float16, as on the CPU)."""
    if case.dtype != "float16":
        return False
    groups = make_input(case).reshape(case.shape[0] * case.num_groups, case.n)
    flattest = float(np.min(groups.var(axis=1))) + case.eps
    shift = abs(float(np.float16(case.eps)) - case.eps)
    return shift > 2.0**-12 * flattest or flattest < rows.HALF_DX_LIMIT


#: Found by varguard's first GPU run (cuda-groupnorm-float16, groupnorm.moments, backward and
#: poisoned_outputs): torch's CUDA group norm on float16 input gives NaN in y and dx for a
#: constant group at eps 1e-8, case (2, 1) in one group (H200, torch 2.11.0+cu130). Its CUDA
#: kernel takes eps as the input's dtype (GroupNormKernelImpl: static_cast<scalar_t>(eps)), and
#: float16 rounds 1e-8 to 0, so 1/sqrt(var + eps) is inf; it keeps rstd in float16 too. The
#: CPU kernel and bfloat16 (whose range holds such eps) passed the same run. The matcher takes
#: float16 groups where eps's rounding shows (half_eps_rounding_shows).
CUDA_HALF_EPS_ROUNDED = CHECKS.add_defect(
    KnownDefect(
        checks=(
            "groupnorm.forward",
            "groupnorm.moments",
            "groupnorm.backward",
            "groupnorm.param_dtypes",
            "groupnorm.layout",
            "groupnorm.poisoned_outputs",
        ),
        applies_to=_torch_group_norm_cuda_half,
        description="torch's CUDA group norm rounds eps to the float16 input's dtype (1e-8 "
        "becomes 0): a constant group gives NaN in y and dx",
        matches=half_eps_rounding_shows,
        example=GNCase(
            shape=(2, 1),
            num_groups=1,
            dtype="float16",
            param_dtype="float16",
            distribution="constant",
            eps=1e-8,
        ),  # fmt: skip
    )
)

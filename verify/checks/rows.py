"""What the normalisation families' checks share (layer norm, RMSNorm, group norm, the pre-norm
tail): the measurements every one of them makes, each given the family's :class:`Spec`.

A family's module (verify/checks/layernorm.py, ...) declares its ``CHECKS`` and registers each
check next to a small ``measure`` function that hands its Spec to one of these. The Spec says how
to run a target on a case (its adapter), what the case's data are, and what the float64 reference
and theory.rounding's bounds expect (:class:`Expected`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from hypothesis import strategies as st

from verify.adapters.base import ContractViolation, as_run
from verify.adapters.rows import NormRun
from verify.assertions import Comparison, Times, argmax_index, compare, input_changed, worst
from verify.checks.base import Measurement
from verify.strategies.rows import PARAM_DTYPES, RowCase, fit, valid_layouts
from verify.targets.base import Target

#: What a gradient is called in messages, and where a run keeps it.
GRADIENTS = ("dx", "dweight", "dbias", "dresidual")


@dataclass(frozen=True)
class Expected:
    """Exact (float64) values of a target's outputs and the bound on each, by name ("y", "dx",
    "dweight", "dbias", and a family's own such as "residual_out" or "dresidual"); ``storage``
    names the dtype each output is stored in where it is not the activations'."""

    values: dict[str, np.ndarray]
    tols: dict[str, np.ndarray]
    storage: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Spec:
    """How a family's measurements run: ``step(target, case, module=None, *, backward)`` (its
    adapter), ``build(target, case)``, ``make_input(case)`` and ``make_grad(case)`` (its data),
    ``expected(target, case, *, backward)`` (reference and bounds), and the theory functions the
    bounds come from, for the results."""

    title: str  # "layer norm"
    step: Callable[..., NormRun]
    build: Callable[[Target, Any], torch.nn.Module]
    make_input: Callable[[Any], np.ndarray]
    make_grad: Callable[[Any], np.ndarray]
    expected: Callable[..., Expected]
    forward_bound: Any
    backward_bound: Any
    # Outputs besides y that the forward writes (the fused tail's stream): poisoned and compared.
    forward_outputs: tuple[str, ...] = ()
    # Whether channels_last input must give channels_last output (group norm, as torch's
    # elementwise ops); row norms only promise dense outputs.
    keeps_channels_last: bool = False
    # A family's own no-mutation rule for what it writes besides its outputs (the stream).
    mutation: Callable[[Any, Target, NormRun], str | None] | None = None


def output(run: NormRun, name: str) -> np.ndarray | None:
    """An output of a run by name: y, dx, dweight, dbias or one of the family's own."""
    if name in ("y", "dx", "dweight", "dbias"):
        return getattr(run, name)
    return run.extra.get(name)


def output_dtype(run: NormRun, name: str) -> str:
    if name in ("y", "dx", "dweight", "dbias"):
        return getattr(run, f"{name}_dtype")
    return run.extra.get(f"{name}_dtype", "")


def comparisons(spec: Spec, run: NormRun, exp: Expected, names, *, what: str) -> list[Comparison]:
    """Each named output of ``run`` against ``exp``; a gradient that should exist and does not
    is an infinite error."""
    out = []
    for name in names:
        if name not in exp.values:
            continue
        bound = spec.forward_bound if name in ("y", *spec.forward_outputs) else spec.backward_bound
        got = output(run, name)
        if got is None:
            missing = np.full(1, np.inf)
            out.append(compare(missing, np.zeros(1), 1.0, what=f"{what}: no {name} came back",
                               bound=bound))  # fmt: skip
            continue
        storage = exp.storage.get(name) or output_dtype(run, name) or None
        out.append(
            compare(got, exp.values[name], exp.tols[name], what=f"{what} {name}", bound=bound,
                    storage=storage)
        )  # fmt: skip
    return out


# --- forward and backward against the reference -------------------------------------------------


def measure_forward(spec: Spec, target: Target, case) -> Measurement:
    run = spec.step(target, case, backward=False)
    exp = spec.expected(target, case, backward=False)
    c = worst(*comparisons(spec, run, exp, ("y", *spec.forward_outputs), what=spec.title))
    return Measurement(c.ratio, c.message())


def measure_backward(spec: Spec, target: Target, case) -> Measurement:
    run = spec.step(target, case, backward=True)
    exp = spec.expected(target, case, backward=True)
    c = worst(*comparisons(spec, run, exp, GRADIENTS, what=f"{spec.title} backward"))
    return Measurement(c.ratio, c.message())


# --- parameter dtypes ------------------------------------------------------------------------

#: Words by which an error names a dtype (torch spells them several ways).
DTYPE_WORDS = ("dtype", "datatype", "scalar type", "float", "half", "double", "bf16", "fp16")


def param_dtype_cases(target: Target, cases: st.SearchStrategy) -> st.SearchStrategy:
    """The family's ``cases`` with affine parameters in a dtype other than the activations'."""
    others = [d for d in PARAM_DTYPES if d != target.dtype]
    return st.builds(
        lambda case, dtype: dataclasses.replace(case, param_dtype=dtype, affine=True),
        cases,
        st.sampled_from(others),
    )


def param_dtype_known(target: Target, base) -> list:
    """``base`` (a known case fitted to the target) with parameters in each other dtype."""
    return [dataclasses.replace(base, param_dtype=d, affine=True) for d in PARAM_DTYPES
            if d != target.dtype]  # fmt: skip


def measure_param_dtypes(spec: Spec, target: Target, case) -> Measurement:
    """The case's parameters in a dtype other than the activations' (float32 weights with
    bfloat16 activations, bfloat16 weights with float32 ones, ...): the output comes back in the
    activations' dtype and the parameter gradients in the parameters', all within their bounds;
    or the pairing is refused with an error that names the dtype (torch's CPU LayerNorm and
    GroupNorm take float32 parameters with half activations, nothing else)."""
    pair = f"{case.dtype} activations with {case.param_dtype} parameters"
    try:
        run = spec.step(target, case, backward=True)
    except ContractViolation as exc:
        return Measurement(math.inf, f"{pair}: {exc}")
    except (TypeError, RuntimeError, ValueError) as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if any(word in text.lower() for word in DTYPE_WORDS):
            return Measurement(0.0, f"{pair}: refused clearly: {type(exc).__name__}: {text}")
        return Measurement(
            math.inf,
            f"{pair}: raised {type(exc).__name__}({text!r}), which does not say the dtypes are "
            f"the problem; accept the pairing or refuse it naming the dtype",
        )
    wrong = [
        f"{name} came back in {output_dtype(run, name)}, expected {want}"
        for name, want in (
            ("dweight", case.param_dtype),
            ("dbias", case.param_dtype),
        )
        if output(run, name) is not None and output_dtype(run, name) != want
    ]
    if wrong:
        return Measurement(math.inf, f"{pair}: {'; '.join(wrong)}")
    exp = spec.expected(target, case, backward=True)
    names = ("y", *spec.forward_outputs, *GRADIENTS)
    c = worst(*comparisons(spec, run, exp, names, what=f"{spec.title} ({pair})"))
    return Measurement(c.ratio, c.message())


# --- hygiene: inputs not mutated, every output written, layouts dense ---------------------------


def measure_no_mutation(spec: Spec, target: Target, case) -> Measurement:
    """Neither a training step (forward + backward) nor a no-grad forward may write to the input,
    and the backward may not write to the incoming gradient (a caller may reuse it: a
    gradient-accumulation loop, a retained graph)."""
    before, dy = spec.make_input(case), spec.make_grad(case)
    run = spec.step(target, case, backward=True)
    quiet = spec.step(target, case, backward=False)
    for where, was, after in (
        ("forward/backward", before, run.input_after),
        ("the backward, in the incoming gradient dy,", dy, run.grad_after),
        ("a no-grad forward", before, quiet.input_after),
    ):
        changed = input_changed(was, after, where)
        if changed:
            return Measurement(math.inf, changed)
    if spec.mutation is not None:
        for r in (run, quiet):
            why = spec.mutation(case, target, r)
            if why:
                return Measurement(math.inf, why)
    return Measurement(0.0, "input and incoming gradient unchanged by training and inference")


@contextlib.contextmanager
def poisoned_memory():
    """Uninitialised tensors come back filled with NaN (torch's deterministic-mode switch)."""
    import torch.utils.deterministic as det

    prev = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_fill = det.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    det.fill_uninitialized_memory = True
    try:
        yield
    finally:
        det.fill_uninitialized_memory = prev_fill
        torch.use_deterministic_algorithms(prev, warn_only=prev_warn)


def measure_poisoned(spec: Spec, target: Target, case) -> Measurement:
    """Every element of every output is written: with fresh memory filled with NaN, no NaN comes
    back where the float64 reference is finite."""
    with poisoned_memory():
        run = spec.step(target, case, backward=True)
    exp = spec.expected(target, case, backward=True)
    for name in ("y", *spec.forward_outputs, *GRADIENTS):
        got, want = output(run, name), exp.values.get(name)
        if got is None or want is None:
            continue
        bad = np.isnan(got) & np.isfinite(want)
        if bad.any():
            return Measurement(
                math.inf,
                f"{name}: {int(bad.sum())} of {got.size} elements left unwritten (NaN poison), "
                f"first at {argmax_index(bad)}",
            )
    return Measurement(0.0, "every output element written")


def measure_output_layout(spec: Spec, target: Target, case) -> Measurement:
    """y and dx are dense (no gaps, no overlapping elements: what the next kernel takes for
    granted); where the family keeps channels_last (group norm), y is channels_last when x is,
    and dx when x and the incoming gradient both are."""
    run = spec.step(target, case, backward=True)
    # A target may declare that it does not keep the format (torch's CUDA group norm).
    keeps = spec.keeps_channels_last and target.options.get("keeps_channels_last", True)
    x_cl = case.x_layout == "channels_last" and real_channels_last(case.shape)
    wants = {
        "y": keeps and x_cl,
        "dx": keeps and x_cl and case.dy_layout == "channels_last",
    }
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
            f"input and a {case.dy_layout} incoming gradient of shape {case.shape}; a "
            f"{spec.title} returns {want}",
        )
    return Measurement(0.0, f"y {run.y_layout}, dx {run.dx_layout}")


# --- configuration: normalized_shape; bad input -------------------------------------------------


def twin(case: RowCase) -> RowCase:
    """The same values normalised over the same elements, with normalized_shape written another
    way: several trailing dimensions flattened into one, or one split in two (a factor of it,
    or a leading 1)."""
    shape, k = case.shape, case.normalized_dims
    lead = shape[: len(shape) - k]
    if k > 1:
        other = dataclasses.replace(case, shape=(*lead, case.n), normalized_dims=1)
    else:
        n = case.n
        f = next((d for d in (2, 3, 4, 5, 7, 8) if n % d == 0 and n > d), 1)
        other = dataclasses.replace(case, shape=(*lead, f, n // f), normalized_dims=2)
    # A layout the new rank does not have (channels_last is 4-D only) becomes contiguous.
    valid = valid_layouts(other.shape, other.normalized_dims)
    return dataclasses.replace(
        other,
        x_layout=other.x_layout if other.x_layout in valid else "contiguous",
        dy_layout=other.dy_layout if other.dy_layout in valid else "contiguous",
    )


@dataclasses.dataclass(frozen=True)
class BadRowInput:
    kind: str  # "wrong_last" | "wrong_inner" | "too_few_dims"
    n: int = 8
    seed: int = 0


BAD_KINDS = ("wrong_last", "wrong_inner", "too_few_dims")


def bad_shapes(kind: str, n: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(normalized_shape, input shape) of each kind of bad input."""
    return {
        "wrong_last": ((n,), (3, n + 1)),
        "wrong_inner": ((2, n), (3, 3, n)),
        "too_few_dims": ((2, n), (n,)),
    }[kind]


def bad_row_cases() -> st.SearchStrategy[BadRowInput]:
    return st.builds(
        BadRowInput,
        kind=st.sampled_from(BAD_KINDS),
        n=st.integers(1, 64),
        seed=st.integers(0, 1000),
    )


def measure_bad_row_input(
    spec: Spec, target: Target, case: BadRowInput, *, kind: str
) -> Measurement:
    """A module built for ``normalized_shape`` given an input whose trailing dimensions are
    something else must raise an error that says so (not broadcast, not read past a row)."""
    ns, shape = bad_shapes(case.kind, case.n)
    good = fit(RowCase(shape=(2, *ns), normalized_dims=len(ns), kind=kind, seed=case.seed), target)
    if target.compile:  # fit gives it its one compiled shape; the module must be built for ns
        good = dataclasses.replace(good, shape=(2, *ns), normalized_dims=len(ns))
    module = spec.build(target, good)
    with torch.no_grad():  # a valid input first: a target that refuses it says nothing here
        spec.step(target, good, module, backward=False)
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
        f"{case.kind}: input of shape {shape} to a {spec.title} over normalized_shape={ns} was "
        f"accepted silently",
    )


def measure_normalized_shape(spec: Spec, target: Target, case) -> Measurement:
    """The same rows normalised with normalized_shape written as one dimension and as several
    (:func:`twin`) give the same output: a kernel that normalises over the last dimension only,
    or reads a multi-dimensional weight in the wrong order, does not. Both runs are within their
    bound of one exact value."""
    other = twin(case)
    y0 = spec.step(target, case, backward=False).y
    y1 = spec.step(target, other, backward=False).y.reshape(case.shape)
    t0 = spec.expected(target, case, backward=False).tols["y"]
    t1 = spec.expected(target, other, backward=False).tols["y"].reshape(case.shape)
    c = compare(
        y1,
        y0,
        t0 + t1,
        what=f"normalized_shape={other.normalized_shape} vs {case.normalized_shape} on the same "
        "rows",
        bound=Times(2, spec.forward_bound),
    )
    return Measurement(c.ratio, c.message())


def runs_forward_of(target: Target, classes: tuple[type, ...], *, device: str = "cpu") -> bool:
    """Whether ``target`` runs one of ``classes``' own forward on ``device`` ("cpu", "cuda"):
    the class itself, or a user's subclass that does not override it (a drop-in of torch's
    module runs torch's kernel, defects included)."""
    factory = target.factory
    return (
        str(target.device).split(":")[0] == device
        and isinstance(factory, type)
        and any(issubclass(factory, c) and factory.forward is c.forward for c in classes)
    )


def sequential_half_sum(
    terms: np.ndarray, *, dtype: str, param_dtype: str, chunks: int = 1
) -> np.ndarray:
    """The column sums of ``terms`` (rows, n) as torch 2.13's CPU layer norm backward forms dbias
    and dweight for half-precision activations: the rows cut into ``chunks`` consecutive parts
    (one per torch thread), each part's float32 terms added one row after another to a running
    sum rounded to ``dtype`` after each, the parts' sums added in float32, then stored in
    ``param_dtype`` (measured bit for bit at 1, 2 and 4 threads; at 3 torch cuts the rows a
    little differently: within a few units in the last place; see
    verify.checks.layernorm.HALF_PARAM_GRAD_ACCUMULATION)."""
    t = torch.from_numpy(np.ascontiguousarray(terms)).float()
    total = torch.zeros(t.shape[1], dtype=torch.float32)
    for part in torch.tensor_split(t, max(1, chunks)):
        acc = torch.zeros(t.shape[1], dtype=getattr(torch, dtype))
        for row in part:
            acc = (acc.float() + row).to(acc.dtype)
        total = total + acc.float()
    return total.to(getattr(torch, param_dtype)).double().numpy()


def torch_half_layer_norm_param_grads(
    x: np.ndarray, dy: np.ndarray, *, eps: float, dtype: str, param_dtype: str, chunks: int = 1
) -> dict[str, np.ndarray]:
    """dweight and dbias as torch 2.13's CPU layer norm backward forms them on half-precision
    rows ``x`` (rows, n) with incoming gradient ``dy`` (both already in ``dtype``'s values):
    the terms dy xhat and dy in float32, xhat from the float32 mean and 1/sqrt(var + eps) of
    each row, summed by :func:`sequential_half_sum` in ``chunks`` parts."""
    xf = torch.from_numpy(np.ascontiguousarray(x)).float()
    dyf = torch.from_numpy(np.ascontiguousarray(dy)).float()
    mean = xf.mean(dim=1, keepdim=True)
    rstd = torch.rsqrt(xf.var(dim=1, unbiased=False, keepdim=True) + eps)
    terms = {"dweight": dyf * ((xf - mean) * rstd), "dbias": dyf}
    return {
        name: sequential_half_sum(t.numpy(), dtype=dtype, param_dtype=param_dtype, chunks=chunks)
        for name, t in terms.items()
    }


def half_param_grads_exceed(
    exp: Expected, x: np.ndarray, dy: np.ndarray, *, eps, dtype, param_dtype
) -> bool:
    """Whether torch's half-precision dweight or dbias (:func:`torch_half_layer_norm_param_grads`)
    is past its bound in ``exp`` anywhere, replayed both on one thread and on as many as torch
    has here: fewer threads, longer runs of half-precision additions, larger errors; the union
    keeps the rows torch cuts a little differently from being missed."""
    for chunks in sorted({1, torch.get_num_threads()}):
        replayed = torch_half_layer_norm_param_grads(
            x, dy, eps=eps, dtype=dtype, param_dtype=param_dtype, chunks=chunks
        )
        for name, got in replayed.items():
            if name in exp.values:
                err = np.abs(got - exp.values[name].ravel())
                if np.any(err > exp.tols[name].ravel()):
                    return True
    return False


#: var + eps below which torch 2.13's CPU layer norm and group norm backward may return a
#: non-finite dx on float16 activations (1/sqrt(var + eps) and its powers overflow float16);
#: measured limits in verify.checks.layernorm.HALF_FLAT_ROW_DX and
#: verify.checks.groupnorm.HALF_FLAT_GROUP_DX, this is 1.6x the largest of them.
HALF_DX_LIMIT = 1e-8


def half_too_flat(values: np.ndarray, *, eps: float, dtype: str) -> bool:
    """float16 activations with a row of ``values`` (rows, n) whose var + eps is below
    HALF_DX_LIMIT: where torch's float16 layer and group norm backward overflow."""
    return dtype == "float16" and bool(np.min(values.var(axis=1)) + eps < HALF_DX_LIMIT)


#: max |dy| / sqrt(var + eps) over a row above which torch 2.13's CPU layer norm backward may
#: return a non-finite dx on float16 activations although the exact dx is in float16's range
#: (the sweep's seed 15: a (2,)-row of variance 2.4e-7, eps 1e-7, |dy| 55: dx (-inf, -27520)
#: for the exact (8131, -8131)). Measured on single rows (n 2 to 256, values near 0, 1.2 and
#: 100, eps 1e-8 to 3e-4, |dy| 0.25 to 4000): 204 non-finite dx with a finite exact one, none
#: below 4.4e4; half of float16's largest value, 2^15, is the limit taken.
HALF_DY_RSTD_LIMIT = 2.0**15


def half_dy_overflows(values: np.ndarray, dy: np.ndarray, *, eps: float, dtype: str) -> bool:
    """float16 activations with a row of ``values`` (rows, n) where max |dy| / sqrt(var + eps)
    passes HALF_DY_RSTD_LIMIT (``dy`` laid out as ``values``)."""
    if dtype != "float16":
        return False
    rstd = 1.0 / np.sqrt(values.var(axis=1) + eps)
    return bool(np.max(np.abs(dy).max(axis=1) * rstd) > HALF_DY_RSTD_LIMIT)


def real_channels_last(shape: tuple[int, ...]) -> bool:
    """Whether a channels_last tensor of ``shape`` differs from a contiguous one (size-1
    dimensions can make both formats one)."""
    if len(shape) not in (4, 5):
        return False
    fmt = torch.channels_last if len(shape) == 4 else torch.channels_last_3d
    t = torch.empty(shape).contiguous(memory_format=fmt)
    return not t.is_contiguous()


__all__ = [
    "BAD_KINDS",
    "DTYPE_WORDS",
    "GRADIENTS",
    "BadRowInput",
    "Expected",
    "Spec",
    "bad_row_cases",
    "bad_shapes",
    "comparisons",
    "measure_backward",
    "measure_bad_row_input",
    "measure_forward",
    "measure_no_mutation",
    "measure_normalized_shape",
    "measure_output_layout",
    "measure_param_dtypes",
    "measure_poisoned",
    "output",
    "output_dtype",
    "param_dtype_cases",
    "param_dtype_known",
    "poisoned_memory",
    "real_channels_last",
    "runs_forward_of",
    "half_param_grads_exceed",
    "half_dy_overflows",
    "half_too_flat",
    "sequential_half_sum",
    "torch_half_layer_norm_param_grads",
    "twin",
]

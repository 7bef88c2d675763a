"""Batch-norm checks: each compares a target with the float64 reference or a theory oracle.

Every tolerance is a bound from theory.rounding (the check's ``bound``); statistics errors use
its probabilistic model with a false-alarm probability below 1e-13 per reduction.
"""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np
import torch
from hypothesis import strategies as st

from reference import batchnorm as ref
from reference.sharding import chan_combine
from theory import batchnorm as theory_bn
from theory import rounding
from verify.adapters import batchnorm as adapter
from verify.adapters.base import to_input
from verify.assertions import EXACT, Times, argmax_index, compare, input_changed, worst
from verify.checks.base import Checks, KnownDefect, Measurement
from verify.strategies.batchnorm import BNCase, bn_cases, make_affine, make_grad, make_input
from verify.strategies.common import round_to
from verify.targets.base import Target

CHECKS = Checks("batchnorm")


def _prec(target: Target) -> rounding.Precision:
    return rounding.Precision.of(target.dtype)


def _training_only(target: Target) -> str | None:
    return None if "train" in target.modes else "target exists for inference only"


def _cases(**kw):
    def cases(target: Target, profile) -> st.SearchStrategy[BNCase]:
        return adapter_cases(target, profile, **kw)

    return cases


def adapter_cases(target: Target, profile, **kw) -> st.SearchStrategy[BNCase]:
    return bn_cases(dtype=target.dtype, max_elements=target.size_budget(profile.max_elements), **kw)


def _known(target: Target) -> list[BNCase]:
    """Known failure modes, tried before any search: they make mutants die deterministically."""
    d = target.dtype
    high_kappa = {"float32": 4.0, "float64": 6.0, "bfloat16": 1.0, "float16": 2.0}[d]
    return [
        BNCase(shape=(2, 3, 1, 1), dtype=d, seed=1),  # m = 2: biased vs unbiased is a factor 2
        BNCase(shape=(8, 4, 16, 16), dtype=d, log10_kappa=high_kappa, seed=2),  # cancellation
        BNCase(shape=(4, 2, 8, 8), dtype=d, distribution="constant", log10_scale=-2.0, seed=3),
        BNCase(
            shape=(16, 3, 32, 32),
            dtype=d,
            log10_scale=-3.0,
            eps=1e-3,
            momentum=None,
            steps=3,
            seed=4,
        ),  # small variance: eps placement matters; cumulative average
        BNCase(shape=(64, 2, 32, 32), dtype=d, log10_scale=1.0, seed=5),  # m = 65536 sums
    ]


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
        run = adapter.train_step(target, case, module, step=step, backward=False)
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


@CHECKS.register(
    name="batchnorm.eval",
    summary="eval mode normalises with the running statistics",
    bound=rounding.bn_forward_tolerance,
    cases=_eval_cases,
    known=_known,
)
def measure_eval(target: Target, case: BNCase) -> Measurement:
    r_mean, r_var = _running_stats(case)
    y = adapter.eval_forward(target, case, r_mean, r_var)
    values = make_input(case)
    gamma, beta = make_affine(case)
    expected = ref.eval_forward(values, r_mean, r_var, gamma=gamma, beta=beta, eps=case.eps)
    x_hat = (values - r_mean.reshape(1, -1, 1, 1)) / np.sqrt(r_var.reshape(1, -1, 1, 1) + case.eps)
    tol = rounding.bn_forward_tolerance(
        x_hat,
        expected,
        m=None,
        mean=r_mean,
        var=r_var,
        eps=case.eps,
        gamma_=gamma,
        beta=beta,
        prec=_prec(target),
    )
    c = compare(
        y,
        expected,
        tol,
        what="eval-mode output (running statistics)",
        bound=rounding.bn_forward_tolerance,
        storage=target.dtype,
    )
    return Measurement(c.ratio, c.message())


# --- invariances -------------------------------------------------------------------------------


def _forward_and_tol(target: Target, case: BNCase, values: np.ndarray):
    """Target output on ``values`` (already rounded) and its bound against the reference."""
    module = adapter.build(target, case)
    module.train()
    with torch.no_grad():
        x = to_input(target, values, noncontiguous=case.noncontiguous)
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
    b = rng.normal(0, 4, size=case.channels).reshape(1, -1, 1, 1)
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
    summary="NCHW and channels_last agree",
    bound=Times(2, rounding.bn_forward_tolerance),
    cases=_cases(),
    known=_known,
    applies=_training_only,
)
def measure_layout(target: Target, case: BNCase) -> Measurement:
    """The same values in NCHW and channels_last give the same output."""
    values = make_input(case)
    y0, tol0, _ = _forward_and_tol(target, case, values)
    other = "contiguous" if target.memory_format == "channels_last" else "channels_last"
    twin = dataclasses.replace(target, memory_format=other)
    y1, tol1, _ = _forward_and_tol(twin, case, values)
    c = compare(
        y1,
        y0,
        tol0 + tol1,
        what=f"output in {other} vs {target.memory_format}",
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
            adapter.call(target, module, to_input(target, shard))
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
    x = to_input(target, before, noncontiguous=case.noncontiguous)
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
    shape = {
        "one_value_per_channel": (1, c, 1, 1),
        "wrong_rank": (4, c),
        "wrong_channels": (4, c + 1, 3, 3),
    }[case.kind]
    bn_case = BNCase(shape=(2, c, 1, 1), dtype=target.dtype, seed=case.seed)
    module = adapter.build(target, bn_case)
    module.train()
    values = np.random.default_rng(case.seed).normal(size=shape)
    x = torch.from_numpy(values).to(device=target.device, dtype=target.torch_dtype)
    try:
        with torch.no_grad():
            module(x)  # directly: the adapter's own shape checks must not stand in for the target's
    except (ValueError, RuntimeError, TypeError, AssertionError) as exc:
        if str(exc).strip():
            return Measurement(0.0, f"{case.kind}: raised {type(exc).__name__}: {exc}")
        return Measurement(
            float("inf"), f"{case.kind}: raised {type(exc).__name__} with no message"
        )
    return Measurement(
        float("inf"),
        f"{case.kind}: input of shape {shape} to a "
        f"{c}-channel batch norm in training was accepted silently",
    )


# --- known defects of real implementations ---------------------------------------------------


def _dy_dot_centered_overflows_fp16(case: BNCase) -> bool:
    x, dy = make_input(case), make_grad(case)
    axes = tuple(i for i in range(x.ndim) if i != 1)
    centered = x - x.mean(axis=axes, keepdims=True)
    return bool(np.max(np.abs((dy * centered).sum(axis=axes))) >= 65504.0)


#: Found by varguard on torch 2.13.0 (CPU): the backward of BatchNorm2d on a *non-contiguous*
#: float16 input keeps sum(dy * (x - mean)) in float16, so once it passes 65504 dx comes back
#: as +-inf (the contiguous path is right). Measured: values near the float16 limit, or one
#: outlier of 3.7e4 among 63 values.
FP16_NONCONTIGUOUS_BACKWARD_OVERFLOW = CHECKS.add_defect(
    KnownDefect(
        checks=("batchnorm.backward",),
        applies_to=lambda target: (
            target.factory is torch.nn.BatchNorm2d
            and target.dtype == "float16"
            and target.device == "cpu"
            and target.autocast is None
        ),
        description="torch CPU BatchNorm2d backward returns inf on non-contiguous float16 input "
        "when sum(dy * (x - mean)) exceeds 65504 (it is accumulated in float16)",
        matches=lambda case: (
            case.dtype == "float16" and case.noncontiguous and _dy_dot_centered_overflows_fp16(case)
        ),
        example=BNCase(
            shape=(1, 1, 1, 3),
            dtype="float16",
            distribution="near_float16_max",
            affine=False,
            noncontiguous=True,
        ),
    )
)

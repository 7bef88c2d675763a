"""The row-norm Triton kernels (verify/kernels/triton_norms.py, norms.py) against float64.

LayerNorm, RMSNorm and the fused residual add + RMSNorm, forward and backward (through autograd),
for float32, bfloat16 and float16 activations, row lengths across the tile boundaries of both
schedules (one tile per row up to 1024 elements under the interpreter, Chan-combined tiles
beyond), against the float64 references (reference.layernorm, reference.rmsnorm) on the same
rounded inputs and parameters.

Every bound is theory.rounding's, computed as the checks compute it (verify/checks/layernorm.py,
rmsnorm.py, prenorm.py): layer_norm_forward_tolerance / layer_norm_backward_tolerance (with
row_statistics_error over the reference's mean, variance and bulk_spread) and
rms_norm_forward_tolerance / rms_norm_backward_tolerance, at Precision.of(activation dtype), i.e.
float32 accumulation, as the kernels' float32 statistics; the parameter gradients carried to the
parameters' dtype by stored_tolerance, the fused add's dx = dh + the norm's dx by
residual_add_backward_tolerance. Each comparison names the functions its bound came from.
test_bound_rejects_one_pass_variance shows the layer-norm bound rejects one-pass variance.

CI runs one representative per test (bfloat16, the tile-edge lengths); the slow tier
(pytest -m "slow or not slow") every dtype and length.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import slow_except

from reference import layernorm as ref_ln
from reference import rmsnorm as ref_rms
from theory import rounding
from verify.assertions import compare, worst
from verify.kernels import INTERPRETED, triton_missing
from verify.strategies.common import round_to

pytestmark = pytest.mark.skipif(triton_missing() is not None, reason=str(triton_missing()))

DTYPES = ["float32", "bfloat16", "float16"]
#: Row lengths across the tile boundaries: 1024 is the interpreter's longest one-tile row (a GPU's
#: is 4096), so 1025 and 4097 take the multi-tile schedule, 16384 loops over 16 tiles.
LENGTHS = [1, 2, 3, 127, 128, 129, 1023, 1024, 1025, 4097]
#: Rows for each length: several row counts, few for long rows (the interpreter is slow).
ROWS = {1: 257, 2: 64, 3: 1, 127: 33, 128: 16, 129: 7, 1023: 5, 1024: 3, 1025: 4, 4097: 3}
EPS = 1e-5
LONG = 16384
#: The dtype each test's CI case runs in (the others are in the slow tier): half activations with
#: float32 statistics and parameters, the mixed precision the kernels are written for.
CI_DTYPE = "bfloat16"
#: Row lengths the CI tier keeps: one element, a power of two and one past it, the interpreter's
#: longest one-tile row and one past it (the multi-tile schedule), several tiles and a partial one.
CI_LENGTHS = (1, 128, 129, 1024, 1025, 4097)


def tiered(combos, keep) -> list:
    """Parameter tuples as pytest params, each but those ``keep(*combo)`` selects marked slow
    (slow_except for several arguments): CI runs the representatives, the slow tier every one."""
    slow = pytest.mark.slow
    return [pytest.param(*c, marks=() if keep(*c) else slow) for c in combos]


@pytest.fixture(scope="module")
def kn():
    from verify.kernels import norms

    return norms


def torch_dtype(name: str) -> torch.dtype:
    return getattr(torch, name)


def f64(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float64).numpy()


def tensor(values: np.ndarray, dtype: str, *, grad: bool = False) -> torch.Tensor:
    """Values already rounded to ``dtype`` (round_to), as a tensor of that dtype."""
    return torch.from_numpy(values).to(torch_dtype(dtype)).requires_grad_(grad)


# --- float64 reference and theory.rounding's bounds ------------------------------------------


@dataclass(frozen=True)
class Expected:
    """Exact values of y, dx, dweight, dbias (those that exist), the bound on each, the theory
    functions each bound comes from and the dtype each result is stored in."""

    values: dict
    tols: dict
    bounds: dict
    storage: dict


def expected(
    x: np.ndarray, w: np.ndarray | None, b: np.ndarray | None, dy: np.ndarray, *,
    shape: tuple[int, ...], center: bool, eps: float, act: str, param: str,
    dh: np.ndarray | None = None,
) -> Expected:  # fmt: skip
    """The float64 reference (reference.layernorm / reference.rmsnorm) and theory.rounding's bound
    on each output, computed as verify/checks/layernorm.py, rmsnorm.py and prenorm.py compute them:
    the reference's statistics, ``Precision.of(act)`` (float32 accumulation, as the kernels'
    float32 statistics), the parameter gradients' bounds carried to the parameters' dtype by
    ``stored_tolerance``. ``dh``: the incoming gradient of the fused add's stream h, which the
    kernel adds to the norm's dx (``residual_add_backward_tolerance``, as the pre-norm tail's)."""
    prec = rounding.Precision.of(act)
    n = int(np.prod(shape))
    if center:
        fw = ref_ln.forward(x, shape, weight=w, bias=b, eps=eps)
        stats = {
            "normalized_shape": shape,
            "mean": fw.mean,
            "var": fw.var,
            "eps": eps,
            "prec": prec,
            "spread": rounding.bulk_spread(x.reshape(-1, n), channel_axis=0),
        }
        fwd, bwd = rounding.layer_norm_forward_tolerance, rounding.layer_norm_backward_tolerance
        tol_y = fwd(fw.xhat, fw.y, weight=w, bias=b, **stats)
        dx, dw, db = ref_ln.backward(dy, x, shape, weight=w, eps=eps)
        tdx, tdw, tdb = bwd(fw.xhat, dy, dx, weight=w, **stats)
    else:
        fw = ref_rms.forward(x, shape, weight=w, eps=eps, dtype=act)
        stats = {"normalized_shape": shape, "ms": fw.ms, "eps": eps, "prec": prec}
        fwd, bwd = rounding.rms_norm_forward_tolerance, rounding.rms_norm_backward_tolerance
        tol_y = fwd(fw.xhat, fw.y, weight=w, **stats)
        dx, dw = ref_rms.backward(dy, x, shape, weight=w, eps=eps, dtype=act)
        tdx, tdw = bwd(fw.xhat, dy, dx, weight=w, **stats)
        db = tdb = None
    values, tols = {"y": fw.y, "dx": dx}, {"y": tol_y, "dx": tdx}
    bounds = {"y": fwd, "dx": bwd}
    storage = {"y": act, "dx": act}
    if dh is not None:
        values["dx"] = dx + dh
        tols["dx"] = rounding.residual_add_backward_tolerance(dh, dx, tdx, prec)
        bounds["dx"] = (rounding.residual_add_backward_tolerance, bwd)
    for name, p, value, tol in (("dweight", w, dw, tdw), ("dbias", b, db, tdb)):
        if p is not None:
            values[name] = value
            tols[name] = rounding.stored_tolerance(tol, value, dtype=param, prec=prec)
            bounds[name] = (bwd, rounding.stored_tolerance)
            storage[name] = param
    return Expected(values, tols, bounds, storage)


def comparisons(got: dict, exp: Expected, *, what: str) -> list:
    """Each of the kernel's results against the reference, under its theory bound."""
    assert set(got) == set(exp.values), f"{what}: got {sorted(got)}, expected {sorted(exp.values)}"
    return [
        compare(got[q], exp.values[q], exp.tols[q], what=f"{what} {q}", bound=exp.bounds[q],
                storage=exp.storage[q])
        for q in got
    ]  # fmt: skip


def assert_within(checks: list) -> None:
    c = worst(*checks)
    assert c.ratio <= 1.0, c.message()


def draw(rng, shape, dtype: str, *, mean: float = 0.5, std: float = 2.0) -> np.ndarray:
    return round_to(rng.normal(mean, std, shape), dtype)


def run_norm(
    kn, kind: str, x: np.ndarray, w, b, dy, *, act: str, param: str, shape, eps, **kwargs
) -> dict:
    """The kernel's y and gradients (autograd), float64; w and b (or None) in ``param``."""
    xt = tensor(x, act, grad=True)
    wt, bt = (None if p is None else tensor(p, param, grad=True) for p in (w, b))
    if kind == "layer":
        y = kn.layer_norm(xt, shape, wt, bt, eps, **kwargs)
    else:
        y = kn.rms_norm(xt, shape, wt, eps, **kwargs)
    assert y.dtype == xt.dtype and y.shape == xt.shape and y.is_contiguous()
    y.backward(tensor(dy, act))
    out = {"y": f64(y), "dx": f64(xt.grad)}
    if wt is not None:
        assert wt.grad.dtype == wt.dtype
        out["dweight"] = f64(wt.grad)
    if bt is not None:
        out["dbias"] = f64(bt.grad)
    return out


def check_norm(
    kn, kind: str, *, act: str, param: str, rows: int, shape: tuple[int, ...], seed,
    weight: bool = True, bias: bool = True, mean: float = 0.5, std: float = 2.0,
    eps: float = EPS, **kwargs,
) -> list:  # fmt: skip
    """Comparisons of one LayerNorm / RMSNorm forward + backward with float64."""
    rng = np.random.default_rng(seed)
    center = kind == "layer"
    x = draw(rng, (rows, *shape), act, mean=mean, std=std)
    w = round_to(rng.normal(1.0, 0.5, shape), param) if weight else None
    b = round_to(rng.normal(0.0, 0.5, shape), param) if (bias and center) else None
    dy = draw(rng, x.shape, act, mean=0.0, std=1.0)
    got = run_norm(kn, kind, x, w, b, dy, act=act, param=param, shape=shape, eps=eps, **kwargs)
    exp = expected(x, w, b, dy, shape=shape, center=center, eps=eps, act=act, param=param)
    return comparisons(got, exp, what=f"{kind} norm")


# --- LayerNorm and RMSNorm across row lengths ---------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "d"),
    tiered(
        [(t, d) for t in DTYPES for d in LENGTHS],
        lambda t, d: (t == CI_DTYPE and d in CI_LENGTHS) or d == 1025,
    ),
)
@pytest.mark.parametrize("kind", ["layer", "rms"])
def test_norm_matches_float64(kn, kind, dtype, d):
    """y, dx, dweight, dbias against float64; float32 parameters (mixed precision for half)."""
    assert_within(
        check_norm(
            kn,
            kind,
            act=dtype,
            param="float32",
            rows=ROWS[d],
            shape=(d,),
            seed=[len(kind), len(dtype), d],
        )  # fmt: skip
    )


@pytest.mark.parametrize("dtype", slow_except(DTYPES, lambda t: t == CI_DTYPE))
@pytest.mark.parametrize("kind", ["layer", "rms"])
def test_long_rows(kn, kind, dtype):
    """A row of 16384 elements: 16 tiles Chan-combined, two passes, the column kernel."""
    assert_within(
        check_norm(
            kn, kind, act=dtype, param="float32", rows=2, shape=(LONG,), seed=[7, len(dtype)]
        )
    )


@pytest.mark.parametrize(
    ("dtype", "d"),
    tiered(
        [(t, d) for t in ("bfloat16", "float16") for d in (129, 1025)],
        lambda t, d: (t, d) in (("bfloat16", 1025), ("float16", 129)),
    ),
)
@pytest.mark.parametrize("kind", ["layer", "rms"])
def test_parameters_in_activation_dtype(kn, kind, dtype, d):
    """Parameters stored in the activations' half dtype (module.to(dtype)): their gradients come
    back in it, rounded once from float32."""
    assert_within(
        check_norm(kn, kind, act=dtype, param=dtype, rows=5, shape=(d,), seed=[3, len(dtype), d])
    )


@pytest.mark.parametrize("affine", ["none", "weight-only"])
@pytest.mark.parametrize("d", slow_except([3, 1025], lambda d: d == 1025))
@pytest.mark.parametrize("kind", ["layer", "rms"])
def test_without_affine_parameters(kn, kind, d, affine):
    """elementwise_affine=False (no weight, no bias) and LayerNorm(bias=False)."""
    assert_within(
        check_norm(
            kn,
            kind,
            act="bfloat16",
            param="float32",
            rows=6,
            shape=(d,),
            seed=[4, d, len(affine)],
            weight=affine != "none",
            bias=False,
        )  # fmt: skip
    )


@pytest.mark.parametrize("dtype", slow_except(DTYPES, lambda t: t == CI_DTYPE))
@pytest.mark.parametrize("kind", ["layer", "rms"])
def test_two_normalized_dims(kn, kind, dtype):
    """normalized_shape of two trailing dims, flattened to D = 3 * 43 = 129 per row."""
    assert_within(
        check_norm(
            kn, kind, act=dtype, param="float32", rows=4, shape=(3, 43), seed=[5, len(dtype)]
        )
    )


@pytest.mark.parametrize(
    ("dtype", "kappa", "d"),
    tiered(
        [
            (t, k, d)
            for t, k in (("float32", 1e3), ("bfloat16", 1e3), ("float16", 1e3), ("float32", 1e4))
            for d in (128, 1025, LONG)
        ],
        lambda t, k, d: k == 1e4 or (t == CI_DTYPE and d == 1025),
    ),
)
def test_layer_norm_large_mean(kn, dtype, kappa, d):
    """|mean|/std = kappa (1e3; 1e4 in float32, where DESIGN's strategies go): cancellation in
    the centring, where one-pass variance fails; the tolerance scales with kappa, not kappa^2.
    (In half precision the rounded data's own std is larger: kappa is measured from it.)"""
    assert_within(
        check_norm(
            kn,
            "layer",
            act=dtype,
            param="float32",
            rows=3 if d < LONG else 1,
            shape=(d,),
            seed=[6, len(dtype), d, int(kappa)],
            mean=kappa,
            std=1.0,
        )  # fmt: skip
    )


@pytest.mark.parametrize("act", slow_except(DTYPES, lambda t: t == CI_DTYPE))
@pytest.mark.parametrize("kind", ["layer", "rms"])
def test_forced_schedules(kn, kind, act):
    """Short rows through the multi-tile schedule (16 elements per tile: 9 tiles of a row of 129,
    the last one 1 element) and the parameter gradients split into 3 ranges of rows (8, 8, 3)."""
    assert_within(
        check_norm(
            kn,
            kind,
            act=act,
            param="float32",
            rows=19,
            shape=(129,),
            seed=[8, len(act)],
            block_d=16,
            programs=3,
        )  # fmt: skip
    )


@pytest.mark.parametrize(
    ("kappa", "factor"),
    [(1e3, 1.0), (1e4, 10.0)],
)
def test_bound_rejects_one_pass_variance(kappa, factor):
    """The bound is not blind: float32 LayerNorm with one-pass variance E[x^2] - E[x]^2 (a known
    bug; error ~ u kappa^2 var, theory.rounding.one_pass_variance_error) fails
    layer_norm_forward_tolerance (~ sqrt(D) u kappa var), at kappa 1e4 (DESIGN's float32 kappa)
    by far more than 10x (measured: 700x). torch sums E[x^2] by cascades, far more accurately
    than the model's sqrt(D) u, so at kappa 1e3 the mutant's error is close to the bound (2.1x
    measured: a row with a few coincident values still rounds its sum randomly,
    theory.rounding.bulk_spread)."""
    rng = np.random.default_rng(9)
    d = 1024
    x = round_to(rng.normal(kappa, 1.0, (4, d)), "float32")
    xt = torch.from_numpy(x).float()
    mean = xt.mean(dim=1, keepdim=True)
    var = (xt * xt).mean(dim=1, keepdim=True) - mean * mean
    y = (xt - mean) / torch.sqrt(var.clamp_min(0) + EPS)
    exp = expected(x, None, None, np.zeros_like(x), shape=(d,), center=True, eps=EPS,
                   act="float32", param="float32")  # fmt: skip
    c = compare(f64(y), exp.values["y"], exp.tols["y"], what="one-pass LayerNorm y",
                bound=exp.bounds["y"])  # fmt: skip
    assert c.ratio > factor, c.message()


# --- eps=None: what torch's rms_norm does -----------------------------------------------------


@pytest.mark.parametrize("dtype", slow_except(DTYPES, lambda t: t == CI_DTYPE))
def test_rms_eps_none_is_torchs(kn, dtype):
    """eps=None: torch 2.13's rms_norm uses finfo of the dtype it computes in (float32 for all
    three), not finfo(x.dtype) as its docstring says (2^-7 for bfloat16). Rows with
    mean(x^2) ~ 2^-24, where the choice moves y by a factor ~2 (float32 eps) to ~200 (bfloat16's):
    torch's output picks one candidate, the kernels must pick the same."""
    rng = np.random.default_rng([10, len(dtype)])
    shape = (4, 64)
    x = round_to(rng.normal(0.0, 2.0**-12, shape), dtype)
    xt = tensor(x, dtype)
    cands = {
        "finfo(float32)": torch.finfo(torch.float32).eps,
        "finfo(dtype)": torch.finfo(xt.dtype).eps,
    }
    theirs = f64(F.rms_norm(xt, (64,), eps=None))
    prec = rounding.Precision.of(dtype)

    def bounded(eps: float) -> tuple[np.ndarray, np.ndarray]:
        """The float64 reference's y with this eps and rms_norm_forward_tolerance on it."""
        fw = ref_rms.forward(x, (64,), eps=eps)
        tol = rounding.rms_norm_forward_tolerance(
            fw.xhat, fw.y, normalized_shape=(64,), ms=fw.ms, eps=eps, prec=prec
        )
        return fw.y, tol

    bound = rounding.rms_norm_forward_tolerance
    fits = {}
    for name, e in cands.items():
        ref, tol = bounded(e)
        fits[name] = compare(theirs, ref, tol, what=f"torch eps=None vs {name}", bound=bound)
    assert fits["finfo(float32)"].ratio <= 1.0, fits["finfo(float32)"].message()
    if dtype != "float32":
        assert fits["finfo(dtype)"].ratio > 10.0, "the eps candidates should be told apart"
    assert kn.default_rms_eps(xt.dtype) == cands["finfo(float32)"]
    ref, tol = bounded(kn.default_rms_eps(xt.dtype))
    ours = [kn.rms_norm(xt, 64), kn.TritonRMSNorm(64, elementwise_affine=False)(xt),
            kn.add_rms_norm(xt, torch.zeros_like(xt), 64)[0]]  # fmt: skip
    assert_within([compare(f64(o), ref, tol, what="eps=None", bound=bound, storage=dtype)
                   for o in ours])  # fmt: skip


# --- the fused residual add + RMSNorm -------------------------------------------------------------


@pytest.mark.parametrize("inplace", [False, True], ids=["new", "inplace"])
@pytest.mark.parametrize("d", [1, 129, 1025, 4097])
@pytest.mark.parametrize("dtype", slow_except(DTYPES, lambda t: t == CI_DTYPE))
def test_fused_add_rms_norm(kn, dtype, d, inplace):
    """h = x + residual is written rounded to the dtype, bit for bit torch's x + residual, in
    place or as a new tensor; y = rms_norm(h) of that rounded h; dx = dresidual = dh + J^T dy."""
    rng = np.random.default_rng([11, len(dtype), d, inplace])
    rows = 6 if d < 4097 else 2
    x = draw(rng, (rows, d), dtype, mean=0.0, std=1.0)
    res = draw(rng, (rows, d), dtype, mean=0.3, std=3.0)
    w = round_to(rng.normal(1.0, 0.5, d), "float32")
    dy = draw(rng, x.shape, dtype, mean=0.0, std=1.0)
    dh = draw(rng, x.shape, dtype, mean=0.0, std=1.0)
    xt = tensor(x, dtype, grad=True)
    base = tensor(res, dtype, grad=True)
    rt = base * 1  # a non-leaf: in-place writes into it may be differentiated through
    expect_h = xt.detach() + rt.detach()
    wt = torch.from_numpy(w).float().requires_grad_(True)
    y, h = kn.add_rms_norm(xt, rt, d, wt, inplace=inplace)
    assert torch.equal(h, expect_h), "h must be torch's x + residual, rounded once"
    assert (h is rt) == inplace and torch.equal(rt, expect_h if inplace else base.detach())
    torch.autograd.backward([y, h], [tensor(dy, dtype), tensor(dh, dtype)])
    assert torch.equal(xt.grad, base.grad), "x and residual get the same gradient"

    # The reference normalises the same rounded h (checked bit for bit above).
    eps = kn.default_rms_eps(xt.dtype)
    exp = expected(f64(h), w, None, dy, shape=(d,), center=False, eps=eps, act=dtype,
                   param="float32", dh=dh)  # fmt: skip
    got = {"y": f64(y), "dx": f64(xt.grad), "dweight": f64(wt.grad)}
    assert_within(comparisons(got, exp, what="fused add + RMSNorm"))


@pytest.mark.parametrize("block_d", [None, 16], ids=["one-tile", "multi-tile"])
@pytest.mark.parametrize("dtype", slow_except(["bfloat16", "float16"], lambda t: t == CI_DTYPE))
def test_fused_add_normalises_the_rounded_sum(kn, dtype, block_d):
    """Statistics of the rounded h, not of the float32 sum (vLLM's fused_add_rms_norm).

    Three in four elements are 1 + r, with r just below half an ulp of 1: h rounds to 1 there;
    the rest are 1 + 0. The rounded h is all ones, so y = 1/sqrt(1 + eps) rounds to 1.0 exactly.
    From the unrounded sum, mean(s^2) ~ 1 + 1.5 (3/4) r, and the exact ones come out a full ulp
    below 1: a tolerance would hide that, an exact comparison does not."""
    t = torch_dtype(dtype)
    half_ulp = torch.finfo(t).eps / 2  # of 1
    r = torch.tensor(half_ulp * (1 - half_ulp), dtype=torch.float64)  # p ones: representable
    assert float(r.to(t)) == float(r) and float((1 + r).to(t)) == 1.0
    d = 128
    res = torch.zeros(3, d, dtype=t)
    res[:, : 3 * d // 4] = r.to(t)
    y, h = kn.add_rms_norm(torch.ones(3, d, dtype=t), res, d, block_d=block_d)
    assert torch.equal(h, torch.ones_like(h))
    assert torch.equal(y, torch.ones_like(y)), f"y != 1 at {int((y != 1).sum())} elements"


def test_fused_add_refuses_overwriting_a_leaf_and_mismatches(kn):
    leaf = torch.randn(2, 8, requires_grad=True)
    before = leaf.detach().clone()
    with pytest.raises(RuntimeError, match="leaf requiring grad"):
        kn.add_rms_norm(torch.randn(2, 8), leaf, 8, inplace=True)
    assert torch.equal(leaf.detach(), before), "refused before writing"
    with pytest.raises(ValueError, match="same shape and dtype"):
        kn.add_rms_norm(torch.randn(2, 8), torch.randn(2, 8, dtype=torch.bfloat16), 8)
    with pytest.raises(ValueError, match="not contiguous"):
        kn.add_rms_norm(torch.randn(2, 8), torch.randn(8, 2).t(), 8, inplace=True)


# --- the drop-ins' contract ----------------------------------------------------------------------


def test_modules_are_drop_ins(kn):
    """torch's constructors and state: state dicts load both ways, bias=False and
    elementwise_affine=False give the same parameters; a non-contiguous input works."""
    nn = torch.nn
    pairs = [
        (kn.TritonLayerNorm, nn.LayerNorm, ((3, 5),), {"eps": 1e-3}),
        (kn.TritonLayerNorm, nn.LayerNorm, (5,), {"bias": False}),
        (kn.TritonLayerNorm, nn.LayerNorm, (5,), {"elementwise_affine": False}),
        (kn.TritonRMSNorm, nn.RMSNorm, (5,), {}),
        (kn.TritonRMSNorm, nn.RMSNorm, (5,), {"eps": 1e-2, "elementwise_affine": False}),
        (kn.TritonAddRMSNorm, nn.RMSNorm, (5,), {"dtype": torch.bfloat16}),
    ]
    for ours_cls, theirs_cls, args, kwargs in pairs:
        ours, theirs = ours_cls(*args, **kwargs), theirs_cls(*args, **kwargs)
        assert [(n, p.shape, p.dtype) for n, p in ours.named_parameters()] == [
            (n, p.shape, p.dtype) for n, p in theirs.named_parameters()
        ]
        ours.load_state_dict(theirs.state_dict())
        theirs.load_state_dict(ours.state_dict())
    ln = kn.TritonLayerNorm(5)
    x = torch.randn(5, 4).t()  # rows of 5 with stride 4: made contiguous inside
    torch.testing.assert_close(ln(x), torch.nn.LayerNorm(5)(x), rtol=1e-5, atol=1e-5)
    add = kn.TritonAddRMSNorm(4, inplace=True)
    assert "inplace=True" in repr(add)
    res = torch.randn(2, 4)
    _, h = add(torch.randn(2, 4), res)
    assert h is res


@pytest.mark.parametrize(
    ("module", "shape", "x_shape"),
    [("LayerNorm", (4,), (2, 3)), ("LayerNorm", (2, 4, 4), (2, 4)), ("RMSNorm", (4,), (2, 3))],
)
def test_wrong_trailing_shape_raises_like_torch(kn, module, shape, x_shape):
    """A RuntimeError naming the expected shape, as torch's; LayerNorm's word for word (torch's
    RMSNorm message writes [*4] for [*, 4]: ours keeps LayerNorm's form)."""
    x = torch.randn(x_shape)
    with pytest.raises(RuntimeError) as ours:
        getattr(kn, f"Triton{module}")(shape)(x)
    with pytest.raises(RuntimeError) as theirs:
        getattr(torch.nn, module)(shape)(x)
    dims = ", ".join(map(str, shape))
    assert f"expected input with shape [*, {dims}]" in str(ours.value)
    if module == "LayerNorm":
        assert str(ours.value) == str(theirs.value)


def test_wrong_weight_shape_and_unsupported_dtypes(kn):
    x = torch.randn(2, 4)
    with pytest.raises(RuntimeError) as theirs:
        F.layer_norm(x, (4,), torch.ones(3))
    with pytest.raises(RuntimeError) as ours:
        kn.layer_norm(x, (4,), torch.ones(3))
    assert str(ours.value) == str(theirs.value)
    for module in (kn.TritonLayerNorm(4), kn.TritonRMSNorm(4)):
        with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
            module.double()(x.double())
    with pytest.raises(TypeError, match="float32, float16 or bfloat16 parameters"):
        kn.layer_norm(x, (4,), torch.ones(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="block_d=100"):
        kn.layer_norm(x, (4,), block_d=100)
    with pytest.raises(ValueError, match="programs=0"):
        kn.rms_norm(x, (4,), programs=0)


def test_empty_input_like_torch(kn):
    x = torch.randn(0, 6, requires_grad=True)
    w = torch.ones(6, requires_grad=True)
    y = kn.layer_norm(x, 6, w, None)
    y.sum().backward()
    assert y.shape == x.shape and torch.equal(w.grad, torch.zeros(6))


def test_schedules_are_taken():
    from verify.kernels.triton_norms import row_config

    assert row_config(7, 129).one_block
    assert not row_config(7, 129, block_d=16).one_block
    assert row_config(37, 129, programs=3).programs == 3
    assert row_config(2, 129, programs=3).programs == 2  # too few rows for three ranges
    if INTERPRETED:
        assert row_config(4, 1024).one_block and not row_config(4, 1025).one_block


# --- compiled for a GPU ------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def test_norm_kernels_compile_for_a_gpu():
    """The interpreter runs Python; Triton's compiler is stricter. Every norm kernel, both
    schedules, float32/bfloat16/float16, each flag on and off, compiles to sm_90 code here."""
    clean = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, "-m", "verify.kernels.gpu_compile", "triton_norms"],
        cwd=ROOT,
        env={**clean, "TRITON_INTERPRET": "0"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    assert "triton_norms: 60/60 compiled" in done.stdout

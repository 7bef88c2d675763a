"""reference.layernorm / rmsnorm / groupnorm / prenorm against torch in float64, their defining
moments, exact arithmetic, and correctly rounded storage."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reference import groupnorm as gn
from reference import layernorm as ln
from reference import prenorm as pn
from reference import rmsnorm as rms

RTOL = 1e-12


def _assert_rel(actual, expected, rtol=RTOL, what="", scale=None):
    """max |actual - expected| <= rtol * scale, by default scale = max |expected| (a norm-wise
    relative error)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    err = np.max(np.abs(actual - expected)) if actual.size else 0.0
    if scale is None:
        scale = np.max(np.abs(expected)) if expected.size else 0.0
    assert err <= rtol * scale, f"{what}: max abs diff {err:.3e} > {rtol:g} * {scale:.3e}"


def _data(shape, *, loc=0.0, scale=1.0, seed=0):
    return np.random.default_rng(seed).normal(loc, scale, size=shape)


t = torch.from_numpy

# -- layer norm ------------------------------------------------------------------------------------

LN_CASES = [((5, 7), (7,)), ((2, 3, 4), (3, 4)), ((4, 1), (1,)), ((3, 1025), (1025,)), ((6,), (6,))]


@pytest.mark.parametrize(("shape", "norm_shape"), LN_CASES)
def test_layer_norm_forward_matches_torch(shape, norm_shape):
    x = _data(shape, loc=1.5, scale=3.0, seed=1)
    w, b = _data(norm_shape, seed=2), _data(norm_shape, seed=3)
    fw = ln.forward(x, norm_shape, weight=w, bias=b, eps=1e-3)
    _assert_rel(fw.y, F.layer_norm(t(x), norm_shape, t(w), t(b), eps=1e-3).numpy(), what="y")
    dims = tuple(range(len(shape) - len(norm_shape), len(shape)))
    var, mean = torch.var_mean(t(x), dim=dims, correction=0)
    _assert_rel(fw.mean, mean.numpy(), what="mean")
    _assert_rel(fw.var, var.numpy(), what="var")
    _assert_rel(fw.rstd, 1 / np.sqrt(var.numpy() + 1e-3), what="rstd")


@pytest.mark.parametrize(("shape", "norm_shape"), [c for c in LN_CASES if c[1] != (1,)])
def test_layer_norm_backward_matches_torch_autograd(shape, norm_shape):
    x, dy = _data(shape, loc=-2.0, scale=0.5, seed=4), _data(shape, seed=5)
    w, b = _data(norm_shape, seed=6), _data(norm_shape, seed=7)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    F.layer_norm(xt, norm_shape, wt, bt, eps=1e-5).backward(t(dy))
    dx, dweight, dbias = ln.backward(dy, x, norm_shape, weight=w, eps=1e-5)
    # dx is a difference of O(n |g| rstd) terms: relative to the largest term, not to |dx|.
    term = np.max(np.abs(dy.reshape(-1, w.size) * w.reshape(-1))) * np.max(
        ln.forward(x, norm_shape).rstd
    )
    _assert_rel(dx, xt.grad.numpy(), rtol=1e-11, what="dx", scale=term)
    _assert_rel(dweight, wt.grad.numpy(), what="dweight")
    _assert_rel(dbias, bt.grad.numpy(), what="dbias")


def test_rows_of_one_value_have_exactly_zero_gradients():
    """n = 1: xhat = 0 identically, so dx = dweight = 0 exactly (torch's are rounding noise of
    x - mean, times rstd = 1/sqrt(eps))."""
    x, dy = _data((4, 1), loc=3.0, seed=33), _data((4, 1), seed=34)
    xt = torch.tensor(x, requires_grad=True)
    F.layer_norm(xt, (1,), eps=1e-5).backward(t(dy))
    dx, dweight, dbias = ln.backward(dy, x, (1,), eps=1e-5)
    assert not dx.any() and not dweight.any()
    assert np.array_equal(dbias, [math.fsum(dy[:, 0])])
    assert np.max(np.abs(xt.grad.numpy())) < 1e-11


def test_layer_norm_output_moments_per_row():
    """Without affine each row of y has mean 0 and variance var/(var+eps) (theory.layernorm)."""
    x = _data((6, 50), loc=4.0, scale=0.01, seed=8)  # var ~ 1e-4: eps = 1e-3 shows
    fw = ln.forward(x, (50,), eps=1e-3)
    for row, mean, var, rstd in zip(fw.y, fw.mean, fw.var, fw.rstd, strict=True):
        mean_y = math.fsum(row) / 50
        # the rounding of the mean (u |mean|) shifts every xhat by u |mean| rstd
        assert abs(mean_y) <= 4 * 2.0**-53 * (abs(mean) * rstd + 1)
        assert math.fsum((row - mean_y) ** 2) / 50 == pytest.approx(var / (var + 1e-3), rel=RTOL)


def test_layer_norm_variance_exact_on_ill_conditioned_rows():
    """Two-pass + fsum: a few u from the exact rational variance at kappa ~ 1e6."""
    ints = np.random.default_rng(9).integers(-1000, 1000, size=4000)
    x = (1e6 + ints * 2.0**-10).reshape(1, -1)  # exactly representable
    fw = ln.forward(x, (4000,))
    vals = [Fraction(float(v)) for v in x.ravel()]
    mean = sum(vals) / len(vals)
    exact = sum((v - mean) ** 2 for v in vals) / len(vals)
    assert abs(Fraction(float(fw.var[0])) - exact) / exact < 8 * 2.0**-53


def test_layer_norm_of_a_large_tensor_is_quick_and_right():
    x = _data((8, 16384), loc=100.0, seed=10).astype(np.float32)
    fw = ln.forward(x, (16384,))
    _assert_rel(fw.y, F.layer_norm(t(x).double(), (16384,)).numpy(), what="y")


def test_constant_row_gives_bias():
    fw = ln.forward(np.full((2, 5), 3.25), (5,), bias=np.arange(5.0))
    assert np.all(fw.var == 0) and np.all(fw.xhat == 0)
    assert np.array_equal(fw.y, np.tile(np.arange(5.0), (2, 1)))


# -- RMSNorm ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("shape", "norm_shape"), LN_CASES)
def test_rms_norm_forward_and_backward_match_torch(shape, norm_shape):
    x, dy = _data(shape, loc=0.7, scale=2.0, seed=11), _data(shape, seed=12)
    w = _data(norm_shape, seed=13)
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    y = F.rms_norm(xt, norm_shape, wt, eps=1e-6)
    y.backward(t(dy))
    fw = rms.forward(x, norm_shape, weight=w, eps=1e-6)
    _assert_rel(fw.y, y.detach().numpy(), what="y")
    dims = tuple(range(len(shape) - len(norm_shape), len(shape)))
    _assert_rel(fw.ms, (t(x) ** 2).mean(dim=dims).numpy(), what="ms")
    dx, dweight = rms.backward(dy, x, norm_shape, weight=w, eps=1e-6)
    _assert_rel(dx, xt.grad.numpy(), rtol=1e-11, what="dx")
    _assert_rel(dweight, wt.grad.numpy(), what="dweight")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16", "float64"])
def test_rms_norm_eps_none_is_torchs(dtype):
    """eps=None with dtype= reproduces torch's eps=None on inputs where eps decides y."""
    scale = 1e-8 if dtype == "float64" else 1e-3
    x32 = (_data((3, 16), scale=scale, seed=14)).astype(np.float32)
    xt = t(x32).to(getattr(torch, dtype))
    got = F.rms_norm(xt, (16,), eps=None).double().numpy()
    fw = rms.forward(xt, (16,), dtype=dtype)
    u = {"float64": 2**-53, "float32": 2**-24, "bfloat16": 2**-8, "float16": 2**-11}[dtype]
    np.testing.assert_allclose(got, fw.y, rtol=8 * u, atol=0)
    with pytest.raises(ValueError, match="eps=None needs dtype="):
        rms.forward(x32, (16,))


def test_rms_norm_mean_square_is_correctly_rounded():
    x = np.random.default_rng(15).normal(size=(1, 3000)).astype(np.float32)
    exact = sum(Fraction(float(v)) ** 2 for v in x.ravel()) / 3000
    assert Fraction(float(rms.forward(x, (3000,), eps=0.0).ms[0])) == pytest.approx(
        exact, rel=1e-16
    )


# -- group norm ------------------------------------------------------------------------------------

GN_CASES = [((3, 6, 2, 3), 2), ((2, 6, 5), 3), ((4, 4), 2), ((2, 8, 3, 3), 8), ((1, 3, 2, 2, 2), 1)]


@pytest.mark.parametrize(("shape", "groups"), GN_CASES)
def test_group_norm_forward_and_backward_match_torch(shape, groups):
    x, dy = _data(shape, loc=3.0, scale=0.5, seed=16), _data(shape, seed=17)
    c = shape[1]
    w, b = _data((c,), seed=18), _data((c,), seed=19)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    y = F.group_norm(xt, groups, wt, bt, eps=1e-5)
    y.backward(t(dy))
    fw = gn.forward(x, groups, weight=w, bias=b, eps=1e-5)
    _assert_rel(fw.y, y.detach().numpy(), what="y")
    var, mean = torch.var_mean(t(x).reshape(shape[0], groups, -1), dim=-1, correction=0)
    _assert_rel(fw.mean, mean.numpy(), what="mean")
    _assert_rel(fw.var, var.numpy(), what="var")
    dx, dweight, dbias = gn.backward(dy, x, groups, weight=w, eps=1e-5)
    _assert_rel(dx, xt.grad.numpy(), rtol=1e-11, what="dx")
    _assert_rel(dweight, wt.grad.numpy(), what="dweight")
    _assert_rel(dbias, bt.grad.numpy(), what="dbias")


def test_one_group_is_layer_norm_of_each_sample():
    x = _data((3, 4, 5), loc=1.0, seed=20)
    g = gn.forward(x, 1, eps=1e-4)
    layer = ln.forward(x, (4, 5), eps=1e-4)
    assert np.array_equal(g.xhat, layer.xhat)


# -- the fused pre-norm tail -----------------------------------------------------------------------


def test_round_to_storage_is_numpys_rounding_for_float32_and_float16():
    rng = np.random.default_rng(21)
    a = rng.normal(size=20000) * 10.0 ** rng.uniform(-9, 6, size=20000)
    a = np.concatenate([a, [0.0, -0.0, 65519.99, 65520.0, 3.5e38, -1e-9, np.inf]])
    with np.errstate(over="ignore"):
        for dtype, np_type in (("float32", np.float32), ("float16", np.float16)):
            assert np.array_equal(
                pn.round_to_storage(a, dtype), a.astype(np_type).astype(np.float64)
            )


def test_round_to_storage_bfloat16_rounds_once():
    rng = np.random.default_rng(22)
    a32 = (rng.normal(size=20000) * 10.0 ** rng.uniform(-30, 30, size=20000)).astype(np.float32)
    # from float32 values torch's cast rounds once: the two must agree
    expected = t(a32).to(torch.bfloat16).double().numpy()
    assert np.array_equal(pn.round_to_storage(a32.astype(np.float64), "bfloat16"), expected)
    # from float64, torch rounds twice (through float32); the reference does not
    v = np.array([1 + 2.0**-8 + 2.0**-30])
    assert pn.round_to_storage(v, "bfloat16")[0] == 1 + 2.0**-7
    assert t(v).to(torch.bfloat16).item() == 1.0


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_fused_add_rms_norm_stores_the_rounded_stream_and_normalises_it(dtype):
    tdt = getattr(torch, dtype)
    x = t(_data((4, 64), scale=0.1, seed=23)).to(tdt)
    r = t(_data((4, 64), loc=1.0, scale=3.0, seed=24)).to(tdt)
    w = _data((64,), seed=25)
    out = pn.add_rms_norm(x, r, (64,), weight=w, storage_dtype=dtype)
    # torch's own add in the storage dtype is one correct rounding of the exact sum
    assert np.array_equal(out.residual_out, (x + r).double().numpy())
    assert np.array_equal(out.y, rms.forward(out.residual_out, (64,), weight=w, dtype=dtype).y)
    # and that is not the norm of the exact sum (the difference is the stream's rounding)
    exact = rms.forward(x.double() + r.double(), (64,), weight=w, dtype=dtype).y
    assert dtype == "float32" or not np.array_equal(out.y, exact)


def test_fused_add_layer_norm_forward():
    x, r = _data((3, 10), seed=26), _data((3, 10), seed=27)
    out = pn.add_layer_norm(x, r, (10,), bias=np.ones(10), storage_dtype="float64")
    _assert_rel(out.y, F.layer_norm(t(x + r), (10,), bias=torch.ones(10, dtype=torch.float64)))
    assert np.array_equal(out.residual_out, x + r)


@pytest.mark.parametrize("norm", ["rms", "layer"])
@pytest.mark.parametrize("with_dres", [True, False])
def test_fused_backward_matches_torch_autograd(norm, with_dres):
    shape = (5, 12)
    x, r, dy, dres = (_data(shape, seed=s) for s in (28, 29, 30, 31))
    w = _data((12,), seed=32)
    xt, rt, wt = (torch.tensor(a, requires_grad=True) for a in (x, r, w))
    res = xt + rt
    if norm == "rms":
        y = F.rms_norm(res, (12,), wt, eps=1e-6)
    else:
        y = F.layer_norm(res, (12,), wt, eps=1e-6)
    loss = (t(dy) * y).sum() + ((t(dres) * res).sum() if with_dres else 0)
    loss.backward()
    kw = {"dresidual_out": dres if with_dres else None, "weight": w, "eps": 1e-6}
    if norm == "rms":
        dx, dr, dweight = pn.add_rms_norm_backward(dy, x, r, (12,), storage_dtype="float64", **kw)
    else:
        dx, dr, dweight, dbias = pn.add_layer_norm_backward(
            dy, x, r, (12,), storage_dtype="float64", **kw
        )
        _assert_rel(dbias, dy.sum(axis=0), what="dbias")
    _assert_rel(dx, xt.grad.numpy(), rtol=1e-11, what="dx")
    _assert_rel(dr, rt.grad.numpy(), rtol=1e-11, what="dresidual")
    _assert_rel(dweight, wt.grad.numpy(), what="dweight")
    dr[0, 0] += 1.0  # two arrays, not one array twice
    assert dx[0, 0] != dr[0, 0]


# -- argument errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda: ln.forward(np.ones((2, 3)), (4,)), r"trailing dimensions are not"),
        (lambda: ln.forward(np.ones((2, 3)), ()), r"normalized_shape=\(\)"),
        (lambda: ln.forward(np.ones((2, 3)), (3,), weight=np.ones(2)), r"weight must have shape"),
        (lambda: ln.forward(np.ones((2, 3)), (3,), eps=-1.0), r"eps=-1.0"),
        (lambda: ln.forward(np.ones((2, 3), complex), (3,)), "real"),
        (lambda: ln.backward(np.ones((2, 2)), np.ones((2, 3)), (3,)), "dy must have the shape"),
        (lambda: rms.forward(np.ones((2, 3)), (3,), eps=float("nan")), "eps=nan"),
        (lambda: rms.forward(np.ones((2, 3)), (3,), dtype="int8"), "dtype='int8'"),
        (lambda: gn.forward(np.ones(4), 2), "rank >= 2"),
        (lambda: gn.forward(np.ones((2, 6)), 4), "does not divide"),
        (lambda: gn.forward(np.ones((2, 6)), 0), "num_groups=0"),
        (lambda: gn.forward(np.ones((2, 6)), 2, weight=np.ones(3)), r"shape \(6,\)"),
        (lambda: pn.round_to_storage([1.0], "int8"), "storage dtype"),
        (lambda: pn.add_rms_norm(np.ones(3), np.ones(4), (3,), storage_dtype="float32"), "same"),
        (
            lambda: pn.add_rms_norm_backward(
                np.ones(3),
                np.ones(3),
                np.ones(3),
                (3,),
                dresidual_out=np.ones(2),
                eps=1e-6,
                storage_dtype="float32",
            ),
            "dresidual_out",
        ),
    ],
)
def test_bad_input_raises_clear_errors(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()

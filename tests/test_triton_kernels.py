"""The project's Triton kernels (verify/kernels) pass the suite's checks, and the fused residual
tail matches a float64 reference within the error model.

Without a GPU everything here runs under Triton's interpreter (verify.kernels sets
TRITON_INTERPRET=1 before triton is imported), on CPU tensors: CI verifies the kernels too.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import slow_except

from reference import batchnorm as ref
from theory import rounding
from verify.assertions import EXACT, compare, worst
from verify.checks import checks_for
from verify.checks.base import run_check
from verify.kernels import INTERPRETED, triton_missing
from verify.profiles import get_profile
from verify.result import Status
from verify.strategies.common import round_to
from verify.targets import triton as triton_targets

pytestmark = pytest.mark.skipif(triton_missing() is not None, reason=str(triton_missing()))

QUICK = get_profile("quick")
BN_TARGETS = [t for t in triton_targets.builtin() if t.family == "batchnorm"]
TAIL_TARGET = next(t for t in triton_targets.builtin() if t.family == "residual")


@pytest.fixture(scope="module")
def kbn():
    from verify.kernels import batchnorm

    return batchnorm


def _assert_passed(result) -> None:
    assert result.status == Status.PASSED, (
        f"{result.check} on {result.target}: {result.status}\n{result.message}\n"
        f"counterexample: {result.counterexample}"
    )


# --- the suite's own checks ----------------------------------------------------------------------


def test_interpreter_without_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the kernels run natively")
    assert os.environ.get("TRITON_INTERPRET") == "1"
    assert INTERPRETED
    assert all(t.device == "cpu" and t.unavailable() is None for t in triton_targets.builtin())


#: The checks the plain kernel runs in CI (each path its code takes: statistics, backward,
#: running statistics, eval, layouts); every check in the slow tier.
CI_CHECKS = ("forward", "backward", "running_stats", "eval", "layout")


@pytest.mark.parametrize(
    "check",
    slow_except(checks_for("batchnorm"), lambda c: c.name.removeprefix("batchnorm.") in CI_CHECKS),
    ids=lambda c: c.name,
)
@pytest.mark.parametrize(
    "target", slow_except(BN_TARGETS, lambda t: t.name == "triton-bn"), ids=lambda t: t.name
)  # the plain kernel in CI; its variants (layouts, dtypes, split schedule) in the slow tier
def test_batchnorm_check_passes(target, check):
    _assert_passed(run_check(check, target, QUICK, seed=0))


@pytest.mark.parametrize("check", checks_for("residual"), ids=lambda c: c.name)
def test_fused_tail_block_passes_residual_check(check):
    """Every residual check on a BasicBlock whose tail is the fused kernel (the deep-stack
    statistical ones take ~40 s and ~15 s interpreted)."""
    reason = check.applies(TAIL_TARGET)
    if reason:
        pytest.skip(reason)  # stochastic depth: this block has none
    _assert_passed(run_check(check, TAIL_TARGET, QUICK, seed=0))


# --- the fused tail against float64 ------------------------------------------------------------

SHAPE = (4, 5, 6, 7)  # m = 168 values per channel: the split schedule gets 3 programs
EPS = 1e-5


def _layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "strided":
        wide = torch.zeros((*t.shape[:-1], 2 * t.shape[-1]), dtype=t.dtype)
        wide[..., ::2] = t
        return wide[..., ::2]
    return t


def _tensor(values: np.ndarray, dtype: str, layout: str) -> torch.Tensor:
    return _layout(torch.from_numpy(values).to(getattr(torch, dtype)), layout)


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("split", [None, 3])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_fused_tail_matches_float64(kbn, dtype, layout, split, mode):
    """relu(bn(x) + shortcut) and its gradients (dx, dshortcut, dgamma, dbeta) against float64.

    The shortcut is drawn so that every pre-activation is at least 0.2 away from 0: the ReLU's
    mask is then the same in the kernel and the reference, and only arithmetic is compared.
    Bounds: theory.rounding's batch-norm bounds, plus the float32 add and the output rounding
    (u_acc + u)|bn(x) + shortcut|; the shortcut gradient is relu'(.) dy, exactly.
    """
    prec = rounding.Precision.of(dtype)
    rng = np.random.default_rng([len(dtype), len(layout), split or 0, len(mode)])
    c = SHAPE[1]
    x = round_to(rng.normal(2.0, 3.0, SHAPE), dtype)
    gamma = round_to(rng.normal(1.0, 0.5, c), "float32")
    beta = round_to(rng.normal(0.0, 0.5, c), "float32")
    train = mode == "train"
    m = SHAPE[0] * SHAPE[2] * SHAPE[3]
    if train:
        fw = ref.forward(x, gamma=gamma, beta=beta, eps=EPS)
        bn_y, x_hat = fw.y, fw.xhat
        tol_bn = rounding.bn_forward_tolerance(
            x_hat, bn_y, m=m, mean=fw.mean, var=fw.var_biased, eps=EPS, gamma_=gamma, beta=beta,
            prec=prec,
        )  # fmt: skip
    else:
        r_mean = round_to(rng.normal(2.0, 1.0, c), "float32")
        r_var = round_to(rng.uniform(4.0, 16.0, c), "float32")
        bn_y = ref.eval_forward(x, r_mean, r_var, gamma=gamma, beta=beta, eps=EPS)
        x_hat = (x - r_mean.reshape(1, -1, 1, 1)) / np.sqrt(r_var.reshape(1, -1, 1, 1) + EPS)
        tol_bn = rounding.bn_forward_tolerance(
            x_hat, bn_y, m=None, mean=r_mean, var=r_var, eps=EPS, gamma_=gamma, beta=beta,
            prec=prec,
        )  # fmt: skip
    margin = rng.choice([-1.0, 1.0], SHAPE) * rng.uniform(0.25, 1.0, SHAPE)
    shortcut = round_to(margin - bn_y, dtype)
    pre = bn_y + shortcut
    assert np.abs(pre).min() > 0.2
    dy = round_to(rng.normal(size=SHAPE), dtype)

    bn = kbn.TritonBatchNorm2d(c, eps=EPS, split=split)
    with torch.no_grad():
        bn.weight.copy_(torch.from_numpy(gamma))
        bn.bias.copy_(torch.from_numpy(beta))
        if not train:
            bn.running_mean.copy_(torch.from_numpy(r_mean))
            bn.running_var.copy_(torch.from_numpy(r_var))
    bn.train(train)
    xt = _tensor(x, dtype, layout).requires_grad_(True)
    st = _tensor(shortcut, dtype, layout).requires_grad_(True)
    y = bn.forward_add_relu(xt, st)
    assert y.dtype == xt.dtype and tuple(y.shape) == SHAPE
    y.backward(_tensor(dy, dtype, layout))

    def f64(t):
        return t.detach().to(torch.float64).numpy()

    # batch-norm bounds, then the float32 add and the rounding of the output
    bound = (rounding.bn_forward_tolerance, rounding.bn_backward_tolerance)
    tol_y = tol_bn + (prec.u_acc + prec.u) * np.abs(pre) + 1e-30
    g = dy * (pre > 0)
    checks = [
        compare(f64(y), np.maximum(pre, 0.0), tol_y, what="fused tail output", bound=bound),
        compare(f64(st.grad), g, 0.0, what="shortcut gradient relu'(.) dy", bound=EXACT),
    ]
    if train:
        dx, dgamma, dbeta = ref.backward(g, x, gamma=gamma, eps=EPS)
        tol_dx, tol_dg, tol_db = rounding.bn_backward_tolerance(
            x_hat, g, dx, m=m, mean=fw.mean, var=fw.var_biased, eps=EPS, gamma_=gamma, prec=prec
        )
    else:
        axes = (0, 2, 3)
        dx = g * (gamma / np.sqrt(r_var + EPS)).reshape(1, -1, 1, 1)
        dgamma, dbeta = (g * x_hat).sum(axis=axes), g.sum(axis=axes)
        c_el = rounding.ELEMENTWISE_OPS * prec.u_elem
        tol_dx = (c_el + prec.u) * np.abs(dx) + 1e-30
        abs_gx = np.abs(g * x_hat).sum(axis=axes)
        tol_dg = rounding.reduction_tolerance(abs_gx, m, prec) + c_el * abs_gx
        tol_db = rounding.reduction_tolerance(np.abs(g).sum(axis=axes), m, prec)
    checks += [
        compare(f64(xt.grad), dx, tol_dx, what="dx", bound=bound),
        compare(f64(bn.weight.grad), dgamma, tol_dg, what="dgamma", bound=bound),
        compare(f64(bn.bias.grad), dbeta, tol_db, what="dbeta", bound=bound),
    ]
    c_all = worst(*checks)
    assert c_all.ratio <= 1.0, c_all.message()


def test_fused_tail_updates_running_stats_like_plain_forward(kbn):
    x = torch.randn(SHAPE) * 3 + 1
    plain, fused = kbn.TritonBatchNorm2d(SHAPE[1], momentum=None), kbn.TritonBatchNorm2d(SHAPE[1])
    fused.momentum = None
    for _ in range(2):
        plain(x)
        fused.forward_add_relu(x, torch.zeros_like(x))
    assert torch.equal(plain.running_mean, fused.running_mean)
    assert torch.equal(plain.running_var, fused.running_var)
    assert int(fused.num_batches_tracked) == 2


# --- outside the interpreter's comfort zone -------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_kernels_run_when_triton_was_imported_first():
    """torch.compile imports triton before verify.kernels can turn the interpreter on; the
    kernels must still run (triton's own @jit library functions are compile-only then)."""
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: no interpreter")
    code = (
        "import triton, torch\n"
        "from verify.kernels.batchnorm import TritonBatchNorm2d\n"
        "x = torch.randn(4, 3, 5, 5)\n"
        "y = TritonBatchNorm2d(3)(x)\n"
        "torch.testing.assert_close(y, torch.nn.BatchNorm2d(3)(x), rtol=1e-5, atol=1e-5)\n"
        "print('ok')\n"
    )
    done = _python(code)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-3000:]


def test_interpreter_patches_the_language_once_a_launch_with_the_same_results(kbn, monkeypatch):
    """verify.kernels.interpreter.patch_language_once: a launch swaps triton.language once, not
    again at every @jit helper call, and the kernels' outputs are bit for bit what the
    interpreter's own per-call patching gives."""
    if not INTERPRETED:
        pytest.skip("a GPU is present: no interpreter")
    from triton.runtime import interpreter

    from verify.kernels import triton_bn

    assert getattr(interpreter._patch_lang, "_varguard_once", False)
    x = torch.randn(6, 70, 3, 5, dtype=torch.float16).contiguous(memory_format=torch.channels_last)
    w, b = torch.rand(70) + 0.5, torch.randn(70)
    xd, layout = triton_bn.dense(x)

    def run():
        """The kernel's outputs, and how many times the language was swapped (each swap an
        inspect.getmembers over a module: the cost the patch removes)."""
        swaps = []
        swap = interpreter._patch_builtin
        monkeypatch.setattr(
            interpreter, "_patch_builtin", lambda *a, **k: swaps.append(1) or swap(*a, **k)
        )
        out = triton_bn.forward(xd, layout, w, b, eps=1e-5, split=2)
        monkeypatch.setattr(interpreter, "_patch_builtin", swap)
        return out, len(swaps)

    fast, fast_swaps = run()
    monkeypatch.setattr(interpreter, "_patch_lang", interpreter._patch_lang.__wrapped__)
    slow, slow_swaps = run()
    for a, b_ in zip(fast, slow, strict=True):
        assert torch.equal(a, b_)
    launches = 3  # split=2: partial statistics, their combination, the elementwise pass
    assert fast_swaps <= 5 * launches < slow_swaps


def test_every_kernel_compiles_for_a_gpu():
    """The interpreter runs Python; Triton's compiler is stricter. Every kernel, both layouts,
    float32 and bfloat16, each compile-time flag on and off, compiles to sm_90 code here."""
    done = _python("from verify.kernels.gpu_compile import main; raise SystemExit(main())",
                   TRITON_INTERPRET="0")  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    assert "56/56 compiled" in done.stdout


# --- the drop-in's contract --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layout", "expect"),
    [("contiguous", torch.contiguous_format), ("channels_last", torch.channels_last),
     ("strided", torch.contiguous_format)],
)  # fmt: skip
def test_output_layout_follows_input(kbn, layout, expect):
    x = _layout(torch.randn(SHAPE), layout)
    y = kbn.TritonBatchNorm2d(SHAPE[1])(x)
    assert y.is_contiguous(memory_format=expect)
    torch.testing.assert_close(y, torch.nn.BatchNorm2d(SHAPE[1])(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "shape", [(1, 3, 1, 1), (4, 3), (4, 4, 3, 3)], ids=["one-value", "rank", "channels"]
)
def test_bad_input_raises_like_torch(kbn, shape):
    x = torch.randn(shape)
    with pytest.raises(ValueError) as ours:
        kbn.TritonBatchNorm2d(3)(x)
    try:
        torch.nn.BatchNorm2d(3)(x)
    except (ValueError, RuntimeError) as exc:
        theirs = str(exc)
    if shape != (4, 4, 3, 3):  # torch's channel error comes from deep inside F.batch_norm
        assert str(ours.value) == theirs


def test_unsupported_dtype_and_shortcut_shape_are_refused(kbn):
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        kbn.TritonBatchNorm2d(3).double()(torch.randn(4, 3, 2, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="shortcut of shape"):
        kbn.TritonBatchNorm2d(3).forward_add_relu(torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2))
    with pytest.raises(ValueError, match="split"):
        kbn.TritonBatchNorm2d(3, split=0)


def test_split_schedule_is_taken():
    from verify.kernels.triton_bn import reduce_config

    assert reduce_config(168, 5, channels_last=False, split=3).split == 3
    assert reduce_config(168, 5, channels_last=True, split=3).split == 3
    assert reduce_config(2, 5, channels_last=False, split=3).split == 1  # too few rows
    if INTERPRETED:
        assert reduce_config(65536, 2, channels_last=False).split == 1

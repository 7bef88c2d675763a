"""RMSNorm checks: every real CPU target passes, the Triton kernel passes under the interpreter,
every planted bug is caught by the checks it names, a user's drop-in is checked in its
half-precision variants, and eps=None means what torch documents."""

from __future__ import annotations

import pytest
from helpers import slow_except
from normtests import QUICK, cpu_targets, failures, write_module

from theory.rmsnorm import default_eps
from verify.checks import get_check
from verify.checks.base import run_check
from verify.checks.rows import BadRowInput
from verify.mutants import catalog
from verify.resolve import resolve
from verify.result import Status
from verify.strategies.rows import RowCase

FAMILY = "rmsnorm"


@pytest.mark.parametrize(
    "target, seed",
    [(t, 13 * i) for i, t in enumerate(cpu_targets(FAMILY))],
    ids=lambda v: v.name if hasattr(v, "name") else str(v),
)
def test_real_target_passes_every_check(target, seed):
    bad = failures(target, seed=seed)
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize(
    "target",
    slow_except(cpu_targets(FAMILY, triton=True), lambda t: t.name == "triton-rmsnorm-float16"),
    ids=lambda t: t.name,
)  # one kernel (float16) in CI; every one in the slow tier
def test_triton_kernel_passes_every_check_under_the_interpreter(target):
    bad = failures(target, seed=4)  # float16 here; every kernel in the 20-seed sweep
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize(
    "mutant", [m for m in catalog() if m.family == FAMILY], ids=lambda m: m.name
)
def test_mutant_is_caught_by_its_checks(mutant):
    for name in mutant.caught_by:
        r = run_check(get_check(name), mutant.target, QUICK, seed=0)
        assert r.status == Status.FAILED, (
            f"{mutant.name} ({mutant.bug}) survived {name}: {r.message}"
        )
        assert r.counterexample and r.repro


def test_eps_none_is_torchs_documented_default_and_only_it_passes():
    """eps=None is finfo(float32).eps for bfloat16 input (torch's opmath type): the check passes
    torch and fails the same norm with finfo(bfloat16).eps, on the same case."""
    assert default_eps("bfloat16") == 2.0**-23
    case = RowCase(shape=(4, 256), kind="rms", dtype="bfloat16", eps=None, log10_scale=-1.24)
    check = get_check("rmsnorm.eps_none")
    assert check.measure(resolve("torch-rmsnorm-bfloat16"), case).ok
    assert not check.measure(resolve("mutant:rms_eps_none_from_input_dtype"), case).ok


USER = """
import torch


class MyRMSNorm(torch.nn.RMSNorm):
    '''A user's drop-in RMSNorm, written outside the project: float32 arithmetic, cast once.'''

    varguard_layouts = ("contiguous", "strided")

    def forward(self, x):
        ns = tuple(self.normalized_shape)
        if x.dim() < len(ns) or tuple(x.shape[x.dim() - len(ns):]) != ns:
            raise ValueError(f"expected input of shape [*, {ns}], got {tuple(x.shape)}")
        eps = self.eps if self.eps is not None else torch.finfo(torch.float32).eps
        dims = tuple(range(-len(ns), 0))
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(dims, keepdim=True) + eps)
        if self.weight is not None:
            y = y * self.weight.float()
        return y.to(x.dtype)
"""


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_a_drop_in_written_outside_is_checked_in_half_precision(tmp_path, monkeypatch, dtype):
    write_module(tmp_path, monkeypatch, "userrms", USER)
    assert resolve("userrms:MyRMSNorm").family == FAMILY  # from its base class
    target = resolve(f"userrms:MyRMSNorm[{dtype}, contiguous]")
    bad = failures(target, seed=6)
    assert not bad, "\n".join(bad)


def test_bad_input_on_a_compiled_target_builds_the_module_for_its_own_shape():
    """Seed 11 of the quick sweep: the bad-input case's module was built for the compiled
    target's one shape (64 wide) instead of normalized_shape=(63,), so a (3, 64) input was valid
    for it and torch.compile was reported to accept a wrong shape: a false alarm of the suite."""
    check = get_check("rmsnorm.bad_input")
    m = check.measure(resolve("torch-rmsnorm-compile"), BadRowInput(kind="wrong_last", n=63))
    assert m.ok, m.message


def test_bad_input_on_a_compiled_target_goes_through_the_compiled_graph():
    """The bad input is handed to what the target runs, torch.compile's graph, not to the eager
    module under it: Dynamo's own refusal (TorchRuntimeError, torch 2.13) is what is judged."""
    check = get_check("rmsnorm.bad_input")
    m = check.measure(resolve("torch-rmsnorm-compile"), BadRowInput(kind="wrong_last", n=8))
    assert m.ok and "TorchRuntimeError" in m.message, m.message

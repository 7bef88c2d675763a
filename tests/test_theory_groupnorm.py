"""theory.groupnorm: the symbolic proofs per group (and that they can fail), the closed form
against torch's group_norm autograd in float64, and the oracles' published forms."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from published import incomplete, mismatch

from theory import groupnorm as gn
from theory import layernorm as ln

#: (channels, groups, spatial) covering group sizes n = 2..6, with one and two groups, several
#: channels per group (where the weight varies inside a group) and several spatial positions.
CASES = [(2, 1, 1), (4, 2, 1), (3, 1, 1), (2, 1, 2), (4, 2, 2), (1, 1, 5), (3, 1, 2)]


def _n(case):
    c, g, s = case
    return c // g * s


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"C{c[0]}G{c[1]}S{c[2]}")
def test_forward_output_moments_per_group(case):
    assert gn.forward_moments_match(*case)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"C{c[0]}G{c[1]}S{c[2]}")
def test_autodiff_backward_equals_closed_form(case):
    assert sorted({_n(c) for c in CASES}) == [2, 3, 4, 5, 6]
    assert gn.backward_matches_closed_form(*case)


def test_parameter_gradients_sum_over_samples():
    assert gn.backward_matches_closed_form(4, 2, 1, samples=2)


def _weight_outside_sums(x, dy, *, groups, weight, eps):
    """The mutant: the per-channel weight multiplied after the group reductions (batch norm's
    gamma placement), right only when every channel of a group has the same weight."""
    dx1, dweight, dbias = gn.backward_closed_form(x, dy, groups=groups, weight=None, eps=eps)
    dx = [[[weight[c] * v for v in ch] for c, ch in enumerate(s)] for s in dx1]
    return dx, dweight, dbias


def _per_channel_statistics(x, dy, *, groups, weight, eps):
    """The mutant: statistics per channel (instance norm) instead of per group."""
    return gn.backward_closed_form(x, dy, groups=len(x[0]), weight=weight, eps=eps)


@pytest.mark.parametrize(
    ("mutant", "case"),
    [
        (_weight_outside_sums, (2, 1, 1)),
        (_weight_outside_sums, (4, 2, 1)),
        (_weight_outside_sums, (2, 1, 2)),
        (_per_channel_statistics, (4, 2, 2)),
    ],
)
def test_proof_rejects_wrong_backward(mutant, case):
    assert not gn.backward_matches_closed_form(*case, closed_form=mutant)


@pytest.mark.parametrize(("shape", "groups"), [((3, 6, 2, 3), 2), ((2, 6, 5), 3), ((4, 4, 1), 1)])
def test_closed_form_matches_torch_autograd(shape, groups):
    g = torch.Generator().manual_seed(2)
    eps = 1e-5
    c = shape[1]
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 2 - 1).requires_grad_()
    w = torch.randn(c, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(c, generator=g, dtype=torch.float64, requires_grad=True)
    dy = torch.randn(shape, generator=g, dtype=torch.float64)
    F.group_norm(x, groups, w, b, eps=eps).backward(dy)
    nested = lambda t: t.detach().reshape(shape[0], c, -1).tolist()  # noqa: E731
    dx, dweight, dbias = gn.backward_closed_form(
        nested(x), nested(dy), groups=groups, weight=w.detach().tolist(), eps=eps
    )
    flat = [v for s in dx for ch in s for v in ch]
    assert flat == pytest.approx(x.grad.reshape(-1).tolist(), rel=1e-12, abs=1e-13)
    assert dweight == pytest.approx(w.grad.tolist(), rel=1e-12, abs=1e-13)
    assert dbias == pytest.approx(b.grad.tolist(), rel=1e-12, abs=1e-13)


def test_one_group_is_layer_norm_of_the_sample():
    """G = 1: layer norm over (C, spatial) with the channel weight repeated over positions."""
    x = [[[0.5, -1.0, 2.0], [1.5, 0.0, -0.5]]]
    dy = [[[1.0, 2.0, -1.0], [0.5, -0.5, 3.0]]]
    w = [2.0, -0.5]
    dx, _, _ = gn.backward_closed_form(x, dy, groups=1, weight=w, eps=1e-4)
    (ln_dx,), _, _ = ln.backward_closed_form(
        [sum(x[0], [])], [sum(dy[0], [])], weight=[2.0] * 3 + [-0.5] * 3, eps=1e-4
    )
    assert sum(dx[0], []) == pytest.approx(ln_dx, rel=1e-14)


@pytest.mark.parametrize("oracle", gn.oracles(), ids=lambda o: o.name)
def test_oracles_match_published_and_reevaluate(oracle):
    assert oracle.name.startswith("groupnorm.")
    assert oracle.published is not None
    assert mismatch(oracle) is None
    assert incomplete(oracle) is None


def test_group_size_oracle_is_torchs():
    """32 channels in 8 groups at 7x7: torch normalises over 4 * 49 = 196 values per group."""
    o = {o.name: o for o in gn.oracles()}["groupnorm.group_size"]
    x = torch.randn(1, 32, 7, 7, dtype=torch.float64)
    y = F.group_norm(x, 8, eps=0.0)
    group0 = y[0, :4].reshape(-1)
    assert o.as_float() == group0.numel() == 196
    assert group0.mean().item() == pytest.approx(0.0, abs=1e-14)
    assert group0.var(correction=0).item() == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: gn.check_groups(6, 4, 1), "groups=4 does not divide channels=6"),
        (lambda: gn.check_groups(4, 4, 1), "n = 1"),
        (lambda: gn.check_groups(0, 1, 1), "channels=0"),
        (lambda: gn.backward_matches_closed_form(2, 1, 1, samples=0), "samples=0"),
        (lambda: gn.backward_closed_form([[[1.0, 2.0]]], [[[1.0]]], groups=1), "one shape"),
        (
            lambda: gn.backward_closed_form([[[1.0, 2.0]]], [[[1.0, 0.0]]], groups=1, weight=[]),
            "len(weight)=0",
        ),
    ],
)
def test_bad_input_names_the_argument(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()

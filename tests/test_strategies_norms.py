"""The norm families' strategies (layer norm, RMSNorm, group norm, the pre-norm tail): cases stay
within the profile's budget and fit their target, their inputs are finite in their dtype and laid
out as they say, and every configuration a family declares reachable is reached by some case."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verify.adapters.base import layout_of, to_input
from verify.checks import get_check
from verify.profiles import get_profile
from verify.resolve import resolve
from verify.strategies import groupnorm as gn
from verify.strategies import prenorm as pre
from verify.strategies import rows

QUICK, STANDARD = get_profile("quick"), get_profile("standard")
FAST = settings(
    max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)
#: One target per family and kind of case: the check whose cases are drawn, and the module
#: that declares the family's dimensions.
FAMILIES = {
    "torch-layernorm": ("layernorm.forward", rows, "layer"),
    "torch-rmsnorm-bfloat16": ("rmsnorm.forward", rows, "rms"),
    "torch-groupnorm": ("groupnorm.forward", gn, None),
    "torch-add-rmsnorm-float16": ("prenorm.forward", pre, None),
}


def _cases(name: str, profile):
    target = resolve(name)
    return target, get_check(FAMILIES[name][0]).cases(target, profile)


def _declared(name: str, profile) -> dict[str, tuple[str, ...]]:
    target = resolve(name)
    check = get_check(FAMILIES[name][0])
    return check.dimensions(target, profile)


@pytest.mark.parametrize("name", list(FAMILIES))
@pytest.mark.parametrize("profile", [QUICK, STANDARD], ids=["quick", "standard"])
def test_cases_fit_the_budget_and_their_target(name, profile):
    target, cases = _cases(name, profile)
    budget = target.size_budget(profile.max_elements)

    @given(case=cases)
    @FAST
    def check(case):
        assert math.prod(case.shape) <= budget
        assert len(case.shape) in target.ranks
        assert case.dtype == target.dtype
        assert case.param_dtype in rows.param_dtypes(target)
        assert case.eps is None or 1e-12 <= case.eps <= 1e-1
        if isinstance(case, gn.GNCase):
            assert case.channels % case.num_groups == 0
            assert case.shape[0] * case.n >= 2  # torch refuses one value per group and batch
            assert case.x_layout in gn.valid_layouts(case.shape)
        else:
            assert case.normalized_dims <= len(case.shape)
            assert case.x_layout in rows.valid_layouts(case.shape, case.normalized_dims)
            assert case.n <= rows.MAX_HIDDEN

    check()


def _data(case) -> list[np.ndarray]:
    if isinstance(case, gn.GNCase):
        return [gn.make_input(case), gn.make_grad(case)]
    if isinstance(case, pre.AddNormCase):
        return [pre.make_input(case), pre.make_residual(case), pre.make_grad(case)]
    return [rows.make_input(case), rows.make_grad(case)]


@pytest.mark.parametrize("name", list(FAMILIES))
def test_inputs_are_finite_in_their_dtype_and_laid_out_as_the_case_says(name):
    target, cases = _cases(name, QUICK)
    limit = float(torch.finfo(target.torch_dtype).max)

    @given(case=cases)
    @settings(max_examples=25, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    def check(case):
        arrays = _data(case)
        for a in arrays:
            assert a.shape == case.shape and np.isfinite(a).all() and np.abs(a).max() <= limit
        if isinstance(case, pre.AddNormCase):
            assert np.isfinite(arrays[0] + arrays[1]).all()
            assert np.abs(arrays[0] + arrays[1]).max() <= limit  # the stream stays finite
        axis = (
            gn.expanded_axis(case.shape)
            if isinstance(case, gn.GNCase)
            else rows.expanded_axis(case.shape, case.normalized_dims)
        )
        x = to_input(target, arrays[0], layout=case.x_layout, axis=axis)
        np.testing.assert_array_equal(x.double().numpy(), arrays[0])  # the same values
        got = layout_of(x)
        if case.x_layout == "strided":
            assert got.startswith("non-dense")
        elif case.x_layout == "expanded":
            assert 0 in x.stride()
        elif case.x_layout == "offset":
            assert x.storage_offset() == 1

    check()


def _labels(strategy, n: int) -> dict[str, set]:
    seen: dict[str, set] = {}

    # derandomize: what is reached must not depend on the run (a flaky table test helps no one)
    @given(case=strategy)
    @settings(max_examples=n, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    def draw(case):
        for dim, labels in case.coverage().items():
            seen.setdefault(dim, set()).update((labels,) if isinstance(labels, str) else labels)

    draw()
    return seen


@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_declared_value_is_reachable(name):
    """What the coverage table calls declared must be reachable by the strategies, or the
    table would flag a gap the search cannot close."""
    _, cases = _cases(name, QUICK)
    declared = _declared(name, QUICK)
    seen = _labels(cases, 500)
    missing = [(d, v) for d, values in declared.items() for v in values if v not in seen.get(d, ())]
    assert missing == []


def test_row_shapes_reach_tile_edges_models_and_several_normalised_dims():
    seen_n, seen_k = set(), set()

    @given(st.data())
    @settings(max_examples=400, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    def draw(data):
        shape, k = data.draw(rows.row_shapes(ranks=rows.ROW_RANKS, max_elements=20_000))
        assert math.prod(shape) <= 20_000 and 1 <= k <= len(shape)
        seen_n.add(math.prod(shape[len(shape) - k :]))
        seen_k.add(k)

    draw()
    assert {16383, 16384, 16385} & seen_n  # a 16k tile's edges
    assert {5120, 14336} & seen_n  # real models' hidden sizes that are no power of two
    assert seen_k == {1, 2, 3}


def test_fitted_known_cases_take_the_targets_layout_and_rank():
    variant = resolve("torch.nn:LayerNorm[bfloat16, channels_last]")
    case = rows.fit(rows.RowCase(shape=(6, 33), kind="layer"), variant)
    assert case.dtype == "bfloat16" and case.x_layout == "channels_last" and len(case.shape) == 4
    compiled = rows.fit(
        rows.RowCase(shape=(1, 16385), kind="layer"), resolve("torch-layernorm-compile")
    )
    assert compiled.shape in rows.COMPILED_SHAPES
    eps_none = rows.fit(
        rows.RowCase(shape=(2, 8), kind="layer", eps=None), resolve("torch-layernorm")
    )
    assert eps_none.eps == 1e-5  # LayerNorm has no eps=None

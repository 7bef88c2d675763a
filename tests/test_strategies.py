"""The strategies themselves: cases stay within the profile's budget, their inputs are finite in
their dtype and laid out as they say, and every configuration a family declares reachable is
reached by some case."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verify.adapters import batchnorm as bn_adapter
from verify.adapters.base import layout_of
from verify.checks.batchnorm import _sequence_cases, adapter_cases
from verify.dimensions import LAYOUTS
from verify.profiles import get_profile
from verify.resolve import resolve
from verify.strategies import batchnorm as bn
from verify.strategies import init as init_strategies
from verify.strategies import residual as res_strategies
from verify.strategies import selu as selu_strategies
from verify.strategies.common import EDGE_SIZES, band, edge_class, log_band, sizes

QUICK, STANDARD = get_profile("quick"), get_profile("standard")
FAST = settings(
    max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)
TARGETS = ["torch-eager", "torch-float16", "torch-batchnorm1d", "torch-batchnorm3d"]


def test_bands_and_edges():
    assert [band(v, (1, 16, 256)) for v in (1, 2, 16, 17, 256, 257)] == [
        "1", "2-16", "2-16", "17-256", "17-256", "257+"
    ]  # fmt: skip
    assert band(1, (0, 1, 3)) == "1" and band(3, (0, 1, 3)) == "2-3"
    assert log_band(1e-12, (1e-12, 1e-9)) == "1e-12" and log_band(1e-10, (1e-12, 1e-9)) == (
        "1e-12..1e-09"
    )
    assert [edge_class(n) for n in (1, 4, 7, 9, 10)] == ["1", "2^k", "2^k-1", "2^k+1", "other"]
    assert {2**17 - 1, 2**17, 2**17 + 1} <= set(EDGE_SIZES)


@given(data=st.data())
@FAST
def test_sizes_stay_in_range(data):
    hi = data.draw(st.integers(1, 10**6))
    lo = data.draw(st.integers(1, hi))
    assert lo <= data.draw(sizes(min_value=lo, max_value=hi)) <= hi


@pytest.mark.parametrize("name", TARGETS)
@pytest.mark.parametrize("profile", [QUICK, STANDARD], ids=["quick", "standard"])
def test_batchnorm_cases_fit_the_budget_and_their_target(name, profile):
    target = resolve(name)
    budget = target.size_budget(profile.max_elements)

    @given(case=adapter_cases(target, profile))
    @FAST
    def check(case):
        assert math.prod(case.shape) <= max(budget, 2 * case.channels)
        assert len(case.shape) in target.ranks
        assert case.m >= 2  # training needs two values per channel
        assert case.x_layout in bn.valid_layouts(case.shape)
        assert case.dy_layout in bn.valid_layouts(case.shape)
        assert 1e-12 <= case.eps <= 1e-1
        assert case.dtype == target.dtype

    check()


@given(case=adapter_cases(resolve("torch-float16"), QUICK))
@settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_inputs_are_finite_in_their_dtype_and_laid_out_as_the_case_says(case):
    target = resolve("torch-float16")
    values = bn.make_input(case)
    assert np.isfinite(values).all()
    assert np.abs(values).max() <= 65504
    x = bn_adapter.input_tensor(target, case, values)
    assert torch.isfinite(x).all() and x.dtype == torch.float16
    np.testing.assert_array_equal(x.double().numpy(), values)  # the same values, laid out
    got = layout_of(x)
    if case.x_layout == "channels_last":
        assert got in ("channels_last", "contiguous")  # size-1 dimensions make them one
    elif case.x_layout == "strided":
        assert got.startswith("non-dense")
    elif case.x_layout == "expanded":
        assert 0 in x.stride()
    elif case.x_layout == "offset":
        assert x.storage_offset() == 1


# "mode" comes from the check, not the case; the program's dimensions only from the
# mode-switching check's cases.
PROGRAM_DIMS = ("mode switches", "training steps before an eval", "eval backward")


def _labels(strategy, n: int) -> dict[str, set]:
    """Every coverage label ``n`` drawn cases carry, per dimension."""
    seen: dict[str, set] = {}

    @given(case=strategy)
    @settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def draw(case):
        for dim, labels in case.coverage().items():
            seen.setdefault(dim, set()).update((labels,) if isinstance(labels, str) else labels)

    draw()
    return seen


@pytest.mark.parametrize(
    ("name", "profile"),
    [
        ("torch-eager", QUICK),
        ("torch-channels-last", QUICK),
        ("torch-fold-conv-bn", QUICK),
        pytest.param("torch-eager", STANDARD, marks=pytest.mark.slow),
    ],
    ids=["quick", "channels_last-only", "inference-only", "standard"],
)
def test_every_declared_batchnorm_value_is_reachable(name, profile):
    """What the coverage table calls "declared" must be reachable by the strategies, or the
    table would flag a gap the search cannot close (a channels_last-only target once declared
    the pair "x contiguous, dy channels_last"; conv-BN folding, which runs eval steps alone,
    once declared training steps, mode sequences and track_running_stats=False)."""
    target = resolve(name)
    declared = bn.dimensions(target, max_elements=target.size_budget(profile.max_elements))
    plain = _labels(
        st.one_of(adapter_cases(target, profile), adapter_cases(target, profile, min_m=1)), 1500
    )
    # Sequences of steps are drawn only by checks that train (batchnorm.mode_switching, ...).
    program = _labels(_sequence_cases(target, profile), 300) if "train" in target.modes else {}
    missing = [
        (dim, v)
        for dim, values in declared.items()
        if dim != "mode"
        for v in values
        if v not in (program if dim in PROGRAM_DIMS else plain).get(dim, set())
    ]
    assert missing == []


def test_layouts_of_a_variant_are_its_own():
    variant = resolve("torch.nn:BatchNorm2d[float32, strided]")
    assert set(variant.layouts) == {"strided", "expanded", "offset"}

    @given(case=adapter_cases(variant, QUICK))
    @FAST
    def check(case):
        assert case.x_layout in variant.layouts or case.x_layout not in LAYOUTS

    check()


@given(case=init_strategies.init_cases(scheme="kaiming"))
@FAST
def test_init_cases_are_within_their_budget(case):
    assert case.numel <= max(2 * case.samples, 1024)
    assert case.tensors * case.numel >= case.samples
    out, inp = case.shape[:2]
    assert out != inp  # fan swaps must show


@given(case=selu_strategies.forward_cases(dtype="float16"))
@FAST
def test_selu_inputs_are_finite_in_their_dtype(case):
    x = selu_strategies.make_input(case)
    assert np.isfinite(x).all() and np.abs(x).max() <= 65504


@given(case=res_strategies.block_cases(expansion=1, modes=("train", "eval"), max_elements=20_000))
@FAST
def test_residual_blocks_fit_their_budget(case):
    assert case.batch * case.in_channels * case.height * case.width <= 20_000 + 17 * 17 * 16
    assert case.values_per_channel() >= 2 or case.mode == "eval"
    assert np.isfinite(res_strategies.make_input(case)).all()


@pytest.mark.parametrize("expansion", [1, 4], ids=["basic", "bottleneck"])
def test_every_declared_residual_value_is_reachable(expansion):
    """The residual family's coverage table: what it declares, its block strategy reaches."""
    declared = res_strategies.dimensions(
        expansion=expansion, modes=("train", "eval"), max_elements=20_000, compiled=False
    )
    strategy = res_strategies.block_cases(
        expansion=expansion, modes=("train", "eval"), max_elements=20_000
    )
    seen = _labels(strategy, 600)
    missing = [(dim, v) for dim, values in declared.items() for v in values if v not in seen[dim]]
    assert missing == []
    compiled = res_strategies.dimensions(
        expansion=expansion, modes=("train",), max_elements=20_000, compiled=True
    )
    seen = _labels(
        res_strategies.block_cases(expansion=expansion, modes=("train",), compiled=True), 100
    )
    assert all(set(values) <= seen[dim] for dim, values in compiled.items()), (compiled, seen)


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(data=st.data(), label=st.sampled_from(res_strategies.SPATIAL))
def test_a_pinned_stride_2_input_shape_is_a_stride_2_projection_of_that_shape(data, label):
    """Pinning "stride 2 on" makes the shortcut follow (a stride-2 projection) and the input's
    spatial shape the one pinned: the stride-placement bugs need both at once."""
    from verify.strategies.pins import pinned

    with pinned({"stride 2 on": label, "shortcut": "identity"}):
        case = data.draw(res_strategies.block_cases(expansion=4, modes=("train", "eval")))
    assert case.stride == 2 and case.coverage()["shortcut"] == "projection, stride 2"
    assert res_strategies.spatial_label(case.height, case.width) == label

"""Pinning a coverage dimension (verify/strategies/pins.py) and the harness's use of it: after
its search, a check runs a few cases with each declared value its search did not reach pinned,
so a short run still reaches every value of every dimension a strategy draws with choose()."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verify.checks import checks_for
from verify.checks.base import run_check
from verify.profiles import get_profile
from verify.resolve import resolve
from verify.strategies.pins import choose, pin, pinned, recording

OPTIONS = {"a": 1, "b": st.integers(10, 20), "c": None}


@settings(max_examples=30, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_a_pinned_dimension_draws_its_pinned_value(data):
    with pinned({"letter": "b"}), recording() as chosen:
        assert pin("letter") == "b"
        assert 10 <= data.draw(choose("letter", OPTIONS)) <= 20
    with pinned({"letter": "c"}):
        assert data.draw(choose("letter", OPTIONS)) is None
    assert pin("letter") is None  # the pin ends with its block
    assert chosen == {"letter"}  # recorded in its block only


@settings(max_examples=30, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_a_pin_a_strategy_cannot_honour_is_ignored(data):
    with pinned({"letter": "z", "other": "a"}):
        assert data.draw(choose("letter", ["a", "b"])) in ("a", "b")


def test_a_short_run_reaches_every_value_of_every_pinnable_dimension():
    """The eval check on torch-eager at the quick profile (12 cases searched): every value of
    the dimensions the batch-norm strategy draws with choose() is reached, by the search or by
    the pinned cases after it."""
    target = resolve("torch-eager")
    check = next(c for c in checks_for("batchnorm") if c.name == "batchnorm.eval")
    profile = get_profile("quick")
    result = run_check(check, target, profile, seed=3, known_cases=False)
    assert result.status == "passed", result.message
    coverage, declared = result.extra["coverage"], result.extra["declared"]
    # The dimensions verify/strategies/batchnorm.py draws with choose().
    pinnable = ["rank", "x layout", "dy layout", "affine", "track_running_stats", "momentum"]
    pinnable += ["dy law", "reduction m"]
    assert set(pinnable) <= set(declared)
    for dim in pinnable:
        missing = [v for v in declared[dim] if not coverage.get(dim, {}).get(v, [0])[0]]
        assert not missing, f"{dim}: {missing} never reached"


def test_gap_rounds_pin_one_unreached_value_of_every_dimension_together_then_alone():
    """_gap_pins: the first rounds combine one unreached value per dimension (as many rounds as
    the largest dimension has gaps, not their sum); a value its joint round did not reach (the
    strategy ignored that pin beside the others) is pinned once more, alone; then it stops."""
    from types import SimpleNamespace

    from verify.checks.base import _gap_pins

    declared = {"layout": ("a", "b", "c"), "mode": ("x", "y"), "free": ("p", "q")}
    check = SimpleNamespace(dimensions=lambda target, profile: declared)
    tally = {"layout": {"a": [1, 1]}, "mode": {}, "free": {}}
    chosen = {"layout", "mode"}  # "free" was not drawn with choose(): not pinnable
    rounds = []
    for pins in _gap_pins(check, None, None, tally, chosen):
        rounds.append(dict(pins))
        for dim, value in pins.items():
            if (dim, value) != ("layout", "c") or len(pins) == 1:  # c only honoured alone
                tally[dim].setdefault(value, [0, 0])[0] += 1
        assert len(rounds) < 10, rounds
    assert rounds == [
        {"layout": "b", "mode": "x"},
        {"layout": "c", "mode": "y"},
        {"layout": "c"},
    ]


@settings(max_examples=40, suppress_health_check=list(HealthCheck), deadline=None)
@given(data=st.data())
def test_a_pinned_band_draws_a_size_inside_it(data):
    """chosen_band: the band pinned is the band drawn (the top one, at the largest budget),
    and a pinned group-norm band of values per group is honoured by its shapes."""
    from verify.strategies.common import band
    from verify.strategies.groupnorm import GROUP_N_BANDS, gn_shapes
    from verify.strategies.pins import chosen_band

    edges = (2, 256, 2048, 65504)
    with pinned({"m": "65505+"}):
        m = data.draw(chosen_band("m", edges=edges, max_value=100_000, min_value=2))
    assert 65505 <= m <= 100_000
    with pinned({"values per group": "2049-65504"}):
        shape, g = data.draw(gn_shapes(ranks=(4,), max_elements=20_000))
    per_group = shape[1] // g * shape[2] * shape[3]
    assert band(per_group, GROUP_N_BANDS) == "2049-65504", (shape, g)
    assert 1 <= shape[0] * shape[1] * shape[2] * shape[3] <= 20_000


@settings(max_examples=40, suppress_health_check=list(HealthCheck), deadline=None)
@given(data=st.data())
def test_a_pinned_reduction_band_is_the_batch_norm_case_band(data):
    """A pinned band of values per channel is honoured exactly (N and the spatial sizes are
    divisors of m: the drawn m, an edge such as 2049 included, is the case's m)."""
    import math

    from verify.strategies.batchnorm import M_BANDS, shapes
    from verify.strategies.common import band

    with pinned({"reduction m": "2049-65504"}):
        shape = data.draw(shapes(ranks=(2, 3, 4, 5), max_elements=20_000))
    m = math.prod(shape) // shape[1]
    assert band(m, M_BANDS) == "2049-65504", shape
    assert math.prod(shape) <= 20_000


@pytest.mark.parametrize("entropy", [False, True], ids=["exhausted", "endless"])
def test_a_round_whose_every_case_is_a_known_defect_leaves_its_value_unreached(entropy):
    """A pinned value whose every case a known defect matches (the search steps around them)
    cannot be reached: the round is given up, the check still passes, the value stays a gap in
    its table and the defect is reported. (The oneDNN stride-2 crash of channels_last residual
    targets excludes every "stride 2 on" case of residual.no_mutation.) Where the pins leave
    endless cases to draw, the round ends after _DEFECT_ONLY_ROUND (50) of them in a row, not
    after Hypothesis's ~1000."""
    from dataclasses import dataclass

    from verify.assertions import EXACT
    from verify.checks.base import Check, KnownDefect, Measurement
    from verify.result import Status

    @dataclass(frozen=True)
    class Case:
        kind: str
        n: int = 0

        def coverage(self):
            return {"kind": self.kind}

    matched = []

    def matches(case):
        matched.append(case.kind == "b")
        return case.kind == "b"

    defect = KnownDefect(
        checks=("toy.kinds",),
        description="kind b is broken",
        applies_to=lambda target: True,
        matches=matches,
        example=Case("b"),
    )
    n = st.integers(0, 10**9) if entropy else st.just(0)
    check = Check(
        name="toy.kinds",
        summary="toy",
        bound=EXACT,
        cases=lambda target, profile: choose(
            "kind", {k: st.builds(Case, st.just(k), n) for k in "ab"}
        ),
        measure=lambda target, case: Measurement(0.0 if case.kind == "a" else 2.0, case.kind),
        dimensions=lambda target, profile: {"kind": ("a", "b")},
        defects=[defect],
    )
    result = run_check(check, resolve("torch-eager"), get_profile("quick"))
    assert result.status == Status.PASSED, result.message
    assert result.extra["coverage"]["kind"].get("b", [0])[0] == 0
    assert result.extra["known_defects"][0]["present"] is True
    if entropy:  # the search's rejections, then two rounds of b pinned (joint, then alone)
        assert sum(matched) <= 300, sum(matched)  # not Hypothesis's ~1000 a round

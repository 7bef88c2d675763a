"""theory.init (fans, Xavier, He, gains) against torch.nn.init, and the theory registry
(theory/__init__.py): unique names, get(), and every derived value against its published one."""

from __future__ import annotations

import math
import re

import mpmath
import pytest
import sympy as sp
import torch
from sympy.parsing.sympy_parser import convert_xor, parse_expr, standard_transformations

import theory
from theory import batchnorm
from theory import init as tinit
from theory.oracle import DIGITS

MINE = ("init", "selu", "batchnorm", "residual", "propagation")
_NUMBER = re.compile(r"-?\d+(?:\.(\d+))?")


# -- fans ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(3, 5), (8, 4, 3), (16, 8, 3, 3), (4, 2, 3, 5, 7), (1, 1, 1, 1)])
def test_fans_match_torch(shape):
    expected = torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))
    assert (tinit.fan_in(shape), tinit.fan_out(shape)) == expected


def test_fans_reject_a_vector():
    with pytest.raises(ValueError, match=r"shape=\(7,\)"):
        tinit.fan_in((7,))


def test_fan_oracles_are_the_torch_fans_of_their_example():
    shape = (128, 64, 3, 3)
    assert theory.get("init.fan_in").as_float() == tinit.fan_in(shape) == 576
    assert theory.get("init.fan_out").as_float() == tinit.fan_out(shape) == 1152


# -- Xavier and He ---------------------------------------------------------------------------------


def test_uniform_variance_is_a_squared_over_three():
    assert sp.simplify(tinit.uniform_variance() - tinit.a_bound**2 / 3) == 0


def test_xavier_bound_gives_glorot_variance():
    bound = tinit.xavier_uniform_bound_expr().subs(tinit.gain, 1)
    variance = tinit.uniform_variance().subs(tinit.a_bound, bound)
    assert sp.simplify(variance - 2 / (tinit.fan_in_s + tinit.fan_out_s)) == 0


def _uniform_sample(fn, shape, **kwargs):
    g = torch.Generator().manual_seed(0)
    return fn(torch.empty(shape, dtype=torch.float64), generator=g, **kwargs)


@pytest.mark.parametrize("gain", [1.0, math.sqrt(2), 5 / 3])
def test_xavier_uniform_bound_is_torchs(gain):
    shape = (256, 128, 3, 3)  # 294,912 draws: the max is within 1e-4 of the bound
    w = _uniform_sample(torch.nn.init.xavier_uniform_, shape, gain=gain)
    bound = tinit.xavier_uniform_bound(tinit.fan_in(shape), tinit.fan_out(shape), gain=gain)
    assert w.abs().max().item() <= bound * (1 + 1e-12)
    assert w.abs().max().item() >= bound * (1 - 1e-3)


def test_xavier_normal_std_is_torchs():
    shape = (256, 128, 3, 3)
    g = torch.Generator().manual_seed(1)
    w = torch.nn.init.xavier_normal_(torch.empty(shape, dtype=torch.float64), generator=g)
    std = tinit.xavier_normal_std(tinit.fan_in(shape), tinit.fan_out(shape))
    lo, hi = batchnorm.variance_confidence_interval(w.numel(), std**2, 1e-6)
    assert lo <= w.var().item() <= hi


@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
def test_kaiming_uniform_bound_is_torchs(mode):
    shape = (256, 128, 3, 3)
    w = _uniform_sample(torch.nn.init.kaiming_uniform_, shape, mode=mode, nonlinearity="relu")
    fan = tinit.fan_in(shape) if mode == "fan_in" else tinit.fan_out(shape)
    bound = tinit.kaiming_uniform_bound(fan, gain=math.sqrt(2))
    assert bound * (1 - 1e-3) <= w.abs().max().item() <= bound * (1 + 1e-12)


def test_kaiming_normal_std_is_torchs():
    shape = (256, 128, 3, 3)
    g = torch.Generator().manual_seed(2)
    w = torch.nn.init.kaiming_normal_(torch.empty(shape, dtype=torch.float64), generator=g)
    std = tinit.kaiming_normal_std(tinit.fan_in(shape))
    lo, hi = batchnorm.variance_confidence_interval(w.numel(), std**2, 1e-6)
    assert lo <= w.var().item() <= hi


# -- gains -----------------------------------------------------------------------------------------

GAINS = [
    ("relu", None),
    ("leaky_relu", None),
    ("leaky_relu", 0.0),
    ("leaky_relu", 0.2),
    ("leaky_relu", 1.0),
    ("leaky_relu", 3.0),
    ("leaky_relu", 1),
    ("linear", None),
    ("conv2d", None),
    ("conv_transpose3d", None),
    ("sigmoid", None),
    ("tanh", None),
    ("selu", None),
]


@pytest.mark.parametrize(("nonlinearity", "param"), GAINS)
def test_gains_match_torch(nonlinearity, param):
    expected = torch.nn.init.calculate_gain(nonlinearity, param)
    assert math.isclose(tinit.torch_gain(nonlinearity, param=param), expected, rel_tol=1e-15)


def test_he_gains_are_derived_in_closed_form():
    a = tinit.a
    assert tinit.second_moment("relu") == sp.Rational(1, 2)
    assert sp.simplify(tinit.second_moment("leaky_relu") - (1 + a**2) / 2) == 0
    assert sp.simplify(tinit.theory_gain("relu") - sp.sqrt(2)) == 0
    assert sp.simplify(tinit.theory_gain("leaky_relu") - sp.sqrt(2 / (1 + a**2))) == 0
    assert tinit.theory_gain("linear") == 1


def test_selu_theory_gain_is_one():
    with mpmath.workdps(DIGITS):
        assert abs(theory.get("init.gain_selu_theory").value - 1) < mpmath.mpf(10) ** -45


def test_tanh_and_selu_gains_are_choices():
    # A variance-preserving tanh gain would be 1/sqrt(E[tanh(z)^2]) ~ 1.593, not 5/3.
    m2 = mpmath.quad(lambda t: mpmath.tanh(t) ** 2 * mpmath.npdf(t), [-mpmath.inf, mpmath.inf])
    assert abs(1 / mpmath.sqrt(m2) - mpmath.mpf(5) / 3) > 0.05
    assert (
        theory.get("init.gain_selu_torch").as_float()
        != theory.get("init.gain_selu_theory").as_float()
    )
    for name in ("init.gain_tanh_torch", "init.gain_selu_torch"):
        assert "choice" in theory.get(name).source


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: tinit.xavier_uniform_bound(0, 3), "fan_in=0"),
        (lambda: tinit.xavier_normal_std(3, 2.5), "fan_out=2.5"),
        (lambda: tinit.kaiming_uniform_bound(-1), "fan=-1"),
        (lambda: tinit.torch_gain("swish"), "nonlinearity='swish'"),
        (lambda: tinit.torch_gain("leaky_relu", param="x"), "param='x'"),
        (lambda: tinit.theory_gain("tanh"), "activation='tanh'"),
    ],
)
def test_bad_input_names_the_argument(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()


# -- registry and published values -----------------------------------------------------------------


def test_registry_names_are_unique_and_qualified():
    names = [o.name for o in theory.all_oracles()]
    assert len(names) == len(set(names))
    assert all(re.fullmatch(r"[a-z_]+\.[a-z0-9_]+", n) for n in names), names
    assert any(n.startswith("rounding.") for n in names)
    for module in MINE:
        assert any(n.startswith(f"{module}.") for n in names), module


def test_get_returns_the_oracle_and_unknown_names_list_the_known():
    assert theory.get("selu.alpha01").name == "selu.alpha01"
    with pytest.raises(KeyError, match="known names: .*selu.lambda01"):
        theory.get("selu.alpha")


def _published_mismatch(oracle) -> str | None:
    """None if the derived value matches the published one at the published precision."""
    pub = oracle.published.strip()
    with mpmath.workdps(DIGITS):
        if pub.startswith("["):
            entries = list(_NUMBER.finditer(pub))
            got = [
                oracle.value[i, j]
                for i in range(oracle.value.rows)
                for j in range(oracle.value.cols)
            ]
            if len(entries) != len(got):
                return f"{len(entries)} published entries, {len(got)} derived"
            pairs = [(g, e.group(0), e.group(1)) for g, e in zip(got, entries, strict=True)]
        elif _NUMBER.fullmatch(pub):
            pairs = [(oracle.value, pub, _NUMBER.fullmatch(pub).group(1))]
        else:  # a formula in the oracle's own symbols
            local = {s.name: s for s in oracle.expr.free_symbols}
            parsed = parse_expr(
                pub, local_dict=local, transformations=(*standard_transformations, convert_xor)
            )
            if sp.simplify(oracle.expr - parsed) != 0:
                return f"{oracle.expr} != {parsed}"
            return None
        for got, text, decimals in pairs:
            # A published decimal is good to one unit in its last place; an integer is exact.
            tol = mpmath.mpf(10) ** -(len(decimals) if decimals else DIGITS - 10)
            if not abs(got - mpmath.mpf(text)) <= tol:
                return f"derived {mpmath.nstr(got, 30)} vs published {text} (tol {tol})"
    return None


@pytest.mark.parametrize("module", MINE)
def test_derived_values_match_published(module):
    oracles = [o for o in theory.all_oracles() if o.name.startswith(f"{module}.")]
    published = [o for o in oracles if o.published is not None]
    assert published, f"{module} has no published value to test against"
    failures = {o.name: msg for o in published if (msg := _published_mismatch(o))}
    assert not failures, failures


def test_published_check_can_fail():
    o = theory.get("selu.alpha01")
    wrong = type(o)(**{**o.__dict__, "published": "1.6732632423543772848170429916718"})
    assert _published_mismatch(wrong) is not None
    o = theory.get("init.xavier_uniform_bound")
    wrong = type(o)(**{**o.__dict__, "published": "gain*sqrt(3/(fan_in+fan_out))"})
    assert _published_mismatch(wrong) is not None


@pytest.mark.parametrize("module", MINE)
def test_oracles_are_complete_and_reevaluate(module):
    for o in (o for o in theory.all_oracles() if o.name.startswith(f"{module}.")):
        assert o.summary and o.source, o.name
        assert {s.name for s in o.expr.free_symbols} <= set(o.params), o.name
        again = o()  # evaluating the expression at its params reproduces the value
        with mpmath.workdps(DIGITS):
            if isinstance(o.value, mpmath.matrix):
                assert mpmath.mnorm(again - o.value, 1) < mpmath.mpf(10) ** -40, o.name
            else:
                assert abs(again - o.value) <= mpmath.mpf(10) ** -40 * max(1, abs(o.value)), o.name

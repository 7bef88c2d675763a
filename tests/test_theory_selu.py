"""theory.selu against Klambauer et al. 2017 and torch's SELU / AlphaDropout."""

from __future__ import annotations

import mpmath
import pytest
import torch

import theory
from theory import selu
from theory.oracle import DIGITS

ALPHA01 = "1.6732632423543772848170429916717"
LAMBDA01 = "1.0507009873554804934193349852946"


def _tol(exponent: int) -> mpmath.mpf:
    return mpmath.mpf(10) ** -exponent


def test_constants_match_published_to_31_decimals():
    with mpmath.workdps(DIGITS):
        assert abs(selu.alpha01() - mpmath.mpf(ALPHA01)) <= _tol(31)
        assert abs(selu.lambda01() - mpmath.mpf(LAMBDA01)) <= _tol(31)


def test_findroot_agrees_with_the_exact_solution():
    a, l = selu.solve_fixed_point()
    with mpmath.workdps(DIGITS):
        assert abs(a - selu.alpha01()) < _tol(45)
        assert abs(l - selu.lambda01()) < _tol(45)


def test_zero_one_is_a_fixed_point():
    m, v = selu.mapping(0, 1)
    with mpmath.workdps(DIGITS):
        assert abs(m) < _tol(25) and abs(v - 1) < _tol(25)


def test_constants_rounded_to_two_decimals_are_not_a_fixed_point():
    m, v = selu.mapping(0, 1, alpha=1.67, lam=1.05)
    assert abs(m) > 1e-3 or abs(v - 1) > 1e-3


@pytest.mark.parametrize(
    ("mu", "nu", "omega", "tau"),
    [(0.05, 1.2, 0.1, 1.05), (-0.1, 0.8, 0.1, 0.95), (0.3, 2.0, -0.5, 1.3)],
)
def test_closed_form_matches_quadrature(mu, nu, omega, tau):
    # Independent of the symbolic integration: integrate selu against the normal density.
    a, l = selu.alpha01(), selu.lambda01()
    with mpmath.workdps(30):
        m, s = mpmath.mpf(mu) * omega, mpmath.sqrt(mpmath.mpf(nu) * tau)

        def f(z):
            return l * z if z > 0 else l * a * (mpmath.exp(z) - 1)

        def e(k):
            return mpmath.quad(
                lambda z: f(z) ** k * mpmath.npdf(z, m, s), [-mpmath.inf, 0, mpmath.inf]
            )

        mean, var = e(1), e(2) - e(1) ** 2
        got_mean, got_var = selu.mapping(mu, nu, omega=omega, tau=tau)
        assert abs(got_mean - mean) < _tol(25) and abs(got_var - var) < _tol(25)


def test_jacobian_matches_published():
    j = selu.jacobian()
    with mpmath.workdps(DIGITS):
        assert j[0, 0] == 0 and j[1, 0] == 0  # at omega = 0, mu enters only as mu*omega
        assert abs(j[0, 1] - mpmath.mpf("0.0888347551068901")) <= _tol(16)
        assert abs(j[1, 1] - mpmath.mpf("0.7826478831968128")) <= _tol(16)


def test_jacobian_matches_numeric_differentiation():
    with mpmath.workdps(DIGITS):
        d_mean = mpmath.diff(lambda v: selu.mapping(0, v)[0], 1)
        d_var = mpmath.diff(lambda v: selu.mapping(0, v)[1], 1)
        j = selu.jacobian()
        assert abs(d_mean - j[0, 1]) < _tol(30) and abs(d_var - j[1, 1]) < _tol(30)
        # Off omega = 0 the mu-column is no longer zero; check it too (binary-exact inputs).
        d_mu = mpmath.diff(lambda u: selu.mapping(u, 1.125, omega=0.125)[0], 0.0625)
        assert abs(d_mu - selu.jacobian(mu=0.0625, nu=1.125, omega=0.125)[0, 0]) < _tol(30)


def test_largest_singular_value():
    o = theory.get("selu.jacobian_max_singular_value")
    with mpmath.workdps(DIGITS):
        assert abs(o.value - mpmath.mpf("0.787673360465716")) <= _tol(15)
        assert abs(o.value - max(mpmath.svd_r(selu.jacobian(), compute_uv=False))) < _tol(40)
    assert o.value < 1  # a contraction: the fixed point attracts


def test_theorem1_domain():
    assert {k: (float(lo), float(hi)) for k, (lo, hi) in selu.THEOREM1_DOMAIN.items()} == {
        "mu": (-0.1, 0.1),
        "omega": (-0.1, 0.1),
        "nu": (0.8, 1.5),
        "tau": (0.95, 1.1),
    }
    assert selu.in_theorem1_domain(mu=0, omega=0, nu=1, tau=1)
    assert not selu.in_theorem1_domain(mu=0, omega=0, nu=1.6, tau=1)


def test_contraction_at_the_corners_of_the_domain():
    # Not the theorem's proof (that covers the whole box); its corners are a cheap necessary check.
    d = selu.THEOREM1_DOMAIN
    for mu in d["mu"]:
        for omega in d["omega"]:
            j = selu.jacobian(mu=mu, nu=1, omega=omega, tau=1)
            assert max(mpmath.svd_r(j, compute_uv=False)) < 1


def test_alpha_dropout_matches_published():
    a, b = selu.alpha_dropout_affine(0.1)
    with mpmath.workdps(DIGITS):
        assert abs(a - mpmath.mpf("0.921284516149711")) <= _tol(15)
        assert abs(b - mpmath.mpf("0.161970970057570")) <= _tol(15)


def test_alpha_dropout_with_explicit_alpha_prime():
    with mpmath.workdps(DIGITS):
        default = selu.alpha_dropout_affine(0.1)
        explicit = selu.alpha_dropout_affine(0.1, alpha_prime=-selu.lambda01() * selu.alpha01())
        assert all(abs(d - e) < _tol(45) for d, e in zip(default, explicit, strict=True))
        # alpha' = -1 (a made-up activation): a = (q + q(1-q))^(-1/2), b = a(1-q).
        a, b = selu.alpha_dropout_affine(0.5, alpha_prime=-1.0)
        assert abs(a - (mpmath.mpf("0.75")) ** -0.5) < _tol(45) and abs(b - a / 2) < _tol(45)


@pytest.mark.parametrize("p", [0.1, 0.25, 0.5])
def test_alpha_dropout_matches_torch(p):
    # On zeros, kept units give b and dropped units give a*alpha' + b.
    a, b = (float(v) for v in selu.alpha_dropout_affine(p))
    alpha_prime = float(theory.get("selu.alpha_prime").value)
    torch.manual_seed(0)
    y = torch.nn.functional.alpha_dropout(torch.zeros(4096, dtype=torch.float64), p, True)
    values = sorted(set(y.tolist()))
    assert len(values) == 2
    assert values[0] == pytest.approx(a * alpha_prime + b, rel=1e-12)
    assert values[1] == pytest.approx(b, rel=1e-12)


def test_torch_selu_uses_these_constants():
    x = torch.tensor([1.0, -1000.0], dtype=torch.float64)
    y = torch.selu(x).tolist()
    assert y[0] == pytest.approx(float(selu.lambda01()), rel=1e-15, abs=0)
    assert y[1] == pytest.approx(-float(selu.lambda01() * selu.alpha01()), rel=1e-15, abs=0)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: selu.mapping(0, -1), "nu=-1"),
        (lambda: selu.mapping(0, 1, tau=0), "tau=0"),
        (lambda: selu.alpha_dropout_affine(1.0), "p=1.0"),
        (lambda: selu.solve_fixed_point(digits=5), "digits=5"),
    ],
)
def test_bad_input_names_the_argument(call, message):
    with pytest.raises(ValueError, match=message):
        call()

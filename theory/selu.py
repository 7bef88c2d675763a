"""SELU: the fixed point of the moment mapping, its stability, and AlphaDropout.

Klambauer, Unterthiner, Mayr, Hochreiter 2017, "Self-Normalizing Neural Networks" (NeurIPS).
A unit computes z = sum_i w_i x_i with inputs of mean ``mu`` and variance ``nu``; with
``omega = n E[w]`` and ``tau = n E[w^2]``, z ~ N(mu*omega, nu*tau) (central limit). The layer maps
the input moments to the output moments of y = selu(z) (paper eq. 4-5):

    mu~ = E[selu(z)],   nu~ = E[selu(z)^2] - mu~^2.

Everything below is derived from that definition: the closed forms with erfc (SymPy integration),
the constants alpha_01, lambda_01 (g(0, 1) = (0, 1) at omega = 0, tau = 1, solved exactly), the
Jacobian at the fixed point (differentiation) and the AlphaDropout affine correction.
"""

from __future__ import annotations

import math
from functools import lru_cache

import mpmath
import numpy as np
import sympy as sp
from scipy import integrate
from sympy import stats

from theory.derivation_cache import cached_derivation
from theory.oracle import DIGITS, Oracle, evaluate
from theory.sampling import FALSE_ALARM, normal_quantile

SOURCE = "Klambauer et al. 2017, Self-Normalizing Neural Networks"
FIXED_POINT = "section 3, Stable and Attracting Fixed Point (0, 1) for Normalized Weights"

mu, omega = sp.symbols("mu omega", real=True)
nu, tau = sp.symbols("nu tau", positive=True)
alpha, lam = sp.symbols("alpha lambda", positive=True)
p = sp.Symbol("p", positive=True)
alpha_p = sp.Symbol("alpha_p", real=True)

#: Theorem 1: for (mu, omega, nu, tau) in this box the mapping g with alpha_01, lambda_01 has a
#: stable and attracting fixed point near (0, 1).
THEOREM1_DOMAIN: dict[str, tuple[sp.Rational, sp.Rational]] = {
    "mu": (sp.Rational(-1, 10), sp.Rational(1, 10)),
    "omega": (sp.Rational(-1, 10), sp.Rational(1, 10)),
    "nu": (sp.Rational(4, 5), sp.Rational(3, 2)),
    "tau": (sp.Rational(19, 20), sp.Rational(11, 10)),
}


def _gaussian_expectation(f: sp.Expr, t: sp.Symbol, lo: sp.Expr, hi: sp.Expr) -> sp.Expr:
    """int_lo^hi f(t) phi(t) dt for the standard normal density phi, in erfc form."""
    phi = sp.exp(-(t**2) / 2) / sp.sqrt(2 * sp.pi)
    # Term by term: SymPy integrates exp(a t) phi(t) and t^k phi(t) quickly, their sum slowly.
    total = sum(
        sp.integrate(sp.powsimp(sp.expand(term * phi)), (t, lo, hi))
        for term in sp.Add.make_args(sp.expand(f))
    )
    # Simplifying per part avoids a spurious 1/m that a joint simplify introduces.
    return sp.simplify(sp.powsimp(sp.expand(total.rewrite(sp.erfc)), combine="exp"))


@cached_derivation  # seconds of integration: derived once per machine, not once per process
def moments_exprs() -> tuple[sp.Expr, sp.Expr]:
    """E[selu(z)] and E[selu(z)^2], z ~ N(mu*omega, nu*tau), alpha and lambda symbolic."""
    t = sp.Symbol("t", real=True)
    m, s = sp.Symbol("m", real=True), sp.Symbol("s", positive=True)
    z = m + s * t  # z >= 0  <=>  t >= -m/s
    mean = lam * (
        _gaussian_expectation(z, t, -m / s, sp.oo)
        + alpha * _gaussian_expectation(sp.exp(z) - 1, t, -sp.oo, -m / s)
    )
    second = lam**2 * (
        _gaussian_expectation(z**2, t, -m / s, sp.oo)
        + alpha**2 * _gaussian_expectation((sp.exp(z) - 1) ** 2, t, -sp.oo, -m / s)
    )
    sub = {m: mu * omega, s: sp.sqrt(nu * tau)}
    return mean.subs(sub), second.subs(sub)


def mapping_exprs() -> tuple[sp.Expr, sp.Expr]:
    """Closed forms (mu~, nu~) of g(mu, omega, nu, tau), alpha and lambda symbolic (eq. 4-5)."""
    mean, second = moments_exprs()
    return mean, second - mean**2


@cached_derivation
def constants_exprs() -> tuple[sp.Expr, sp.Expr]:
    """alpha_01 and lambda_01 as exact closed forms: g(0, 1) = (0, 1) at omega = 0, tau = 1.

    The mean equation is linear in alpha and free of lambda; given alpha, the second-moment
    equation (variance 1 with mean 0) fixes lambda^2. Both are solved symbolically.
    """
    mean, second = moments_exprs()
    at = {mu: 0, omega: 0, nu: 1, tau: 1}
    (a01,) = sp.solve(sp.Eq(mean.subs(at), 0), alpha)
    (l01,) = sp.solve(sp.Eq(second.subs(at).subs(alpha, a01), 1), lam)
    return a01, l01


@lru_cache(maxsize=1)
def alpha01() -> mpmath.mpf:
    """alpha_01 = 1.67326324235437728481704299167... to theory.oracle.DIGITS digits."""
    return evaluate(constants_exprs()[0], {})


@lru_cache(maxsize=1)
def lambda01() -> mpmath.mpf:
    """lambda_01 = 1.05070098735548049341933498529... to theory.oracle.DIGITS digits."""
    return evaluate(constants_exprs()[1], {})


@lru_cache(maxsize=1)
def _numeric_mapping():
    mean, var = mapping_exprs()
    args = (mu, nu, omega, tau, alpha, lam)
    return sp.lambdify(args, mean, "mpmath"), sp.lambdify(args, var, "mpmath")


def mapping(
    mu: float,
    nu: float,
    *,
    omega: float = 0,
    tau: float = 1,
    alpha: float | None = None,
    lam: float | None = None,
) -> tuple[mpmath.mpf, mpmath.mpf]:
    """(mu~, nu~) = g(mu, nu) with mpmath at >= DIGITS digits; alpha, lam default to the 01 pair.

    ``nu`` is the input variance and ``tau = n E[w^2]``; both must be positive.
    """
    for name, value in (("nu", nu), ("tau", tau)):
        if not value > 0:
            raise ValueError(
                f"{name}={value!r}: must be > 0 (a variance / n E[w^2]); pass a positive value"
            )
    alpha = alpha01() if alpha is None else alpha
    lam = lambda01() if lam is None else lam
    f_mean, f_var = _numeric_mapping()
    # Never below the caller's precision: mpmath.diff raises it to take tiny steps.
    with mpmath.workdps(max(DIGITS, mpmath.mp.dps)):
        args = [
            mpmath.mpf(v) if not isinstance(v, mpmath.mpf) else v
            for v in (mu, nu, omega, tau, alpha, lam)
        ]
        return +f_mean(*args), +f_var(*args)


def solve_fixed_point(*, digits: int = DIGITS) -> tuple[mpmath.mpf, mpmath.mpf]:
    """alpha_01, lambda_01 by mpmath.findroot on the numeric mapping: a check on the exact solve."""
    if digits < 15:
        raise ValueError(f"digits={digits!r}: findroot here needs >= 15 digits; pass digits >= 15")
    f_mean, f_var = _numeric_mapping()
    with mpmath.workdps(digits + 10):
        root = mpmath.findroot(
            lambda a, l: (f_mean(0, 1, 0, 1, a, l), f_var(0, 1, 0, 1, a, l) - 1),
            (mpmath.mpf("1.67"), mpmath.mpf("1.05")),
        )
        return +root[0], +root[1]


@lru_cache(maxsize=1)
def jacobian_expr() -> sp.Matrix:
    """d(mu~, nu~)/d(mu, nu): rows are mu~ and nu~, columns mu and nu (the paper's J)."""
    mean, var = mapping_exprs()
    return sp.Matrix([[sp.diff(f, v) for v in (mu, nu)] for f in (mean, var)])


def _fixed_point_params() -> dict[str, sp.Expr]:
    a01, l01 = constants_exprs()
    return {"mu": 0, "omega": 0, "nu": 1, "tau": 1, "alpha": a01, "lambda": l01}


def _exact(value: float | mpmath.mpf | sp.Expr) -> sp.Expr:
    """The exact rational value of a float or mpf: a SymPy Float from a Python float would cap the
    evaluation at ~17 digits (evalf honours the precision of its inputs)."""
    if isinstance(value, mpmath.mpf):
        if not mpmath.isfinite(value):
            raise ValueError(f"value={value!r}: must be finite")
        man, exp = value.man_exp  # |value| = man * 2^exp: man_exp drops the sign
        return (-1 if value < 0 else 1) * sp.Integer(man) * sp.Integer(2) ** exp
    return sp.Rational(value) if isinstance(value, float) else sp.sympify(value)


def jacobian(*, mu: float = 0, nu: float = 1, omega: float = 0, tau: float = 1) -> mpmath.matrix:
    """The Jacobian of g at (mu, nu) with alpha_01, lambda_01; at omega = 0 its mu-column is 0."""
    point = {"mu": mu, "nu": nu, "omega": omega, "tau": tau}
    for name in ("nu", "tau"):
        if not point[name] > 0:
            raise ValueError(f"{name}={point[name]!r}: must be > 0; pass a positive value")
    params = {**_fixed_point_params(), **{k: _exact(v) for k, v in point.items()}}
    return evaluate(jacobian_expr(), params)


_J = sp.Matrix(2, 2, lambda i, k: sp.Symbol(f"j{i}{k}", real=True))


def largest_singular_value_expr() -> sp.Expr:
    """sigma_max of a 2x2 matrix [[j00, j01], [j10, j11]]: the square root of the larger eigenvalue
    of J^T J, (F + sqrt(F^2 - 4 det(J)^2)) / 2 with F the squared Frobenius norm."""
    frob2 = sum(e**2 for e in _J)
    return sp.sqrt((frob2 + sp.sqrt(frob2**2 - 4 * _J.det() ** 2)) / 2)


def in_theorem1_domain(*, mu: float, omega: float, nu: float, tau: float) -> bool:
    """Whether (mu, omega, nu, tau) lies in the box of Theorem 1."""
    point = {"mu": mu, "omega": omega, "nu": nu, "tau": tau}
    return all(lo <= point[k] <= hi for k, (lo, hi) in THEOREM1_DOMAIN.items())


@lru_cache(maxsize=1)
def alpha_dropout_exprs() -> tuple[sp.Expr, sp.Expr]:
    """AlphaDropout's affine correction (a, b) in terms of p and alpha' (paper section 4).

    A dropped unit is set to alpha' = -lambda*alpha (selu's limit at -inf), kept with probability
    q = 1 - p: y = a (x d + alpha' (1 - d)) + b with d ~ Bernoulli(q), x of mean 0 and variance 1.
    Requiring E[y] = 0 and Var[y] = 1 and a > 0 gives a = (q + alpha'^2 q (1-q))^(-1/2),
    b = -a (1-q) alpha'.
    """
    q = 1 - p
    x = stats.Normal("x", 0, 1)
    d = stats.Bernoulli("d", q)
    y = x * d + alpha_p * (1 - d)
    mean, var = sp.simplify(stats.E(y)), sp.simplify(stats.variance(y))
    a, b = sp.symbols("a b", real=True)
    sols = sp.solve([a * mean + b, a**2 * var - 1], [a, b], dict=True)
    # Of the two roots (a, b) and (-a, -b), the positive scale keeps the sign of the signal.
    (sol,) = [s for s in sols if s[a].subs({p: sp.Rational(1, 10), alpha_p: -1}).is_positive]
    return sp.simplify(sol[a]), sp.simplify(sol[b])


def alpha_dropout_affine(p: float, *, alpha_prime: float | None = None) -> tuple[mpmath.mpf, ...]:
    """(a, b) of AlphaDropout for drop probability ``p``; alpha' defaults to -lambda_01*alpha_01."""
    if not 0 <= p < 1:
        raise ValueError(f"p={p!r}: the drop probability must be in [0, 1); pass e.g. p=0.1")
    a_expr, b_expr = alpha_dropout_exprs()
    a01, l01 = constants_exprs()
    ap = -l01 * a01 if alpha_prime is None else _exact(alpha_prime)
    # p as an exact rational of its decimal form: 0.1 means 1/10, not the nearest double.
    params = {"p": sp.Rational(str(p)), "alpha_p": ap}
    return evaluate(a_expr, params), evaluate(b_expr, params)


@lru_cache(maxsize=1)
def float_constants() -> tuple[float, float]:
    """(lambda_01, alpha_01), derived above, rounded once to float64."""
    return float(lambda01()), float(alpha01())


@lru_cache(maxsize=1)
def _affine_functions():
    """alpha_dropout_exprs as mpmath functions: the same expressions, without SymPy's evalf per
    call (0.15 s each)."""
    a_expr, b_expr = alpha_dropout_exprs()
    return sp.lambdify((p, alpha_p), a_expr, "mpmath"), sp.lambdify((p, alpha_p), b_expr, "mpmath")


@lru_cache(maxsize=1024)
def alpha_dropout_float(drop: float) -> tuple[float, float, float]:
    """(a, b, alpha') of AlphaDropout for drop probability ``drop`` (alpha' = -lambda_01
    alpha_01), at 30 digits and rounded once to float64."""
    f_a, f_b = _affine_functions()
    with mpmath.workdps(30):
        ap = -lambda01() * alpha01()
        pp = mpmath.mpf(drop)
        return float(f_a(pp, ap)), float(f_b(pp, ap)), float(ap)


@lru_cache(maxsize=1)
def fixed_point_fourth_moment() -> float:
    """E[selu(z)^4], z ~ N(0, 1) (about 2.503), by quadrature with the derived constants."""
    lam_, alp = float_constants()

    def f(t: float) -> float:
        y = lam_ * t if t > 0 else lam_ * alp * math.expm1(t)
        return y**4 * math.exp(-t * t / 2) / math.sqrt(2 * math.pi)

    return integrate.quad(f, -np.inf, 0)[0] + integrate.quad(f, 0, np.inf)[0]


def fixed_point_bands(
    *, width: int, batch: int, depth: int, alpha: float = FALSE_ALARM
) -> tuple[np.ndarray, np.ndarray, float]:
    """(mean band, variance band, z) per layer of a deep SELU(W x) stack at the fixed point.

    One layer's sampling error, W the width and B the batch:
      variance: weight norms (sum of W^2 w_ij^2 ~ chi^2/W^2: relative sd sqrt(2)/W), random
        cross-unit correlations (w_j . w_k ~ N(0, 1/W): another 1/W^2) and the batch
        (Var(s^2) = (m4 - 1)/(BW) for the output, 1/(BW) for the input's cross moments):
        s_nu^2 = 3/W^2 + m4/(BW), m4 = E[selu(z)^4] = 2.503.
      mean: the batch mean of the output and of the pre-activation: s_mu^2 = 2/(BW).
    These errors accumulate through the layers, but every mode of the moment map contracts:
    the variance by J_nu,nu = 0.78 (:func:`jacobian`), the mean by 0 (omega = 0), the
    inter-example correlation by E[selu'(z)]^2 = 0.97. So after layer l (and the input's own
    sampling) the deviation's variance is at most (l + 2) s^2: a random-walk bound.
    Bonferroni over 2 x depth two-sided tests: z = norm.isf(alpha / (4 depth)), 5.65 for 32.
    Validation, not calibration: over 200 stacks at W = 256, B = 256, 150 at W = 256, B = 512
    and 100 at W = 384, B = 384 (float32), the measured per-layer sd was at most 0.78
    (variance) and 0.52 (mean) of this bound, and the largest deviation 0.47 of the band.
    With W = 256, B = 256 the band is +-0.073 (variance) and +-0.044 (mean) at the first
    layer, +-0.30 and +-0.18 at the 32nd: lambda * ELU(x) with ELU's alpha = 1 (mean 0.17 at
    the first layer) is far outside.
    A SELU whose constants are rounded (1.67, 1.05) moves the fixed point of g to
    (-0.0004, 0.986) (:func:`mapping` iterated with those constants): inside the band
    (weight sampling alone moves the variance by sqrt(2)/W per layer), so selu.constants and
    selu.forward catch that mutant, not this band; lambda * ELU(x) drifts to (0.005, 0.02).
    """
    s_nu = math.sqrt(3.0 / width**2 + fixed_point_fourth_moment() / (batch * width))
    s_mu = math.sqrt(2.0 / (batch * width))
    z = normal_quantile(alpha, 2 * depth)
    steps = np.sqrt(np.arange(depth) + 2.0)
    return z * s_mu * steps, z * s_nu * steps, z


def oracles() -> list[Oracle]:
    a01, l01 = constants_exprs()
    mean, var = mapping_exprs()
    fp = _fixed_point_params()
    jac = jacobian_expr()
    j_fp = jacobian()
    with mpmath.workdps(DIGITS):  # the entries as DIGITS-digit decimals (readable in reports)
        j_params = {
            f"j{i}{k}": sp.Float(mpmath.nstr(j_fp[i, k], DIGITS), DIGITS)
            for i in range(2)
            for k in range(2)
        }
    a_expr, b_expr = alpha_dropout_exprs()
    dropout = {"p": sp.Rational(1, 10), "alpha_p": -l01 * a01}
    domain = sp.Matrix([list(THEOREM1_DOMAIN[k]) for k in ("mu", "omega", "nu", "tau")])

    def o(name, summary, expr, params, source, published=None):
        return Oracle(
            name=f"selu.{name}",
            summary=summary,
            expr=expr,
            value=evaluate(expr, params),
            source=f"{SOURCE}, {source}",
            params=params,
            published=published,
        )

    return [
        o(
            "alpha01",
            "alpha_01: g(0,1) = (0,1) at omega=0, tau=1 (exact solve of the mean eq.)",
            a01,
            {},
            FIXED_POINT,
            "1.6732632423543772848170429916717",
        ),
        o(
            "lambda01",
            "lambda_01: the variance equation at the fixed point, given alpha_01",
            l01,
            {},
            FIXED_POINT,
            "1.0507009873554804934193349852946",
        ),
        o(
            "mapping_mean",
            "mu~ = E[selu(z)], z ~ N(mu*omega, nu*tau); 0 at the fixed point",
            mean,
            fp,
            "eq. 4; closed form in section 3 and appendix",
            "0",
        ),
        o(
            "mapping_variance",
            "nu~ = E[selu(z)^2] - mu~^2; 1 at the fixed point",
            var,
            fp,
            "eq. 5; closed form in section 3 and appendix",
            "1",
        ),
        o(
            "jacobian",
            "d(mu~, nu~)/d(mu, nu) at (0, 1), omega=0, tau=1 (rows mu~, nu~)",
            jac,
            fp,
            FIXED_POINT,
            "[[0, 0.0888347551068901], [0, 0.7826478831968128]]",
        ),
        o(
            "jacobian_max_singular_value",
            "largest singular value of the Jacobian at (0, 1) (< 1: the fixed point attracts)",
            largest_singular_value_expr(),
            j_params,
            FIXED_POINT,
            "0.787673360465716",
        ),
        o(
            "theorem1_domain",
            "Theorem 1 box, rows mu, omega, nu, tau as [low, high]",
            domain,
            {},
            "section 3, Theorem 1 (Stable and Attracting Fixed Points)",
            "[[-0.1, 0.1], [-0.1, 0.1], [0.8, 1.5], [0.95, 1.1]]",
        ),
        o(
            "alpha_prime",
            "alpha' = -lambda*alpha, selu's limit at -infinity (dropped value)",
            -lam * alpha,
            {"alpha": a01, "lambda": l01},
            "section 4, New Dropout Technique",
        ),
        o(
            "alpha_dropout_a",
            "AlphaDropout scale a = (q + alpha'^2 q(1-q))^(-1/2), q = 1-p",
            a_expr,
            dropout,
            "section 4, New Dropout Technique",
            "0.921284516149711",
        ),
        o(
            "alpha_dropout_b",
            "AlphaDropout shift b = -a(1-q) alpha', q = 1-p",
            b_expr,
            dropout,
            "section 4, New Dropout Technique",
            "0.161970970057570",
        ),
    ]

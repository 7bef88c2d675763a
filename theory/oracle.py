"""The one shape every derived result takes: a named oracle.

An oracle is a SymPy expression (the derived formula), the parameters it was evaluated at, the
numeric value there (mpmath, so digits are not lost to float64), a LaTeX form and a citation.
Checks in verify/ read oracles; they never retype a constant.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import mpmath
import sympy as sp

#: Working precision (decimal digits) for every mpmath evaluation in theory/.
DIGITS = 50


@dataclass(frozen=True)
class Oracle:
    """A derived quantity with its provenance.

    ``expr`` is the derived closed form (or defining expression) in terms of ``params``' symbols.
    ``value`` is ``expr`` evaluated at ``params`` to :data:`DIGITS` digits: an ``mpmath.mpf`` for a
    scalar, an ``mpmath.matrix`` for a vector or matrix. ``published`` is the value the literature
    gives, as a string, so tests can compare the derivation with it at the published precision.
    """

    name: str
    summary: str
    expr: sp.Basic
    value: Any
    source: str
    params: Mapping[str, Any] = field(default_factory=dict)
    published: str | None = None

    @property
    def latex(self) -> str:
        return sp.latex(self.expr)

    def __call__(self, **params: Any) -> Any:
        """Evaluate the expression at other parameter values (missing ones keep their defaults)."""
        unknown = set(params) - {s.name for s in self.expr.free_symbols}
        if unknown:
            raise TypeError(
                f"{self.name}: unknown parameter(s) {sorted(unknown)}; "
                f"this oracle takes {sorted(s.name for s in self.expr.free_symbols)}"
            )
        return evaluate(self.expr, {**self.params, **params})

    def as_float(self) -> float | list:
        if isinstance(self.value, mpmath.matrix):
            return [
                [float(self.value[i, j]) for j in range(self.value.cols)]
                for i in range(self.value.rows)
            ]
        return float(self.value)

    def value_str(self, digits: int = 16) -> str:
        if isinstance(self.value, mpmath.matrix):
            rows = [
                "["
                + ", ".join(mpmath.nstr(self.value[i, j], digits) for j in range(self.value.cols))
                + "]"
                for i in range(self.value.rows)
            ]
            return "[" + ", ".join(rows) + "]"
        return mpmath.nstr(self.value, digits)

    def to_json(self, digits: int = 30) -> dict[str, Any]:
        return {
            "name": self.name,
            "summary": self.summary,
            "value": self.value_str(digits),
            "value_float": self.as_float(),
            "formula": str(self.expr),
            "latex": self.latex,
            "params": {k: str(v) for k, v in self.params.items()},
            "published": self.published,
            "source": self.source,
        }


def evaluate(expr: sp.Basic, params: Mapping[str, Any], digits: int = DIGITS) -> Any:
    """Evaluate ``expr`` at ``params`` (symbol name -> number) with mpmath at ``digits`` digits."""
    # Match symbols by name: substitution would otherwise also compare assumptions (positive=...).
    subs = {s: sp.sympify(params[s.name]) for s in expr.free_symbols if s.name in params}
    with mpmath.workdps(digits):
        if isinstance(expr, sp.MatrixBase):
            m = expr.subs(subs).evalf(digits)
            return mpmath.matrix(
                [[mpmath.mpf(str(m[i, j])) for j in range(m.cols)] for i in range(m.rows)]
            )
        return mpmath.mpf(str(sp.N(expr.subs(subs), digits)))


def derived_in(family: str):
    """A constructor for ``family``'s oracles whose value is ``expr`` evaluated at ``params``."""

    def make(name, summary, expr, params, source, published=None) -> Oracle:
        return Oracle(
            name=f"{family}.{name}",
            summary=summary,
            expr=expr,
            value=evaluate(expr, params),
            source=source,
            params=params,
            published=published,
        )

    return make

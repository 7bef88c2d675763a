"""What the normalisation theory tests share: an oracle's derived value against its published one,
and the completeness of a module's oracles (summary, source, parameters, re-evaluation)."""

from __future__ import annotations

import keyword
import re

import mpmath
import sympy as sp
from sympy.parsing.sympy_parser import convert_xor, parse_expr, standard_transformations

from theory.oracle import DIGITS

_NUMBER = re.compile(r"-?\d+(?:\.(\d+))?")


def mismatch(oracle) -> str | None:
    """None if ``oracle``'s derivation matches its published form: a formula in the oracle's own
    symbols (compared symbolically), a decimal (to one unit in its last place) or a matrix."""
    pub = oracle.published.strip()
    if pub.startswith("["):
        entries = [mpmath.mpf(e.group(0)) for e in _NUMBER.finditer(pub)]
        got = [
            oracle.value[i, j] for i in range(oracle.value.rows) for j in range(oracle.value.cols)
        ]
        if got != entries:
            return f"derived {got} vs published {pub}"
        return None
    if match := _NUMBER.fullmatch(pub):
        decimals = match.group(1)
        with mpmath.workdps(DIGITS):
            tol = mpmath.mpf(10) ** -(len(decimals) if decimals else DIGITS - 10)
            if not abs(oracle.value - mpmath.mpf(pub)) <= tol:
                return f"derived {mpmath.nstr(oracle.value, 30)} vs published {pub}"
        return None
    # a symbol may be named like a Python keyword (rounding's lambda): parse it under another name
    local = {
        f"{s.name}_" if keyword.iskeyword(s.name) else s.name: s for s in oracle.expr.free_symbols
    }
    for word in (name[:-1] for name in local if keyword.iskeyword(name[:-1])):
        pub = re.sub(rf"\b{word}\b", f"{word}_", pub)
    parsed = parse_expr(
        pub, local_dict=local, transformations=(*standard_transformations, convert_xor)
    )
    if sp.simplify(oracle.expr - parsed) != 0:
        return f"{oracle.expr} != {parsed}"
    return None


def incomplete(oracle) -> str | None:
    """None if the oracle has a summary, a source, a value for each symbol, and re-evaluates."""
    if not (oracle.summary and oracle.source):
        return "missing summary or source"
    missing = {s.name for s in oracle.expr.free_symbols} - set(oracle.params)
    if missing:
        return f"no value for {sorted(missing)}"
    again = oracle()
    with mpmath.workdps(DIGITS):
        if isinstance(oracle.value, mpmath.matrix):
            err, scale = mpmath.mnorm(again - oracle.value, 1), 1
        else:
            err, scale = abs(again - oracle.value), max(1, abs(oracle.value))
        if not err <= mpmath.mpf(10) ** -40 * scale:
            return f"re-evaluates to {again}, not {oracle.value}"
    return None

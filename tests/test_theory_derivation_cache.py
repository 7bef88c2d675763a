"""The derivation cache: a result comes back from disk in a later process, a changed derivation
is derived again, a damaged file is replaced, and what it returns is what the derivation gives."""

import importlib.util
import pickle
import subprocess
import sys

import pytest
import sympy as sp
from helpers import ENV, ROOT

from theory import derivation_cache, selu

PROBE = """
import sympy as sp
from theory.derivation_cache import cached_derivation

LOG = {log!r}


@cached_derivation
def derived():
    with open(LOG, "a") as f:
        f.write("derived\\n")
    x = sp.Symbol("x", positive=True)
    return sp.integrate(sp.exp(-x) * x ** {power}, (x, 0, sp.oo)), x
"""


def _load(path):
    """A fresh module object from the file, as a new process would import it."""
    spec = importlib.util.spec_from_file_location("vg_cache_probe", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def probe(tmp_path, monkeypatch):
    monkeypatch.setenv(derivation_cache.ENV, str(tmp_path / "cache"))
    log = tmp_path / "log"

    def write(power):
        path = tmp_path / "vg_cache_probe.py"
        path.write_text(PROBE.format(log=str(log), power=power))
        return path

    return write, log


def _derivations(log):
    return log.read_text().count("derived") if log.exists() else 0


def test_a_later_process_loads_the_result_instead_of_deriving_it(probe):
    write, log = probe
    path = write(3)
    first = _load(path).derived()
    again = _load(path).derived()
    assert first == again == (sp.Integer(6), sp.Symbol("x", positive=True))
    assert again[1].is_positive  # assumptions survive the disk
    assert _derivations(log) == 1


def test_a_changed_derivation_is_derived_again(probe):
    write, log = probe
    assert _load(write(3)).derived()[0] == 6
    assert _load(write(4)).derived()[0] == 24
    assert _derivations(log) == 2


def test_a_damaged_file_is_derived_again_and_replaced(probe, tmp_path):
    write, log = probe
    module = _load(write(3))
    module.derived()
    (cached,) = (tmp_path / "cache" / "derivations").glob("*.pickle")
    cached.write_bytes(b"\x80\x04truncated")
    assert _load(write(3)).derived()[0] == 6
    assert _derivations(log) == 2
    assert pickle.loads(cached.read_bytes())[0] == 6


def test_off_writes_nothing(probe, tmp_path, monkeypatch):
    write, log = probe
    monkeypatch.setenv(derivation_cache.ENV, "off")
    path = write(3)
    _load(path).derived()
    _load(path).derived()
    assert _derivations(log) == 2
    assert not (tmp_path / "cache").exists()


def test_the_selu_derivation_from_the_cache_equals_a_fresh_one():
    """A process with the cache off derives the SELU moments and constants by integration; they
    are, symbol for symbol, what this process got (from the cache, when one was there)."""
    code = (
        "import sympy as sp; from theory import selu;"
        "print(sp.srepr((selu.moments_exprs(), selu.constants_exprs())))"
    )
    env = {**ENV, derivation_cache.ENV: "off"}
    fresh = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    assert fresh.stdout.strip() == sp.srepr((selu.moments_exprs(), selu.constants_exprs()))

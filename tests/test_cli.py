"""The command line: formats, exit codes, a user's own class, clear usage errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from helpers import ROOT, varguard

from verify.cli import main
from verify.mutants import catalog


def test_theory_json_entries_carry_value_latex_source(capsys):
    assert main(["theory", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"selu.alpha01", "selu.lambda01", "rounding.gamma_prob"} <= set(data)
    for entry in data.values():
        assert entry["value"] and entry["latex"] and entry["source"]
    assert data["selu.alpha01"]["value"].startswith("1.67326324235437728481704299")


@pytest.mark.parametrize("fmt,marker", [("markdown", "| oracle |"), ("latex", r"\begin{")])
def test_theory_other_formats(capsys, fmt, marker):
    assert main(["theory", "--format", fmt]) == 0
    assert marker in capsys.readouterr().out


def test_unknown_target_is_one_line_and_exit_2():
    out = varguard("run", "--target", "no_such_module_xyz:Thing", "--profile", "quick")
    assert out.returncode == 2
    assert "cannot import module 'no_such_module_xyz'" in out.stderr
    assert "Traceback" not in out.stderr


def test_unknown_family_and_profile_exit_2():
    assert varguard("run", "--family", "nonsense").returncode == 2
    assert varguard("run", "--profile", "nonsense").returncode == 2


USER_BN = """
import torch


class MyBN(torch.nn.BatchNorm2d):
    '''A user's drop-in batch norm, written outside the project.'''


class BrokenBN(torch.nn.BatchNorm2d):
    def forward(self, x):
        return super().forward(x) * 1.01  # 1% off: must fail
"""


@pytest.mark.slow
def test_run_a_user_class_from_outside_the_project(tmp_path):
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "mybn.py").write_text(textwrap.dedent(USER_BN))
    ok = varguard(
        "run", "--target", "mypkg.mybn:MyBN", "--dtype", "float32", "--layout", "contiguous",
        "--profile", "quick", cwd=tmp_path,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "batchnorm.forward" in ok.stdout and "passed" in ok.stdout
    # The default report folder is reports/<date>-<device> under the working directory.
    (default_out,) = (tmp_path / "reports").iterdir()
    assert default_out.name.endswith(("-cpu", "-cuda"))
    written = {p.name for p in default_out.iterdir()}
    assert {"results.jsonl", "report.json", "report.md", "report.html"} <= written
    bad = varguard(
        "run",
        "--target",
        "mypkg.mybn:BrokenBN[float32, contiguous]",
        "--profile",
        "quick",
        "--family",
        "batchnorm",
        "--out",
        "bad",
        cwd=tmp_path,
    )
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "exceed the bound" in bad.stdout
    (script,) = (tmp_path / "bad" / "repro").glob("repro_batchnorm.forward_*.py")
    env = {**os.environ, "PYTHONPATH": ROOT}
    again = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert again.returncode == 1 and "exceed the bound" in again.stdout
    # The shrunk counterexample is kept, to be replayed first by the next run.
    assert list((tmp_path / "varguard-corpus" / "batchnorm.forward").rglob("*.json"))


@pytest.mark.slow
def test_torch_class_named_like_a_user_class(tmp_path):
    out = varguard(
        "run", "--target", "torch.nn:BatchNorm1d", "--dtype", "float32", "--layout", "contiguous",
        "--profile", "quick", "--family", "batchnorm", "--no-depth", cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "torch.nn:BatchNorm1d[float32, contiguous]" in out.stdout


@pytest.mark.slow
def test_mutants_command_kills_the_batchnorm_catalog():
    out = varguard("mutants", "--family", "batchnorm")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SURVIVED" not in out.stdout
    n = sum(m.family == "batchnorm" for m in catalog())
    assert f"mutation score: {n}/{n} killed" in out.stdout
    # Each row: the check that killed it first, the cases that took, known case or search.
    row = next(line for line in out.stdout.splitlines() if line.startswith("bn_eps_on_std"))
    assert "batchnorm.forward" in row and "known case" in row
    assert "cases to the kill: median" in out.stdout


def test_mutants_without_known_cases_measure_the_search():
    out = varguard("mutants", "--mutant", "bn_storage_offset_ignored", "--no-known-cases")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "without the fixed known cases" in out.stdout
    row = next(line for line in out.stdout.splitlines() if line.startswith("bn_storage_offset"))
    assert "search" in row and "x layout offset" in row
    assert varguard("mutants", "--mutant", "no_such_mutant").returncode == 2

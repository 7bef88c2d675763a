"""A user's drop-in is checked where it claims to work: one target per dtype and layout variant,
narrowed by the class's declarations and the command line; a variant the class refuses is
skipped with its reason; a class that is no drop-in at all is refused before any work."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from helpers import varguard
from normtests import SMALL

from verify.checks import get_check
from verify.checks.base import run_check
from verify.profiles import get_profile
from verify.report import coverage
from verify.resolve import TargetError, resolve
from verify.result import Status
from verify.targets import variants

QUICK = get_profile("quick")


def test_names_parse_back():
    name = variants.name("pkg.mod:MyBN", dtype="float16", layout="channels_last")
    assert name == "pkg.mod:MyBN[float16, channels_last]"
    assert variants.parse(name) == ("pkg.mod:MyBN", {"dtype": "float16", "layout": "channels_last"})
    assert variants.parse("pkg.mod:MyBN[bfloat16, strided, cuda]")[1]["device"] == "cuda"
    for bad in ("pkg.mod:MyBN[float17]", "pkg.mod:MyBN[float16, float32]", "pkg.mod:MyBN[x"):
        with pytest.raises(ValueError, match="pkg.mod:MyBN"):
            variants.parse(bad)


def test_torch_classes_are_drop_ins_of_their_rank():
    one = resolve("torch.nn:BatchNorm1d")
    assert one.family == "batchnorm" and one.ranks == (2, 3)
    assert resolve("torch.nn:BatchNorm3d").ranks == (5,)
    v = resolve("torch.nn:BatchNorm2d[float16, channels_last]")
    assert (v.dtype, v.layouts, v.name) == (
        "float16",
        ("channels_last",),
        "torch.nn:BatchNorm2d[float16, channels_last]",
    )
    assert set(resolve("torch.nn:BatchNorm2d[float64, strided]").layouts) == {
        "strided",
        "expanded",
        "offset",
    }
    # BatchNorm1d has no channels_last variant: its inputs are 2-D or 3-D.
    layouts = {t.options["variant"]["layout"] for t in variants.expand(one, variants.Choice())}
    assert layouts == {"contiguous", "strided"}


def test_a_class_that_is_no_drop_in_is_refused_before_any_work():
    with pytest.raises(
        TargetError, match="not a drop-in for torch.nn.modules.batchnorm.BatchNorm2d"
    ):
        resolve("torch.nn:Linear")
    with pytest.raises(TargetError, match="variants in brackets apply to a drop-in class"):
        resolve("torch-eager[float16, contiguous]")
    out = varguard("run", "--target", "torch.nn:Linear", "--profile", "quick")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "not a drop-in" in out.stderr


class Declared(torch.nn.BatchNorm2d):
    varguard_dtypes = ("float32", "bfloat16")
    varguard_layouts = "contiguous"
    varguard_devices = "cpu"


def test_declarations_and_the_command_line_narrow_the_variants():
    template = resolve(f"{__name__}:Declared")
    names = [t.name for t in variants.expand(template, variants.Choice())]
    assert names == [
        f"{__name__}:Declared[float32, contiguous]",
        f"{__name__}:Declared[bfloat16, contiguous]",
    ]
    only = variants.expand(template, variants.Choice(dtypes=("bfloat16", "float16")))
    assert [t.dtype for t in only] == ["bfloat16"]
    assert variants.expand(template, variants.Choice(device="cuda")) == []
    cuda = variants.expand(resolve("torch.nn:BatchNorm2d"), variants.Choice(device="cuda"))
    assert cuda and all(t.requires == ("cuda",) and t.name.endswith(", cuda]") for t in cuda)


class RefusesHalf(torch.nn.BatchNorm2d):
    def forward(self, x):
        if x.dtype == torch.float16:
            raise NotImplementedError("float16 is not supported by this kernel")
        return super().forward(x)


class FailsHalf(torch.nn.BatchNorm2d):
    """Refuses with a message that names nothing it refuses: an error, not a skip."""

    def forward(self, x):
        if x.dtype == torch.float16:
            raise RuntimeError("kernel launch failed")
        return super().forward(x)


def test_a_refused_variant_is_skipped_with_its_reason_never_passed():
    check = get_check("batchnorm.forward")
    refused = run_check(check, resolve(f"{__name__}:RefusesHalf[float16, contiguous]"), QUICK)
    assert refused.status == Status.SKIPPED
    assert "refused by the target" in refused.message and "float16" in refused.message
    fine = run_check(check, resolve(f"{__name__}:RefusesHalf[bfloat16, contiguous]"), QUICK)
    assert fine.status == Status.PASSED
    broken = run_check(check, resolve(f"{__name__}:FailsHalf[float16, contiguous]"), QUICK)
    assert broken.status == Status.ERROR


USER = """
import torch


class MyBN(torch.nn.BatchNorm2d):
    '''A user's drop-in batch norm, written outside the project.'''


class NoHalf(torch.nn.BatchNorm2d):
    def forward(self, x):
        if x.dtype == torch.float16:
            raise NotImplementedError("NoHalf: no float16 kernel")
        return super().forward(x)
"""


def test_a_user_class_from_outside_is_run_as_variants(tmp_path):
    (tmp_path / "userbn.py").write_text(textwrap.dedent(USER))
    out = varguard(
        "run", "--target", "userbn:NoHalf", "--dtype", "float16", "--dtype", "bfloat16",
        "--layout", "channels_last", "--profile", "quick", "--no-depth", "--out", "r",
        cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    by_target: dict[str, set] = {}
    for r in report["results"]:
        by_target.setdefault(r["target"], set()).add(r["status"])
    assert by_target["userbn:NoHalf[float16, channels_last]"] == {"skipped"}
    assert "passed" in by_target["userbn:NoHalf[bfloat16, channels_last]"]
    skipped = [r for r in report["results"] if r["target"].endswith("[float16, channels_last]")]
    assert all("NoHalf: no float16 kernel" in r["message"] for r in skipped)
    # The coverage table has the variant that ran, its layouts and dtype.
    table = report["coverage"]["userbn:NoHalf[bfloat16, channels_last]"]
    assert set(table["dimensions"]["x layout"]) == {"channels_last"}
    assert set(table["dimensions"]["dtype"]) == {"bfloat16"}
    assert "## Configuration coverage" in (tmp_path / "r" / "report.md").read_text()


def test_coverage_tables_flag_what_no_case_reached():
    entries = [
        {
            "target": "t",
            "extra": {
                "coverage": {"dtype": {"float32": [3, 3]}, "x layout": {"contiguous": [2, 1]}},
                "declared": {"x layout": ["contiguous", "channels_last"], "eps": ["1e-12"]},
            },
        },
        {"target": "t", "extra": {"coverage": {"x layout": {"strided": [1, 1]}}}},
        {"target": "u", "extra": {}},
    ]
    tables = coverage.build(entries)
    assert set(tables) == {"t"}
    t = tables["t"]
    assert t["dimensions"]["x layout"]["contiguous"] == {"cases": 2, "passed": 1}
    assert t["unreached"] == {"x layout": ["channels_last"], "eps": ["1e-12"]}
    assert coverage.unreached_count(t) == 2
    rows = {d: (r, u) for d, r, u in coverage.rows(t)}
    assert rows["x layout"] == ("contiguous (2, 1 failed), strided (1)", "channels_last")


@pytest.mark.parametrize(
    "spec, check",
    [
        ("SameDtypeLayerNorm[bfloat16, contiguous, cpu]", "layernorm.forward"),
        ("SameDtypeGroupNorm[bfloat16, contiguous, cpu]", "groupnorm.backward"),
    ],
)
def test_a_class_taking_only_same_dtype_parameters_is_checked_not_skipped(spec, check):
    """torch's CUDA LayerNorm and GroupNorm refuse float32 parameters beside half input: the
    variant finds that out once and its cases give it parameters in its dtype, so the checks run
    (on an H200 the refusal of the first case's float32 parameters skipped 7 of 9 checks); the
    param_dtypes check still tries float32 and accepts the clear refusal."""
    target = resolve("tests.fixtures.same_dtype_norms:" + spec)
    assert target.options["param_dtypes"] == (target.dtype,)
    r = run_check(get_check(check), target, SMALL, seed=0)
    assert r.status == Status.PASSED, r.message
    family = check.split(".")[0]
    pairs = run_check(get_check(f"{family}.param_dtypes"), target, SMALL, seed=0)
    assert pairs.status == Status.PASSED, pairs.message
    assert (
        "param_dtypes"
        not in resolve(f"torch.nn:LayerNorm[{target.dtype}, contiguous, cpu]").options
    )

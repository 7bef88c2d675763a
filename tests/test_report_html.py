"""report.html: self-contained, escaped, failures first; it draws what the report holds."""

from __future__ import annotations

import base64
import math
import re
from html import escape

import pytest

from verify.depth import experiments
from verify.depth.command import to_json
from verify.report import html, plots, schema

META = {
    "varguard": "0.1.0",
    "python": "3.11.2",
    "versions": {"torch": "2.13.0", "hypothesis": "6.100.0"},
    "device": {"kind": "cpu", "name": "test cpu", "cores": 2},
    "seed": 7,
    "profile": "quick",
    "git_revision": "abc123",
    "started": "2025-01-01T00:00:00+00:00",
    "argv": ["varguard", "run", "--profile", "quick"],
}

FAIL_MESSAGE = "max |y - ref| = 3e-2 > allowed 1e-3 <script>alert(1)</script> & x<0"


def _result(target, check, status, **kw):
    return {
        "target": target,
        "check": check,
        "family": check.split(".", 1)[0],
        "status": status,
        "message": kw.pop("message", ""),
        "bound": kw.pop("bound", "atol 1e-6 + rtol 1e-5 |ref|"),
        "worst_ratio": kw.pop("worst_ratio", None),
        "counterexample": kw.pop("counterexample", None),
        "repro_path": kw.pop("repro_path", None),
        "examples": kw.pop("examples", 10),
        "seconds": kw.pop("seconds", 0.5),
        **kw,
    }


RESULTS = [
    _result("torch.BatchNorm1d", "batchnorm.forward_moments", "passed", worst_ratio=0.03),
    _result(
        "mine.FusedBN",
        "batchnorm.backward_closed_form",
        "failed",
        message=FAIL_MESSAGE,
        worst_ratio=30.0,
        counterexample="BNCase(m=3, eps=1e-05, dtype='float16')",
        repro_path="repro/repro_batchnorm.backward_closed_form_mine.FusedBN.py",
    ),
    _result("triton.SELU", "selu.fixed_point", "skipped", message="triton is not installed"),
    _result(
        "mine.Residual",
        "residual.identity_path",
        "error",
        message="RuntimeError: shape mismatch (at block.py:12)",
        worst_ratio="inf",
    ),
    _result(
        "torch.BatchNorm2d",
        "batchnorm.backward_matches_autodiff",
        "passed",
        worst_ratio=0.0,
        extra={
            "known_defects": [
                {
                    "description": "fp16 non-contiguous backward overflows <65504",
                    "present": True,
                    "example": "BNCase(dtype='float16', contiguous=False)",
                }
            ]
        },
    ),
]


NO_SECTIONS = {"depth": None, "converge": None, "bench": None}


@pytest.fixture(scope="module")
def page():
    curves = experiments.curves(4)  # small: the page draws whatever depth.json holds
    depth = {"folder": "depth", "status": "finished", "stage": None}
    depth["data"] = to_json(curves, depth=4, seed=0)
    sections = {**NO_SECTIONS, "depth": depth}
    return html.render(
        schema.validate(schema.build(META, RESULTS, wall_seconds=12.5, sections=sections))
    )


def test_page_lists_every_result_and_the_run(page):
    assert page.startswith("<!DOCTYPE html>")
    for r in RESULTS:
        assert escape(r["target"]) in page
        assert escape(r["check"]) in page
    for text in ("quick", "abc123", "torch 2.13.0", "test cpu", "seed", "12.5 s"):
        assert text in page
    for badge in ("1 failed", "1 error<", "1 skipped", "2 passed"):
        assert badge in page


def test_failures_come_first_escaped_with_repro(page):
    failures = page.index("<h2>Failures")
    assert failures < page.index("<h2>All results")
    assert escape(FAIL_MESSAGE) in page
    assert "<script>" not in page
    assert "&lt;script&gt;" in page and "x&lt;0" in page
    assert f"<pre>{escape(FAIL_MESSAGE)}</pre>" in page
    assert "python repro/repro_batchnorm.backward_closed_form_mine.FusedBN.py" in page
    assert escape("BNCase(m=3, eps=1e-05, dtype='float16')") in page
    # the failed result is listed before the error, both before the plots
    assert page.index("mine.FusedBN", failures) < page.index("mine.Residual", failures)
    assert page.index("RuntimeError: shape mismatch") < page.index("<h2>Worst error")


def test_known_defects_and_statuses(page):
    assert "Known defects" in page
    assert escape("fp16 non-contiguous backward overflows <65504") in page
    assert "still present" in page
    for st in ("passed", "failed", "skipped", "error"):
        assert f'class="st-{st}"' in page
    assert "triton is not installed" in page  # a skipped result shows its reason


def test_self_contained_with_embedded_pngs(page):
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "<link" not in page
    srcs = re.findall(r'src="([^"]*)"', page)
    assert len(srcs) == 3  # ratio distribution, worst cases, depth curves
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")


def test_plots_handle_inf_zero_and_nothing():
    assert plots.ratio_value({"worst_ratio": "inf"}) == math.inf
    assert plots.ratio_value({"worst_ratio": None}) is None
    assert plots.ratio_distribution([]) is None and plots.worst_cases([]) is None
    assert plots.worst_cases(RESULTS, top=2).startswith(b"\x89PNG")
    no_ratios = [r for r in RESULTS if r["worst_ratio"] is None]
    page = html.render(schema.build(META, no_ratios, sections=NO_SECTIONS))
    assert "nothing to plot" in page

"""`varguard bench` for the norm families: each family's plan (sizes and minimum bytes against a
hand derivation), a tiny run per family with its ratios to the copy and to the family's
reference, only verified pairs timed, and the report section looping over the families."""

from __future__ import annotations

import argparse
import json
import shutil

import pytest

from verify.bench import callables, results, section
from verify.bench.command import cmd_bench
from verify.bench.families import all_ops, bench_of, benches
from verify.bench.stage import STAGE
from verify.bench.workloads import default_shapes, min_bytes
from verify.checks import checks_for
from verify.exits import EXIT_OK, UsageError
from verify.families import FAMILIES, REFERENCE_TARGETS
from verify.report import metadata, writer
from verify.report import results as stream
from verify.result import Result
from verify.stages.base import add_subcommand, plan_stage

NORMS = ("layernorm", "rmsnorm", "groupnorm", "prenorm")
FAST = ["--min-rounds", "2", "--max-time", "0.01", "--threads", "1"]


def bench(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="varguard")
    add_subcommand(parser.add_subparsers(dest="command"), STAGE)
    return cmd_bench(parser.parse_args(["bench", *argv]))


# --- the plans: declared once per family, discovered ----------------------------------------


def test_every_norm_family_declares_a_benchmark():
    assert list(benches()) == ["batchnorm", *NORMS]  # FAMILIES order
    assert set(all_ops()) == {"fwd-train", "fwd-eval", "bwd-train", "tail-train"}
    assert bench_of("prenorm").op_names == ("tail-train", "bwd-train")
    for family in NORMS:
        assert bench_of(family).op_names[-1] == "bwd-train"
    with pytest.raises(ValueError, match="'residual' declares no benchmark"):
        bench_of("residual")


@pytest.mark.parametrize("family", list(benches()))
def test_each_op_is_timed_by_a_known_callable_and_rests_on_real_checks(family):
    registered = {c.name for c in checks_for(family)}
    for op in bench_of(family).ops:
        assert op.kind in callables.KINDS, (family, op.name)
        assert op.checks and set(op.checks) <= registered, (family, op.name, op.checks)


def test_row_norm_sizes_are_transformer_sizes():
    for family in ("layernorm", "rmsnorm", "prenorm"):
        gpu = default_shapes(family=family, device="cuda", quick=False)
        assert {(2048, 768), (4096, 4096), (8192, 8192), (16384, 4096)} <= set(gpu)
        assert all(768 <= h <= 8192 and 2048 <= t <= 16384 for t, h in gpu)
        assert default_shapes(family=family, device="cuda", quick=True) == [
            (2048, 768),
            (4096, 4096),
        ]
        # On a CPU the tokens shrink like batch norm's batch (32 -> 8 -> 2): /4, /16 quick.
        assert default_shapes(family=family, device="cpu", quick=True) == [(128, 768), (256, 4096)]
        assert (2048, 8192) in default_shapes(family=family, device="cpu", quick=False)
        assert default_shapes(family=family, device="cpu", quick=True, batch=16) == [
            (16, 768),
            (16, 4096),
        ]
    assert bench_of("rmsnorm").label((2, 4096)) == "Llama-2 7B / Llama-3 8B, hidden 4096"
    assert bench_of("rmsnorm").label((2, 1000)) == "custom"


def test_group_norm_sizes_have_32_groups():
    gpu = default_shapes(family="groupnorm", device="cuda", quick=False)
    assert (8, 320, 64, 64) in gpu and (32, 256, 56, 56) in gpu  # SD UNet, ResNet-50-GN
    assert all(len(s) == 4 and s[1] % 32 == 0 for s in gpu)
    assert default_shapes(family="groupnorm", device="cpu", quick=True) == [
        (2, 320, 64, 64),
        (2, 1280, 16, 16),
    ]
    assert bench_of("groupnorm").label((2, 320, 64, 64)) == "SD UNet 64x64 block"


def test_batch_norm_plan_is_unchanged():
    """ResNet-50's layers at batch 32 on a GPU, 8 on the CPU, 2 with --quick (as before)."""
    assert default_shapes(family="batchnorm", device="cuda", quick=True) == [
        (32, 64, 56, 56),
        (32, 2048, 7, 7),
    ]
    assert len(default_shapes(family="batchnorm", device="cpu", quick=False)) == 5
    assert {s[0] for s in default_shapes(family="batchnorm", device="cpu", quick=False)} == {8}
    assert {s[0] for s in default_shapes(family="batchnorm", device="cpu", quick=True)} == {2}
    assert min_bytes("fwd-train", (2, 4, 4, 4), "float32") == 2 * 128 * 4 + 8 * 16


# Minimum bytes, derived by hand: each input read once, each output written once; activations
# in the dtype, weight/bias and saved statistics float32 (4 bytes).
HAND = [
    # LayerNorm forward, (2048, 768) float32: x and y are 2048*768*4 = 6,291,456 bytes each;
    # weight and bias 2*768*4 = 6,144; saved mean and 1/std 2*2048*4 = 16,384.
    ("layernorm", "fwd-train", (2048, 768), "float32", 2 * 6_291_456 + 6_144 + 16_384),
    # LayerNorm backward, (4096, 4096) bfloat16: dy, x, dx 4096*4096*2 = 33,554,432 each;
    # weight, dweight, dbias 3*4096*4 = 49,152; mean and 1/std 2*4096*4 = 32,768.
    ("layernorm", "bwd-train", (4096, 4096), "bfloat16", 3 * 33_554_432 + 49_152 + 32_768),
    # RMSNorm forward, (2048, 768) float32: x, y; weight 768*4 = 3,072; 1/rms 2048*4 = 8,192.
    ("rmsnorm", "fwd-train", (2048, 768), "float32", 2 * 6_291_456 + 3_072 + 8_192),
    # RMSNorm backward, (2048, 768) float32: dy, x, dx; weight and dweight; 1/rms.
    ("rmsnorm", "bwd-train", (2048, 768), "float32", 3 * 6_291_456 + 6_144 + 8_192),
    # Add + RMSNorm, (4096, 4096) bfloat16: x, residual read, y and h written; weight
    # 4096*4 = 16,384; 1/rms 4096*4 = 16,384.
    ("prenorm", "tail-train", (4096, 4096), "bfloat16", 4 * 33_554_432 + 16_384 + 16_384),
    # Its backward: dy, dh, h read, d(x + residual) written once; weight, dweight; 1/rms.
    ("prenorm", "bwd-train", (4096, 4096), "bfloat16", 4 * 33_554_432 + 32_768 + 16_384),
    # GroupNorm forward, (8, 320, 64, 64) float32: x, y 8*320*64*64*4 = 41,943,040 each;
    # weight, bias 2*320*4 = 2,560; mean and 1/std per (sample, group) 2*8*32*4 = 2,048.
    ("groupnorm", "fwd-train", (8, 320, 64, 64), "float32", 2 * 41_943_040 + 2_560 + 2_048),
    # GroupNorm backward, (8, 320, 64, 64) float32: dy, x, dx; weight, dweight, dbias; stats.
    ("groupnorm", "bwd-train", (8, 320, 64, 64), "float32", 3 * 41_943_040 + 3_840 + 2_048),
    # A custom C = 48 takes gcd(48, 32) = 16 groups: stats 2*2*16*4 = 256; x 2*48*2*2*4 = 1,536.
    ("groupnorm", "fwd-train", (2, 48, 2, 2), "float32", 2 * 1_536 + 2 * 48 * 4 + 256),
]


@pytest.mark.parametrize(("family", "op", "shape", "dtype", "expected"), HAND)
def test_min_bytes_match_the_hand_derivation(family, op, shape, dtype, expected):
    assert min_bytes(op, shape, dtype, family=family) == expected


def test_min_bytes_refuse_an_op_the_family_does_not_time():
    with pytest.raises(ValueError, match="rmsnorm times fwd-train, bwd-train"):
        min_bytes("fwd-eval", (8, 64), "float32", family="rmsnorm")


# --- a tiny run of every norm family, verification from a stored report ---------------------

#: Per family, its reference and one more eager target: both marked passed in the report.
TIMED = {
    "layernorm": ("torch-layernorm", "torch-layernorm-functional"),
    "rmsnorm": ("torch-rmsnorm", "torch-rmsnorm-functional"),
    "groupnorm": ("torch-groupnorm", "varguard-explicit-groupnorm"),
    "prenorm": ("torch-add-rmsnorm", "varguard-explicit-add-rmsnorm"),
}
SIZES = ["--size", "8x64", "--size", "2x32x4x4"]


def _report(folder, passed: dict[str, tuple[str, ...]]):
    """A `varguard run` report in which each family's bench checks passed on ``passed``."""
    out = stream.ResultStream(folder / stream.FILENAME, metadata.collect(seed=0, profile="quick"))
    for family, names in passed.items():
        checks = {c for op in bench_of(family).ops for c in op.checks}
        for target in names:
            for check in sorted(checks):
                out.append(Result(check=check, target=target, family=family, status="passed",
                                  message=""))  # fmt: skip
    writer.write(folder)
    return folder


@pytest.fixture(scope="module")
def norm_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("norm-bench")
    verified = _report(root / "run", TIMED)
    out = root / "bench"
    families = [a for f in NORMS for a in ("--family", f)]
    code = bench(*families, "--verified", str(verified), "--out", str(out), *SIZES, *FAST)
    return code, out


def _infos(out) -> dict[str, dict]:
    data = json.loads((out / "bench.json").read_text())
    return {b["extra_info"]["id"]: b["extra_info"] for b in data["benchmarks"]}


def test_each_norm_family_is_timed_against_its_reference_and_the_copy(norm_run):
    code, out = norm_run
    assert code == EXIT_OK
    infos = _infos(out)
    data = json.loads((out / "bench.json").read_text())
    assert data["varguard"]["references"] == {f: REFERENCE_TARGETS[f] for f in NORMS}
    for family, (reference, other) in TIMED.items():
        shape = "8x64" if bench_of(family).ranks == (2,) else "2x32x4x4"
        for op in bench_of(family).op_names:
            ref, mine = infos[f"{op}:{reference}:{shape}"], infos[f"{op}:{other}:{shape}"]
            assert ref["family"] == mine["family"] == family
            assert ref["speedup_vs_reference"] == 1.0 and mine["reference"] == reference
            assert mine["speedup_vs_reference"] == pytest.approx(ref["time_s"] / mine["time_s"])
            for info in (ref, mine):
                assert info["bytes"] == min_bytes(op, info["shape"], "float32", family=family)
                assert (
                    0 < info["bandwidth_ratio"] == pytest.approx(info["gbps"] / info["copy_gbps"])
                )
                assert infos[info["copy_id"]]["kind"] == "copy"


def test_only_verified_targets_are_timed_and_interpreted_triton_is_not(norm_run):
    _, out = norm_run
    timed = {i["target"] for i in _infos(out).values() if i["kind"] == "op"}
    assert timed == {t for names in TIMED.values() for t in names}
    data = json.loads((out / "bench.json").read_text())
    why = {(s["target"], s["op"]): s["why"] for s in data["varguard"]["skipped"]}
    assert "not verified: rmsnorm.forward" in why[("torch-rmsnorm-float64", "fwd-train")]
    assert "Triton interpreter" in why[("triton-rmsnorm", "fwd-train")]
    assert "Triton interpreter" in why[("triton-add-rmsnorm", "tail-train")]
    assert "add + LayerNorm" in why[("torch-add-layernorm", "tail-train")]
    assert not any(t.startswith(("torch-eager", "cuda-cudnn")) for t, _ in why)  # no BN


def test_bench_md_has_a_table_per_family_and_op(norm_run):
    _, out = norm_run
    md = (out / "bench.md").read_text()
    for family in NORMS:
        for op in bench_of(family).ops:
            assert f"## {family} {op.name}: {op.what}" in md
    assert "| shape (tokens, hidden) | model |" in md and "| shape (N, C, H, W) | layer |" in md
    assert "Reference: torch-add-rmsnorm." in md
    assert "batchnorm" not in md.split("## copy")[0].split("Time:")[1]


def test_report_section_loops_over_the_families(norm_run, tmp_path):
    """report.json's bench rows carry their family; Markdown and HTML show one table each."""
    _, out = norm_run
    shutil.copytree(out, tmp_path / section.FOLDER)
    sec = section.collect(tmp_path)
    assert sec["status"] == "finished" and sec["references"]["groupnorm"] == "torch-groupnorm"
    assert {r["family"] for r in sec["rows"]} == set(NORMS)
    row = next(r for r in sec["rows"] if r["target"] == "torch-layernorm-functional")
    assert row["reference"] == "torch-layernorm" and row["speedup_vs_reference"] > 0
    md = "\n".join(section.markdown(sec))
    page = "\n".join(section.html(sec))
    for family in NORMS:
        title = f"{family} (reference {REFERENCE_TARGETS[family]})"
        assert f"### {title}" in md and f"<h3>{title}</h3>" in page
    assert "| tail-train | 8x64 | custom | torch-add-rmsnorm | float32 |" in md
    assert md.index("### layernorm") < md.index("### rmsnorm") < md.index("### groupnorm")
    assert 'alt="achieved bandwidth as a fraction of a copy' in page


# --- verification run here, the command-line options, the stage ------------------------------


def test_a_failing_norm_target_is_not_timed(tmp_path):
    """The checks run first (quick profile): a Gemma-offset RMSNorm fails rmsnorm.forward and
    rmsnorm.backward, so only torch-rmsnorm is timed."""
    out = tmp_path / "bench"
    code = bench("--family", "rmsnorm", "--target", "torch-rmsnorm", "--target",
                 "mutant:rms_gemma_offset", "--size", "8x64", "--out", str(out), *FAST)  # fmt: skip
    assert code == EXIT_OK
    infos = [i for i in _infos(out).values() if i["kind"] == "op"]
    assert {(i["target"], i["op"]) for i in infos} == {
        ("torch-rmsnorm", "fwd-train"),
        ("torch-rmsnorm", "bwd-train"),
    }
    assert all(i["speedup_vs_reference"] == 1.0 and i["bandwidth_ratio"] > 0 for i in infos)
    data = json.loads((out / "bench.json").read_text())
    assert data["varguard"]["reference"] == "torch-rmsnorm"  # one family: its reference
    why = {(s["target"], s["op"]): s["why"] for s in data["varguard"]["skipped"]}
    assert (
        "rmsnorm.forward on mutant:rms_gemma_offset failed"
        in why[("mutant:rms_gemma_offset", "fwd-train")]
    )


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--family", "rmsnorm", "--size", "2x4x4x4"], "none of the sizes has rmsnorm's rank"),
        (["--family", "rmsnorm", "--op", "fwd-eval"], "--op fwd-eval: none of the families"),
        (["--target", "torch-layernorm", "--family", "rmsnorm"], "a layernorm target, and --fam"),
        (["--target", "torch-basic-inplace"], "a residual target"),
    ],
)
def test_usage_errors(argv, match, tmp_path):
    with pytest.raises(UsageError, match=match):
        bench(*argv, "--out", str(tmp_path / "b"), *FAST)
    assert not (tmp_path / "b").exists()


def test_size_of_another_rank_is_refused_by_the_parser():
    with pytest.raises(SystemExit):
        bench("--size", "2x4x4")


def test_run_family_narrows_the_bench_stage():
    """`varguard run --family rmsnorm` times rmsnorm's targets; the stage takes every family
    with a benchmark."""
    assert set(STAGE.families) == set(benches()) <= set(FAMILIES)
    planned = plan_stage(STAGE, profile="standard", flag=None, disabled=False,
                         run_targets=None, families=["rmsnorm", "init"])  # fmt: skip
    assert planned.options[-2:] == ("--family", "rmsnorm") and "--quick" in planned.options
    everything = plan_stage(STAGE, profile="standard", flag=None, disabled=False,
                            run_targets=None, families=None)  # fmt: skip
    assert "--family" not in everything.options
    assert plan_stage(STAGE, profile="standard", flag=None, disabled=False,
                      run_targets=None, families=["init"]) is None  # fmt: skip


def test_annotate_compares_each_family_with_its_own_reference():
    """Two families timed at one shape id: each row's ratio uses its family's reference."""

    def bench_row(family, target, seconds):
        info = {"kind": "op", "id": f"fwd-train:{target}:8x64", "family": family,
                "target": target, "op": "fwd-train", "shape": [8, 64], "bytes": 1000,
                "copy_id": "copy:1000B:cpu"}  # fmt: skip
        return {"stats": {"median": seconds}, "extra_info": info}

    data = {
        "benchmarks": [
            bench_row("layernorm", "torch-layernorm", 2.0),
            bench_row("layernorm", "fast-ln", 1.0),
            bench_row("rmsnorm", "torch-rmsnorm", 4.0),
            bench_row("rmsnorm", "fast-rms", 1.0),
        ]
    }
    refs = {"layernorm": "torch-layernorm", "rmsnorm": "torch-rmsnorm"}
    infos = {b["extra_info"]["target"]: b["extra_info"]
             for b in results.annotate(data, references=refs)["benchmarks"]}  # fmt: skip
    assert infos["fast-ln"]["speedup_vs_reference"] == 2.0
    assert infos["fast-rms"]["speedup_vs_reference"] == 4.0
    assert infos["fast-rms"]["reference"] == "torch-rmsnorm"

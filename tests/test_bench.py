"""`varguard bench`: a tiny run writes pytest-benchmark JSON with the bandwidth fields and
bench.md, only verified (target, operation) pairs are timed, and --compare flags a slowdown."""

from __future__ import annotations

import argparse
import copy
import json

import pytest

from verify.bench import results
from verify.bench.command import cmd_bench
from verify.bench.stage import STAGE
from verify.bench.workloads import min_bytes
from verify.exits import EXIT_FAILED, EXIT_OK, UsageError
from verify.report import metadata, writer
from verify.report import results as stream
from verify.result import Result
from verify.stages.base import add_subcommand

TINY = ["--size", "2x4x4x4", "--min-rounds", "2", "--max-time", "0.01", "--threads", "1"]


def bench(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="varguard")
    add_subcommand(parser.add_subparsers(dest="command"), STAGE)
    args = parser.parse_args(["bench", *argv])
    return cmd_bench(args)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    code = bench(
        "--target", "torch-eager", "--target", "mutant:bn_backward_stats_constant",
        "--op", "fwd-train", "--op", "bwd-train", "--out", str(out), *TINY,
    )  # fmt: skip
    return code, out


def test_tiny_run_writes_json_with_bandwidth_ratios(tiny_run):
    code, out = tiny_run
    assert code == EXIT_OK
    data = json.loads((out / "bench.json").read_text())
    infos = {b["extra_info"]["id"]: b["extra_info"] for b in data["benchmarks"]}
    fwd = infos["fwd-train:torch-eager:2x4x4x4"]
    assert fwd["bytes"] == min_bytes("fwd-train", (2, 4, 4, 4), "float32") == 2 * 128 * 4 + 8 * 16
    for key in ("time_s", "gbps", "copy_gbps", "bandwidth_ratio", "speedup_vs_reference"):
        assert fwd[key] > 0, key
    assert fwd["bandwidth_ratio"] == pytest.approx(fwd["gbps"] / fwd["copy_gbps"])
    assert fwd["speedup_vs_reference"] == 1.0  # torch-eager is the reference
    assert infos[fwd["copy_id"]]["kind"] == "copy"
    assert data["varguard"]["reference"] == "torch-eager"
    md = (out / "bench.md").read_text()
    assert "ratio to copy" in md and "fwd-train" in md and "copy (the bandwidth yardstick)" in md


def test_only_verified_pairs_are_timed(tiny_run):
    """The mutant's forward is right and is timed; its backward fails batchnorm.backward."""
    _, out = tiny_run
    data = json.loads((out / "bench.json").read_text())
    ids = {b["extra_info"]["id"] for b in data["benchmarks"]}
    assert "fwd-train:mutant:bn_backward_stats_constant:2x4x4x4" in ids
    assert "bwd-train:mutant:bn_backward_stats_constant:2x4x4x4" not in ids
    skipped = {(s["target"], s["op"]): s["why"] for s in data["varguard"]["skipped"]}
    assert "batchnorm.backward" in skipped[("mutant:bn_backward_stats_constant", "bwd-train")]
    assert "Not benchmarked" in (out / "bench.md").read_text()


def _slowed(data: dict, factor: float) -> dict:
    """``data`` as if every operation had taken ``factor`` times as long."""
    out = copy.deepcopy(data)
    for b in out["benchmarks"]:
        if b["extra_info"].get("kind") == "op":
            for key in ("min", "max", "mean", "median"):
                b["stats"][key] *= factor
    return out


def test_compare_flags_an_injected_2x_slowdown(tiny_run, tmp_path):
    _, out = tiny_run
    data = json.loads((out / "bench.json").read_text())
    assert not any(c.regression for c in results.compare(data, data, threshold=0.1))
    changes = results.compare(_slowed(data, 0.5), data, threshold=0.1)
    assert changes and all(c.regression for c in changes)
    assert all(c.ratio == pytest.approx(2.0) for c in changes)
    # The command: an old run twice as fast as this one is a regression, exit 1.
    old = tmp_path / "old.json"
    old.write_text(json.dumps(_slowed(data, 0.5)))
    new = tmp_path / "new"
    code = bench("--target", "torch-eager", "--op", "fwd-train", "--out", str(new),
                 "--compare", str(old), *TINY)  # fmt: skip
    assert code == EXIT_FAILED
    assert "REGRESSION" in (new / "bench.md").read_text()


def test_compare_refuses_another_machines_timings(tiny_run, tmp_path):
    """Timings from another device or thread count compare hardware, not code."""
    _, out = tiny_run
    data = json.loads((out / "bench.json").read_text())
    elsewhere = copy.deepcopy(data)
    elsewhere["varguard"]["meta"]["device"]["torch_threads"] = 64
    old = tmp_path / "old.json"
    old.write_text(json.dumps(elsewhere))
    argv = ["--target", "torch-eager", "--op", "fwd-train", "--out", str(tmp_path / "new"),
            "--compare", str(old), *TINY]  # fmt: skip
    with pytest.raises(UsageError, match="torch_threads 64 then, 1 now.*--any-machine"):
        bench(*argv)
    assert not (tmp_path / "new").exists()  # refused before timing anything
    # Timing noise on a tiny op is not what is tested here: a threshold no noise reaches.
    assert bench(*argv, "--any-machine", "--threshold", "10") == EXIT_OK
    del elsewhere["varguard"]
    assert "no device record" in results.machine_difference(elsewhere, {"kind": "cpu"})


def test_verification_can_come_from_a_report(tmp_path):
    """--verified REPORT: the checks are not run; a failure recorded there refuses the pair."""
    run = tmp_path / "run"
    out = stream.ResultStream(run / stream.FILENAME, metadata.collect(seed=0, profile="quick"))
    for check, status in (("batchnorm.forward", "passed"), ("batchnorm.backward", "failed")):
        out.append(
            Result(check=check, target="torch-eager", family="batchnorm", status=status,
                        message=f"{status} in a stored run")
        )  # fmt: skip
    writer.write(run)
    bench_out = tmp_path / "bench"
    code = bench("--target", "torch-eager", "--op", "fwd-train", "--op", "bwd-train",
                 "--verified", str(run), "--out", str(bench_out), *TINY)  # fmt: skip
    assert code == EXIT_OK
    data = json.loads((bench_out / "bench.json").read_text())
    assert {
        b["extra_info"]["id"] for b in data["benchmarks"] if b["extra_info"]["kind"] == "op"
    } == {"fwd-train:torch-eager:2x4x4x4"}
    (why,) = [s["why"] for s in data["varguard"]["skipped"] if s["op"] == "bwd-train"]
    assert "batchnorm.backward on torch-eager failed" in why


def test_usage_errors(tmp_path):
    with pytest.raises(SystemExit):
        bench("--size", "2x4x4")
    with pytest.raises(UsageError, match="--compare"):
        bench("--compare", str(tmp_path / "missing.json"), *TINY)
    with pytest.raises(UsageError, match="residual"):
        bench("--target", "torch-basic-inplace", *TINY)

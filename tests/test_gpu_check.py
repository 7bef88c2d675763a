"""scripts/gpu-check, the GPU run as one device command (issue 14), tested where it can be on a
CPU machine: it refuses clearly without a GPU, packs a report folder into one archive (the
device tool returns at most 8 files), summarises, and runs end to end with --allow-cpu."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from tests.helpers import ENV, ROOT, varguard

SCRIPT = Path(ROOT) / "scripts" / "gpu-check"


def _module():
    loader = importlib.machinery.SourceFileLoader("gpu_check", str(SCRIPT))
    spec = importlib.util.spec_from_loader("gpu_check", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def _script(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=ENV,
        timeout=timeout,
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_it_stops_at_once_and_says_why(tmp_path):
    out = _script("--out", str(tmp_path), "--no-install")
    assert out.returncode == 2
    assert "no CUDA GPU" in out.stderr and "--allow-cpu" in out.stderr
    assert not (tmp_path / "gpu-report.tar.gz").exists()  # nothing ran, nothing to pack


def test_out_is_required_without_the_variable(tmp_path):
    env = {k: v for k, v in ENV.items() if k != "OUT"}
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--allow-cpu"], capture_output=True, text=True, env=env
    )
    assert out.returncode == 2 and "--out is required" in out.stderr


def test_pack_keeps_the_folder_tree_under_one_top_folder(tmp_path):
    report = tmp_path / "report"
    (report / "bench").mkdir(parents=True)
    (report / "report.json").write_text("{}")
    (report / "bench" / "bench.json").write_text("[]")
    archive = tmp_path / "r.tar.gz"
    assert _module().pack(report, archive) == 2
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == ["report/bench/bench.json", "report/report.json"]


def test_pack_of_a_run_that_wrote_nothing_is_an_empty_archive(tmp_path):
    archive = tmp_path / "r.tar.gz"
    assert _module().pack(tmp_path / "never-made", archive) == 0
    with tarfile.open(archive) as tar:
        assert tar.getnames() == []


def test_summary_counts_statuses_and_says_interrupted(tmp_path):
    report = tmp_path / "report"
    report.mkdir()
    body = {
        "summary": {"passed": 7, "failed": 1, "error": 0, "skipped": 2},
        "run": {"interrupted": True, "wall_seconds": 412.3},
    }
    (report / "report.json").write_text(json.dumps(body))
    line = _module().summary(report, rc=3, packed=5, archive=tmp_path / "a.tar.gz")
    assert "7 passed, 1 failed, 0 errors, 2 skipped (interrupted) in 412 s" in line
    assert "exit 3" in line and "5 files" in line
    assert "no report.json" in _module().summary(tmp_path, rc=1, packed=0, archive=tmp_path)


def test_end_to_end_on_the_cpu_packs_the_report_the_suite_wrote(tmp_path):
    out = _script(
        "--allow-cpu", "--no-install", "--profile", "quick", "--out", str(tmp_path),
        "--", "--family", "init", "--target", "torch-xavier-normal", "--no-depth",
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    summary = (tmp_path / "summary.txt").read_text()
    assert summary.startswith("gpu-check: 2 passed, 0 failed, 0 errors")
    assert summary.strip() in out.stdout
    with tarfile.open(tmp_path / "gpu-report.tar.gz") as tar:
        names = set(tar.getnames())
        report = json.load(tar.extractfile("report/report.json"))
    assert {"report/report.json", "report/report.md", "report/report.html"} <= names
    assert report["run"]["profile"] == "quick"
    assert "init.variance" in (tmp_path / "run.log").read_text()
    # The device tool returns at most 8 files, no deeper than two folders.
    assert len(list(tmp_path.rglob("*"))) <= 8


# --- the gpu profile's plan, on any machine ----------------------------------------------------


def test_the_gpu_profile_plans_every_gpu_target_and_its_stages(tmp_path):
    """`run --profile gpu --plan`: the CUDA targets of every family, every project Triton
    kernel, no CPU target; the bench against cuDNN and the convergence run on CUDA."""
    proc = varguard("run", "--profile", "gpu", "--plan", "--out", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    planned = {line.split()[1] for line in proc.stdout.splitlines() if line.startswith("  target")}
    gpu_bn = {"cuda-cudnn", "cuda-native", "cuda-compile", "cuda-autocast-fp16", "cuda-syncbn"}
    kernels = {"triton-bn", "triton-bn-split", "triton-layernorm", "triton-rmsnorm"}
    assert gpu_bn | kernels | {"triton-add-rmsnorm", "triton-basic-fused-tail"} <= planned
    gpu_norms = {"cuda-layernorm-float16", "cuda-rmsnorm-compile", "cuda-add-rmsnorm-bfloat16"}
    assert gpu_norms | {"cuda-groupnorm-channels-last", "cuda-groupnorm-autocast-fp16"} <= planned
    assert not any(name.startswith(("torch-", "varguard-")) for name in planned)
    stages = {line.split()[1]: line for line in proc.stdout.splitlines() if "  stage " in line}
    assert list(stages) == ["bench:", "depth:", "converge:"]  # the order the run takes them
    for ref in ("cuda-cudnn", "cuda-layernorm", "cuda-rmsnorm", "cuda-groupnorm"):
        assert f"--reference {ref}" in stages["bench:"]  # every family against torch's CUDA
    assert "--target cuda-native" in stages["converge:"]
    assert not (tmp_path / "r").exists()  # a plan runs nothing


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_the_gpu_profile_refuses_a_machine_without_cuda(tmp_path):
    proc = varguard("run", "--profile", "gpu", "--out", str(tmp_path / "r"))
    assert proc.returncode == 2
    assert "--profile gpu" in proc.stderr and "no CUDA GPU" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "r").exists()


def test_the_smoke_run_plans_each_gpu_kind_and_no_stage(tmp_path):
    """--smoke's targets all exist (a misspelt one would end the device command at once) and it
    runs checks only."""
    smoke = _module()
    proc = varguard("run", "--profile", "gpu", "--plan", *smoke.SMOKE_ARGS, "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    planned = {line.split()[1] for line in proc.stdout.splitlines() if line.startswith("  target")}
    assert set(smoke.SMOKE_TARGETS) <= planned
    assert any(name.startswith("torch.nn:LayerNorm[") for name in planned)
    runs = [ln for ln in proc.stdout.splitlines() if "  stage " in ln and "skipped" not in ln]
    assert runs == []

"""verify.converge under torchrun: two processes, DistributedDataParallel over gloo on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="this torch build has no torch.distributed with the gloo backend",
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_torchrun_two_processes_gloo(tmp_path):
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
        "-m", "verify.converge.command",
        "--model", "tiny", "--train-limit", "768", "--epochs", "3", "--seeds", "1",
        "--threshold", "0.5", "--controls", "none", "--device", "cpu", "--no-progress",
        "--out", str(tmp_path),
    ]  # fmt: skip
    # One thread per rank: two ranks on a two-core machine (torchrun sets this too, noisily).
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "converge.json").read_text())
    assert report["environment"]["world_size"] == 2
    assert report["environment"]["backend"] == "gloo"
    (run,) = [r for r in report["runs"] if r["role"] == "reference"]
    assert run["acc"][-1] >= 0.5 and run["failure"] is None
    # Only rank 0 reports: one table, not two.
    assert proc.stdout.count("converge: tiny on digits") == 1

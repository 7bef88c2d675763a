"""Reports and the gate: schema, exit codes, resume after a killed run, isolation."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
from helpers import ENV, ROOT, varguard

from verify import corpus
from verify.checks import checks_for, get_check
from verify.checks.base import run_check
from verify.execution import Job, execution_for, run_checks
from verify.profiles import get_profile
from verify.report import gate, results, schema, writer
from verify.resolve import resolve
from verify.result import Result, Status

BN_CHECKS = len(checks_for("batchnorm"))


def _result(target, check, status, ratio=0.5):
    return Result(
        check=check,
        target=target,
        family="batchnorm",
        status=status,
        message=f"{status} <msg>",
        bound="b",
        worst_ratio=ratio,
        examples=3,
    )


def _report(tmp_path, name, rows):
    out = tmp_path / name
    stream = results.ResultStream(
        out / results.FILENAME,
        {
            "varguard": "0",
            "python": "3",
            "versions": {},
            "device": {"kind": "cpu"},
            "seed": 0,
            "profile": "quick",
            "git_revision": None,
            "started": "now",
        },
    )
    for r in rows:
        stream.append(r)
    return writer.write(out)


def test_report_schema_round_trip_and_validation(tmp_path):
    rep = _report(
        tmp_path,
        "a",
        [
            _result("t", "batchnorm.forward", "passed"),
            _result("t", "batchnorm.backward", "failed", float("inf")),
        ],
    )
    on_disk = json.loads((tmp_path / "a" / "report.json").read_text())
    assert schema.validate(on_disk)["summary"] == {
        "passed": 1,
        "failed": 1,
        "skipped": 0,
        "error": 0,
    }
    assert on_disk["results"][1]["worst_ratio"] == "inf"  # JSON has no Infinity
    assert (tmp_path / "a" / "report.md").read_text().count("batchnorm.backward") >= 2
    assert rep["schema_version"] == schema.SCHEMA_VERSION
    broken = dict(on_disk, results=[{"target": "t"}])
    with pytest.raises(schema.SchemaError, match="lacks"):
        schema.validate(broken)


def test_gate_exit_codes(tmp_path):
    old = _report(
        tmp_path,
        "old",
        [
            _result("t", "c1", "passed", 0.2),
            _result("t", "c2", "passed", 0.2),
            _result("t", "c3", "failed"),
        ],
    )
    same = _report(
        tmp_path,
        "same",
        [
            _result("t", "c1", "passed", 0.25),
            _result("t", "c2", "passed", 0.2),
            _result("t", "c3", "failed"),
        ],
    )
    assert gate.exit_code(gate.compare(old, same)) == 0
    new_failure = _report(
        tmp_path,
        "nf",
        [
            _result("t", "c1", "failed"),
            _result("t", "c2", "passed", 0.2),
            _result("t", "c3", "passed"),
        ],
    )
    changes = gate.compare(old, new_failure)
    assert gate.exit_code(changes) == 1
    assert {c.kind for c in changes} == {"new failure", "fixed"}
    drift = _report(
        tmp_path,
        "drift",
        [
            _result("t", "c1", "passed", 0.9),
            _result("t", "c2", "passed", 0.2),
            _result("t", "c3", "failed"),
        ],
    )
    assert [c.kind for c in gate.compare(old, drift)] == ["drift"]
    out = varguard("gate", str(tmp_path / "old"), str(tmp_path / "nf"))
    assert out.returncode == 1 and "new failure" in out.stdout
    assert varguard("gate", str(tmp_path / "old"), str(tmp_path / "same")).returncode == 0
    assert varguard("gate", str(tmp_path / "old"), str(tmp_path / "missing")).returncode == 2


def test_torn_jsonl_line_is_ignored(tmp_path):
    path = tmp_path / results.FILENAME
    stream = results.ResultStream(path, {"seed": 0})
    stream.append(_result("t", "c1", "passed"))
    with open(path, "a") as f:
        f.write('{"kind": "result", "target": "t", "che')  # killed mid-write
    assert [r["check"] for r in results.read(path)[1]] == ["c1"]
    results.ResultStream(path, {"seed": 0}, resume=True).append(_result("t", "c2", "passed"))
    assert [r["check"] for r in results.read(path)[1]] == ["c1", "c2"]


@pytest.mark.slow
def test_resume_after_a_killed_run(tmp_path):
    out = tmp_path / "run"
    args = [
        sys.executable,
        "-m",
        "verify",
        "run",
        "--target",
        "torch-eager",
        "--profile",
        "quick",
        "--no-isolation",
        "--out",
        str(out),
        "--corpus",
        str(tmp_path / "corpus"),
    ]
    proc = subprocess.Popen(
        args, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    deadline = time.time() + 300
    while time.time() < deadline:
        if (out / results.FILENAME).exists() and len(results.read(out / results.FILENAME)[1]) >= 2:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = [r["check"] for r in results.read(out / results.FILENAME)[1]]
    assert 2 <= len(kept) < BN_CHECKS, kept
    assert not (out / "report.json").exists()
    done = varguard(*args[3:], "--resume")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(kept)} kept from before" in done.stdout
    final = writer.load(out)
    checks = [r["check"] for r in final["results"]]
    assert len(checks) == len(set(checks)) == BN_CHECKS
    assert checks[: len(kept)] == kept


BROKEN = "tests.fixtures.broken_targets:"


def test_isolation_reports_each_broken_target_and_goes_on():
    kinds = {
        "Raises": "batchnorm.forward",
        "WrongShape": "batchnorm.forward",
        "WrongDtype": "batchnorm.forward",
        "ReturnsNaN": "batchnorm.forward",
        "MutatesInput": "batchnorm.no_mutation",
        "Hangs": "batchnorm.forward",
        "KillsProcess": "batchnorm.forward",
    }
    jobs = [Job(BROKEN + k, BROKEN + k, "batchnorm", (c,)) for k, c in kinds.items()]
    jobs.append(Job("torch-eager", "torch-eager", "batchnorm", ("batchnorm.forward",)))
    execution = execution_for("quick", timeout=10)
    got = {r.target.removeprefix(BROKEN): r for r in run_checks(jobs, execution)}
    assert "RuntimeError: kernel launch failed" in got["Raises"].message
    assert "returned shape" in got["WrongShape"].message
    assert "returned dtype torch.float64" in got["WrongDtype"].message
    assert got["ReturnsNaN"].status == Status.FAILED and "inf" in got["ReturnsNaN"].message
    assert got["MutatesInput"].status in (Status.FAILED, Status.ERROR)
    assert "timed out after 10 s" in got["Hangs"].message
    assert "killed its process (SIGKILL)" in got["KillsProcess"].message
    for k in ("Raises", "WrongShape", "WrongDtype", "Hangs", "KillsProcess"):
        assert got[k].status == Status.ERROR, (k, got[k].message)
    assert got["torch-eager"].status == Status.PASSED  # the run went on after every breakage


def test_corpus_counterexample_is_replayed_first(tmp_path):
    target = resolve("mutant:bn_eps_on_std")
    check = get_check("batchnorm.forward")
    first = run_check(check, target, get_profile("quick"))
    assert first.status == Status.FAILED
    corpus.save(tmp_path, check.name, target.name, first.case)
    cases = corpus.load(tmp_path, check.name, target.name)
    assert cases == [first.case]
    again = run_check(check, target, get_profile("quick"), corpus=cases)
    assert again.status == Status.FAILED and again.examples == 1  # found by the replay alone

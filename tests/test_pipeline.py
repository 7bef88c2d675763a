"""Runs that fit a release pipeline (issue 12): the hang and crash policy, the report's order
whatever the workers, shards and their merge, JUnit XML, interrupted runs, [tool.varguard] and
the pytest plugin under pytest-xdist."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import ENV, ROOT, varguard

from verify import config, execution
from verify.checks import checks_for
from verify.cli import build_parser, main
from verify.execution import Job, Shard, check_limit, execution_for, run_checks
from verify.exits import UsageError
from verify.report import junit, results, schema, writer
from verify.resolve import resolve
from verify.result import Result, Status

BROKEN = "tests.fixtures.broken_targets:"
BN_CHECKS = [c.name for c in checks_for("batchnorm")]
QUICK_BN = ("--profile", "quick", "--target", "torch-eager", "--family", "batchnorm", "--no-depth")
META = {
    "varguard": "0",
    "python": "3",
    "versions": {},
    "device": {"kind": "cpu"},
    "seed": 0,
    "profile": "quick",
    "git_revision": None,
    "started": "now",
}


def _folder(out: Path, rows, **meta) -> Path:
    stream = results.ResultStream(out / results.FILENAME, {**META, **meta})
    for target, check, status in rows:
        stream.append(Result(check=check, target=target, family="batchnorm", status=status))
    return out


def _statuses(report: dict) -> list[tuple[str, str, str]]:
    return [(r["target"], r["check"], r["status"]) for r in report["results"]]


# --- the hang and crash policy -----------------------------------------------------------------


def test_the_limit_derives_from_the_reference_time():
    quick = execution_for("quick")
    ref = {"batchnorm.forward": ("torch-eager", 0.5), "batchnorm.backward": ("torch-eager", 10.0)}
    assert check_limit(quick, "batchnorm.forward", ref)[0] == execution.TIMEOUT_FLOOR
    limit, why = check_limit(quick, "batchnorm.backward", ref)
    assert limit == 10.0 * execution.TIMEOUT_FACTOR and "took on torch-eager" in why
    limit, why = check_limit(quick, "batchnorm.eval", ref)  # the reference has not run it yet
    assert limit == quick.profile.timeout and "no reference time" in why
    assert check_limit(quick, "batchnorm.forward", ref, compiles=True)[0] == quick.profile.timeout
    assert check_limit(execution_for("quick", timeout=7), "batchnorm.forward", ref)[0] == 7
    # What compiles or interprets its kernels is measured against no eager time.
    names = ("torch-eager", "torch-compile", "triton-bn")
    assert [execution.compiles(resolve(n)) for n in names] == [False, True, True]


def test_a_hang_or_crash_costs_two_checks_and_says_where(monkeypatch, tmp_path):
    # A floor of 3 s (the factor small enough that the floor decides): two hangs cost 6 s.
    monkeypatch.setattr(execution, "TIMEOUT_FLOOR", 3.0)
    monkeypatch.setattr(execution, "TIMEOUT_FACTOR", 0.01)
    three = tuple(BN_CHECKS[:3])
    jobs = [
        Job(BROKEN + "Hangs", BROKEN + "Hangs", "batchnorm", three),
        Job(BROKEN + "Aborts", BROKEN + "Aborts", "batchnorm", three),
        Job("torch-eager", "torch-eager", "batchnorm", three[:2]),
    ]
    got = run_checks(jobs, execution_for("quick"))  # one worker
    assert [r.target for r in got[:2]] == ["torch-eager"] * 2  # the reference runs first
    by = {(r.target.removeprefix(BROKEN), r.check): r for r in got}
    first, second, third = three
    hang = by["Hangs", first]
    assert hang.status == Status.ERROR and hang.extra["hung"] and hang.seconds >= 3
    assert "timed out after 3 s (0.01x the " in hang.message
    assert f"took on torch-eager, at least 3 s): the target hung in {first}" in hang.message
    assert "run_check(" in hang.repro and repr(BROKEN + "Hangs") in hang.repro
    assert by["Hangs", third].message == (
        f"isolation: not run: the target hung in {first} (killed after 3 s) and hung in "
        f"{second} (killed after 3 s), 2 checks in a row"
    )
    crash = by["Aborts", first]
    assert f"the target killed its process (SIGABRT) in {first}" in crash.message
    assert by["Aborts", third].message == (
        f"isolation: not run: the target crashed in {first} (SIGABRT) and crashed in {second} "
        "(SIGABRT), 2 checks in a row"
    )
    # The crash's script reproduces it: it runs the whole check, and the target aborts again.
    script = tmp_path / "repro.py"
    script.write_text(crash.repro)
    again = subprocess.run(
        [sys.executable, str(script)], cwd=ROOT, env=ENV, capture_output=True, timeout=300
    )
    assert again.returncode == -signal.SIGABRT


def test_without_the_reference_target_an_eager_target_that_passed_stands_in(monkeypatch):
    """A drop-in checked beside torch's own class (no torch-eager in the run): the hang's limit
    derives from the time torch's class took, not the profile's flat limit."""
    monkeypatch.setattr(execution, "TIMEOUT_FLOOR", 3.0)
    monkeypatch.setattr(execution, "TIMEOUT_FACTOR", 0.01)
    first = BN_CHECKS[:1]
    torch_bn = resolve("torch.nn:BatchNorm2d")
    jobs = [Job.of(torch_bn, first), Job(BROKEN + "Hangs", BROKEN + "Hangs", "batchnorm", first)]
    got = run_checks(jobs, execution_for("quick"))  # one worker: torch's class runs first
    hang = next(r for r in got if r.target == BROKEN + "Hangs")
    assert hang.status == Status.ERROR and hang.extra["hung"]
    assert f"took on {torch_bn.name}, at least 3 s" in hang.message


def test_a_compiling_targets_checks_are_scheduled_one_job_each():
    """The reference first (the limits derive from its times), then each check of a compiling
    target as its own job (side by side on many workers), then the rest whole; a mutant's job
    (stop at its first failure) stays whole."""
    eager, compiled = resolve("torch-eager"), resolve("torch-compile")
    plain = resolve("varguard-explicit")
    checks = BN_CHECKS[:3]
    jobs = [
        Job.of(plain, checks),
        Job.of(compiled, checks),
        Job.of(eager, checks),
        Job.of(compiled, checks, spec="mutant-like", stop_at_failure=True),
    ]
    got = [(j.target, j.checks, j.stop_at_failure) for j in execution.schedule(jobs)]
    assert got == [
        ("torch-eager", tuple(checks), False),
        *[("torch-compile", (c,), False) for c in checks],
        ("varguard-explicit", tuple(checks), False),
        ("torch-compile", tuple(checks), True),
    ]


def test_a_lost_gpu_hands_the_jobs_other_checks_to_a_fresh_worker():
    """A kernel fault poisons its process's CUDA context: the worker says so after the check
    that caused it (that check's own result names the fault), and the job's other checks go
    back to the front of the queue for a fresh worker, not one after another into the fault."""
    cpu = resolve("torch-eager")
    assert not execution._device_lost(cpu)
    if not torch.cuda.is_available():  # without a GPU, every CUDA call fails like a lost one
        assert execution._device_lost(dataclasses.replace(cpu, device="cuda"))

    class Conn:
        def recv(self):
            return ("device lost", None)

        def send(self, _):
            raise BrokenPipeError

        def close(self):
            pass

    class Gone:
        def is_alive(self):
            return False

        def join(self, _=None):
            pass

    job = Job.of(cpu, BN_CHECKS[:3])
    slot = execution._Slot(proc=Gone(), conn=Conn(), job=job, remaining=list(BN_CHECKS[1:3]))
    pool = execution._Pool(execution_for("quick"), on_start=None, emit=lambda r: None)
    slots, queue = [slot], execution.deque()
    pool._receive(slot, slots, queue)
    assert slots == [] and [j.checks for j in queue] == [tuple(BN_CHECKS[1:3])]


def test_shards_split_the_plan_round_robin_and_cover_it_once():
    jobs = [
        Job("a", "a", "batchnorm", ("c1", "c2", "c3")),
        Job("b", "b", "batchnorm", ("c1", "c2")),
    ]
    shards = [Shard.parse(f"{k}/3").take(jobs) for k in (1, 2, 3)]
    assert [[(j.target, c) for j in shard for c in j.checks] for shard in shards] == [
        [("a", "c1"), ("b", "c1")],
        [("a", "c2"), ("b", "c2")],
        [("a", "c3")],
    ]
    assert Shard.parse("1/1").take(jobs) == jobs
    for bad in ("0/2", "3/2", "1", "a/b", "1/0"):
        with pytest.raises(ValueError, match="give K/N"):
            Shard.parse(bad)


# --- the report: its order, its version-5 run keys -----------------------------------------------


def test_the_report_follows_the_plan_not_the_finish_order(tmp_path):
    plan = [["t", "c1"], ["t", "c2"], ["u", "c1"]]
    rows = [
        ("u", "c1", "passed"),
        ("t", "c2", "failed"),
        ("x", "c9", "passed"),
        ("t", "c1", "error"),
    ]
    report = writer.write(_folder(tmp_path, rows, plan=plan))
    assert [(r["target"], r["check"]) for r in report["results"]] == [
        ("t", "c1"),
        ("t", "c2"),
        ("u", "c1"),
        ("x", "c9"),  # not in the plan: after it
    ]
    assert "plan" not in report["run"]


def test_version_5_run_keys_and_older_reports(tmp_path):
    report = json.loads(json.dumps(writer.write(_folder(tmp_path, [("t", "c", "passed")]))))
    assert report["schema_version"] == 5
    assert {k: report["run"][k] for k in ("interrupted", "shard", "merged")} == dict.fromkeys(
        ("interrupted", "shard", "merged")
    )
    lacking = json.loads(json.dumps(report))
    del lacking["run"]["shard"]
    with pytest.raises(schema.SchemaError, match="shard"):
        schema.validate(lacking)
    lacking["schema_version"] = 4  # a version-4 report never had it: it loads, as null
    assert schema.validate(lacking)["run"]["shard"] is None


def test_junit_has_failures_errors_and_skips():
    junitparser = pytest.importorskip("junitparser")
    rows = [("passed", ""), ("failed", "2 of 8 elements exceed the bound\nworst at (0,)")]
    rows += [("error", "RuntimeError: boom"), ("skipped", "needs a CUDA GPU")]
    report = {
        "run": META,
        "results": [
            {"target": "t", "check": f"batchnorm.c{i}", "family": "batchnorm", "status": status,
             "message": message, "seconds": 0.5, "counterexample": "Case(n=2)" if i == 1 else None,
             "repro_path": "repro/repro_x.py" if i == 1 else None}
            for i, (status, message) in enumerate(rows)
        ],
    }  # fmt: skip
    xml = junitparser.JUnitXml.fromstring(junit.render(report, folder=Path("out")))
    (suite,) = xml
    assert (suite.name, suite.tests, suite.failures, suite.errors, suite.skipped) == (
        "t",
        4,
        1,
        1,
        1,
    )
    kinds = {case.name: [type(r).__name__ for r in case.result] for case in suite}
    assert kinds == {
        "batchnorm.c0": [],
        "batchnorm.c1": ["Failure"],
        "batchnorm.c2": ["Error"],
        "batchnorm.c3": ["Skipped"],
    }
    failure = next(case for case in suite if case.name == "batchnorm.c1").result[0]
    assert failure.message == "2 of 8 elements exceed the bound"
    assert "counterexample: Case(n=2)" in failure.text
    assert failure.text.endswith("reproduce: python out/repro/repro_x.py")


# --- interrupted, resumed, sharded and merged: one real run --------------------------------------


def _finished(out: Path) -> int:
    path = out / results.FILENAME
    return len(results.read(path)[1]) if path.exists() else 0


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """A quick run of torch-eager's batch-norm checks, stopped by SIGTERM after a few checks
    (workers running), then resumed: the interrupted report, then the completed one."""
    base = tmp_path_factory.mktemp("pipeline")
    out = base / "run"
    args = ["run", *QUICK_BN, "--out", str(out), "--corpus", str(base / "corpus")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "verify", *args],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 300
    while time.time() < deadline and _finished(out) < 3 and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    stopped = writer.load(out)
    resumed = varguard(*args, "--resume")
    return {
        "base": base,
        "out": out,
        "args": args,
        "code": proc.returncode,
        "stderr": stderr,
        "stopped": stopped,
        "resumed": resumed,
    }


def test_sigterm_writes_a_report_marked_interrupted(stopped_run):
    assert stopped_run["code"] == 143, stopped_run["stderr"][-2000:]
    stopped = stopped_run["stopped"]
    stop = stopped["run"]["interrupted"]
    assert stop["signal"] == "SIGTERM" and stop["planned"] == len(BN_CHECKS)
    assert 3 <= stop["finished"] == len(stopped["results"]) < len(BN_CHECKS)
    assert stop["resume"].endswith("--resume") and f"--out {stopped_run['out']}" in stop["resume"]
    assert f"continue with: {stop['resume']}" in stopped_run["stderr"]


def test_resume_completes_the_interrupted_run(stopped_run):
    resumed = stopped_run["resumed"]
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    report = writer.load(stopped_run["out"])
    assert [r["check"] for r in report["results"]] == BN_CHECKS  # each once, in plan order
    assert report["run"]["interrupted"] is None
    assert "INTERRUPTED" not in (stopped_run["out"] / "report.md").read_text()


def test_two_shards_merged_equal_one_run(stopped_run):
    base = stopped_run["base"]
    shards = [
        subprocess.Popen(
            [sys.executable, "-m", "verify", *stopped_run["args"], "--no-isolation",
             "--shard", f"{k}/2", "--out", str(base / f"shard{k}")],
            cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for k in (1, 2)
    ]  # fmt: skip
    for proc in shards:
        output = proc.communicate(timeout=600)[0]
        assert proc.returncode == 0, output[-2000:]
    one = writer.load(base / "shard1")
    assert one["run"]["shard"] == {"index": 1, "count": 2}
    assert len(one["results"]) == len(BN_CHECKS[0::2])  # round-robin: the 1st, 3rd, ...
    merged = varguard("merge", str(base / "shard1"), str(base / "shard2"), "--out", str(base / "m"))
    assert merged.returncode == 0, merged.stdout + merged.stderr
    report = writer.load(base / "m")
    assert _statuses(report) == _statuses(writer.load(stopped_run["out"]))
    assert [m["shard"]["index"] for m in report["run"]["merged"]] == [1, 2]


@pytest.mark.parametrize(
    "second, says",
    [
        ({"seed": 1}, "was run with seed 1"),
        ({"profile": "standard"}, "was run with profile 'standard'"),
        ({"varguard": "9"}, "was run with varguard version '9'"),
        ({"git_revision": "abc"}, "git revision abc"),
        ({"shard": {"index": 1, "count": 2}}, "shard 1/2 is given twice"),
        ({"shard": {"index": 2, "count": 3}}, "shards of different splits"),
    ],
)
def test_merge_refuses_folders_of_different_runs(tmp_path, capsys, second, says):
    rows = [("t", "c", "passed")]
    a = _folder(tmp_path / "a", rows, git_revision="def", shard={"index": 1, "count": 2})
    b = _folder(tmp_path / "b", rows, **{"git_revision": "def", **second})
    assert main(["merge", str(a), str(b), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1, err
    assert not (tmp_path / "m").exists()


def test_merge_needs_report_folders(tmp_path, capsys):
    a = _folder(tmp_path / "a", [("t", "c", "passed")])
    assert main(["merge", str(a), str(tmp_path / "nothing"), "--out", str(tmp_path / "m")]) == 2
    assert "no results.jsonl here" in capsys.readouterr().err
    assert main(["merge", str(a), "--out", str(a)]) == 2
    assert "is one of the folders to merge" in capsys.readouterr().err


# --- options and [tool.varguard] ---------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--jobs", "0"], "--jobs 0: give a number of worker processes"),
        (["--jobs", "2", "--no-isolation"], "drop one of them"),
        (["--shard", "3/2"], "--shard 3/2: give K/N with 1 <= K <= N"),
        (["--shard", "half"], "--shard half: give K/N"),
        (["--config", "missing.toml"], "--config missing.toml: no such file"),
    ],
)
def test_run_option_errors(tmp_path, monkeypatch, capsys, argv, says):
    monkeypatch.chdir(tmp_path)
    assert main(["run", *argv]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1, err


PROJECT = """
[tool.varguard]
targets = ["torch-eager"]
profile = "quick"
jobs = 3
timeout = 30
baseline = "ci/baseline.json"
converge = "--seeds 1"
bench = false
"""


def _run_args(*argv: str):
    return build_parser().parse_args(["run", *argv])


def test_config_fills_what_the_command_line_leaves(tmp_path):
    (tmp_path / "pyproject.toml").write_text(PROJECT)
    args = _run_args("--jobs", "1", "--no-converge")
    assert config.apply(args, cwd=tmp_path) == tmp_path / "pyproject.toml"
    assert (args.target, args.profile, args.jobs, args.timeout) == (["torch-eager"], "quick", 1, 30)
    assert args.baseline == tmp_path / "ci" / "baseline.json"  # relative to the file
    assert args.no_converge and args.converge is None and args.no_bench
    assert (args.seed, args.threshold, args.family) == (0, 0.5, None)  # built-in defaults
    args = _run_args("--profile", "standard", "--converge=--seeds 3")  # the default, given
    config.apply(args, cwd=tmp_path)
    assert args.profile == "standard" and args.converge == "--seeds 3"
    bare = _run_args()
    assert config.apply(bare, cwd=tmp_path / "ci") is None  # no pyproject.toml there
    assert bare.profile == "standard" and bare.target is None


@pytest.mark.parametrize(
    "text, says",
    [
        ('targets = ["t"]\ntagets = ["t"]', "unknown key 'tagets'; known keys: targets,"),
        ('jobs = "two"', "[tool.varguard] jobs = 'two': give an integer"),
        ('profile = "fast"', "profile = 'fast': use one of"),
        ('families = ["bn"]', "['bn'] unknown; use some of"),
        ("converge = 3", "converge = 3: give false, true or a string"),
        ("targets = [", "not valid TOML"),
    ],
)
def test_config_errors_name_the_key_and_the_fix(tmp_path, text, says):
    (tmp_path / "pyproject.toml").write_text("[tool.varguard]\n" + text + "\n")
    with pytest.raises(UsageError) as info:
        config.apply(_run_args(), cwd=tmp_path)
    assert says in str(info.value)


def test_a_project_config_and_junit_from_a_failing_mutant(tmp_path):
    junitparser = pytest.importorskip("junitparser")
    (tmp_path / "pyproject.toml").write_text(
        '[tool.varguard]\ntargets = ["mutant:bn_no_eps"]\nfamilies = ["batchnorm"]\n'
        'profile = "standard"\nout = "report"\ncorpus = "corpus"\n'
        'junit_xml = "junit/varguard.xml"\ndepth = false\n'
    )
    proc = varguard("run", "--profile", "quick", "--no-isolation", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = writer.load(tmp_path / "report")
    assert report["run"]["profile"] == "quick"  # the command line wins over the file
    assert report["run"]["config"] == str(tmp_path / "pyproject.toml") and report["depth"] is None
    xml = junitparser.JUnitXml.fromfile(str(tmp_path / "junit" / "varguard.xml"))
    (suite,) = xml
    assert suite.name == "mutant:bn_no_eps"
    assert (suite.tests, suite.failures) == (len(BN_CHECKS), report["summary"]["failed"])
    case = next(c for c in suite if c.name == "batchnorm.forward")
    (failure,) = case.result
    assert isinstance(failure, junitparser.Failure) and "exceed the bound" in failure.message
    command = failure.text.splitlines()[-1].removeprefix("reproduce: ")
    assert command.startswith("python ") and Path(command.split()[1]).is_file()


# --- the pytest plugin under pytest-xdist ------------------------------------------------------


def test_the_pytest_plugin_under_xdist(tmp_path):
    pytest.importorskip("xdist")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "-v", "-p", "no:cacheprovider",
         "--varguard-target", "torch-selu"],
        cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "4 passed, 2 skipped" in proc.stdout
    assert "[gw0]" in proc.stdout and "[gw1]" in proc.stdout  # both workers ran checks

"""The convergence job and the benchmarks in the verification report (`varguard run` stages).

One real run with both stages (tiny network, tiny benchmark) checks the wiring end to end; the
committed ResNet-50 run in reports/converge-cpu/ (a mutant that failed) checks how a failing job
reaches the results, the exit code, the gate and the reproduction scripts.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import ROOT, varguard

from verify.converge import section as converge_section
from verify.exits import UsageError
from verify.report import gate, metadata, results, schema, writer
from verify.resolve import resolve
from verify.result import Result
from verify.stages.base import PlannedStage, parse_options, plan_stage, run_stage
from verify.stages.registry import get_stage

CONVERGE_CPU = Path(ROOT) / "reports" / "converge-cpu"
MUTANT = "mutant:bn_backward_stats_constant"
TINY_CONVERGE = (
    "--model tiny --train-limit 768 --epochs 3 --seeds 2 --threshold 0.7 --controls none"
)
TINY_BENCH = "--size 2x4x4x4 --min-rounds 2 --max-time 0.01 --threads 1 --op fwd-train"


def checks_folder(out: Path) -> Path:
    """A report folder whose checks all passed: one batch-norm result."""
    stream = results.ResultStream(out / results.FILENAME, metadata.collect(seed=0, profile="quick"))
    stream.append(
        Result(check="batchnorm.forward", target="torch-eager", family="batchnorm",
                    status="passed", message="", worst_ratio=0.5, examples=3)
    )  # fmt: skip
    return out


@pytest.fixture(scope="module")
def staged_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("staged") / "report"
    proc = varguard(
        "run", "--profile", "quick", "--target", "torch-eager", "--family", "batchnorm",
        "--no-isolation", "--out", str(out), "--corpus", str(out.parent / "corpus"),
        f"--converge={TINY_CONVERGE}", f"--bench={TINY_BENCH}",
    )  # fmt: skip
    return proc, out


@pytest.mark.slow
def test_run_with_both_stages_puts_them_in_one_report(staged_run):
    proc, out = staged_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = writer.load(out)
    assert report["schema_version"] == schema.SCHEMA_VERSION == 5
    conv, bench = report["converge"], report["bench"]
    assert conv["status"] == "passed" and conv["data"]["config"]["model"] == "tiny"
    assert conv["stage"]["returncode"] == 0 and "--target torch-eager" in conv["stage"]["command"]
    assert set(conv["plots"]) >= {"accuracy.png", "loss.png"}
    # The gated checks of the job are results, counted in the summary.
    mine = [r for r in report["results"] if r["family"] == "converge"]
    checks = {(r["target"], r["check"]) for r in mine}
    for arm in ("torch-eager", "reference"):
        assert (arm, "converge.final.accuracy") in checks and (arm, "converge.init.loss") in checks
    assert ("torch-eager", "converge.compare.epochs_to_threshold") in checks
    assert all(r["status"] == "passed" for r in mine)
    assert report["summary"]["passed"] == sum(r["status"] == "passed" for r in report["results"])
    # Bench: only what passed verification in this very report, with its bandwidth ratio.
    assert bench["status"] == "finished" and "--verified" in bench["command"]
    (row,) = bench["rows"]
    assert (
        row["op"] == "fwd-train" and row["target"] == "torch-eager" and row["shape"] == [2, 4, 4, 4]
    )
    assert 0 < row["bandwidth_ratio"] == pytest.approx(row["gbps"] / row["copy_gbps"])
    assert (out / "bench" / "bench.json").exists() and (out / "converge" / "converge.json").exists()


@pytest.mark.slow
def test_both_stages_show_in_markdown_and_html(staged_run):
    _, out = staged_run
    md = (out / "report.md").read_text()
    assert "## Convergence: tiny trained" in md and "## Kernel benchmarks" in md
    assert "![held-out accuracy per epoch](converge/accuracy.png)" in md
    assert "| fwd-train | 2x4x4x4 | custom | torch-eager | float32 |" in md
    page = (out / "report.html").read_text()
    assert "<h2>Convergence: tiny trained" in page and "<h2>Kernel benchmarks</h2>" in page
    assert 'alt="held-out accuracy per epoch" src="data:image/png;base64,' in page
    assert 'alt="achieved bandwidth as a fraction of a copy' in page


@pytest.mark.slow
def test_report_command_rerenders_after_a_converge_run_by_hand(staged_run, tmp_path):
    """`varguard converge --out REPORT/converge` by hand, then `varguard report REPORT`."""
    _, out = staged_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    shutil.rmtree(copy / "converge")
    shutil.copytree(CONVERGE_CPU, copy / "converge")  # the committed ResNet-50 run, with a mutant
    before = writer.load(copy)
    proc = varguard("report", str(copy))
    assert proc.returncode == 1, proc.stdout + proc.stderr  # the mutant's failures count
    after = writer.load(copy)
    assert after["run"]["wall_seconds"] == before["run"]["wall_seconds"]
    assert after["converge"]["data"]["config"]["model"] == "resnet50"
    assert "## Convergence: resnet50 trained" in (copy / "report.md").read_text()
    assert varguard("report", str(tmp_path / "nothing")).returncode == 2


# --- a failing job, from the committed ResNet-50 run ------------------------------------------


def _section(tmp_path) -> dict:
    shutil.copytree(CONVERGE_CPU, tmp_path / "converge")
    return converge_section.collect(tmp_path)


def test_failing_mutant_becomes_failed_results_with_repro_scripts(tmp_path):
    section = _section(tmp_path)
    assert section["status"] == "failed" and section["stage"] is None  # run by hand: no stage.json
    by_key = {(r["target"], r["check"]): r for r in converge_section.results(section)}
    acc = by_key[(MUTANT, "converge.final.accuracy")]
    assert acc["status"] == "failed" and acc["examples"] == 3
    assert "seed 0: held-out accuracy 42.50% < 95.0%" in acc["message"]
    compare = by_key[(MUTANT, "converge.compare.epochs_to_threshold")]
    assert compare["status"] == "failed" and compare["extra"]["values"]["p"] < 0.01
    for arm in ("torch-eager", "reference"):
        assert by_key[(arm, "converge.final.accuracy")]["status"] == "passed"
        assert by_key[(arm, "converge.train.finite")]["status"] == "passed"
    assert not any(r["target"] in ("plain-50", "no-bn") for r in by_key.values())  # not gated
    assert by_key[("torch-eager", "converge.final.accuracy")]["repro"] is None
    # The repro trains the mutant again with the job's settings, without the controls.
    script = acc["repro"]
    assert "from verify.converge.command import main" in script
    for flag in ("'--target', 'mutant:bn_backward_stats_constant'", "'--epochs', '8'",
                 "'--seeds', '3'", "'--controls', 'none'", "'--model', 'resnet50'"):  # fmt: skip
        assert flag in script, flag
    compile(script, "repro.py", "exec")


def test_the_gate_blocks_on_a_convergence_failure(tmp_path):
    old = writer.write(checks_folder(tmp_path / "old"))
    new_dir = checks_folder(tmp_path / "new")
    shutil.copytree(CONVERGE_CPU, new_dir / "converge")
    new = writer.write(new_dir)
    changes = gate.compare(old, new)
    blocking = {(c.target, c.check) for c in changes if c.blocking}
    assert (MUTANT, "converge.final.accuracy") in blocking
    assert gate.exit_code(changes) == 1
    assert (
        new_dir / "repro" / "repro_converge.final.accuracy_mutant_bn_backward_stats_constant.py"
    ).exists()


def test_a_crashed_stage_is_an_error_and_the_checks_stand(tmp_path):
    out = checks_folder(tmp_path / "run")
    stage = PlannedStage(
        get_stage("converge"), ("--model", "tiny"), targets=("no_such_module_xyz:BN",)
    )
    record = run_stage(stage, out)
    assert record["status"] == "crashed" and record["returncode"] == 2
    assert "no_such_module_xyz" in record["stderr_tail"]
    report = writer.write(out)
    (err,) = [r for r in report["results"] if r["status"] == "error"]
    assert err["check"] == "converge.job" and "no_such_module_xyz" in err["message"]
    assert any(
        r["check"] == "batchnorm.forward" and r["status"] == "passed" for r in report["results"]
    )


# --- planning: profiles, flags, targets ---------------------------------------------------------


def _plan(name, *, profile="standard", flag=None, disabled=False, targets=None, families=None):
    pairs = None if targets is None else [(t, resolve(t)) for t in targets]
    return plan_stage(
        get_stage(name),
        profile=profile,
        flag=flag,
        disabled=disabled,
        run_targets=pairs,
        families=families,
    )


def test_profiles_choose_the_stages():
    assert _plan("converge", profile="quick") is None and _plan("bench", profile="quick") is None
    assert _plan("converge").options == ("--seeds", "2")  # the fewest seeds a t-test takes
    assert "--quick" in _plan("bench").options
    assert _plan("converge", profile="release").options == ()  # converge's own 3 seeds
    assert _plan("converge", disabled=True) is None
    assert _plan("converge", profile="quick", flag="--epochs 2").options == ("--epochs", "2")
    assert _plan("depth", profile="quick").options == ()  # the depth curves: every profile
    assert _plan("converge", families=["init"]) is None  # no batch-norm family in this run


def test_the_runs_batchnorm_targets_go_to_the_stage():
    stage = _plan("converge", targets=["torch-channels-last", "torch-basic-inplace", MUTANT])
    assert stage.targets == ("torch-channels-last", MUTANT) and stage.skipped is None
    skipped = _plan("converge", targets=["torch-basic-inplace"])
    assert "none of the run's targets is a batchnorm target" in skipped.skipped
    own = _plan("converge", targets=["torch-basic-inplace"], flag="--target torch-eager")
    assert own.targets == () and own.skipped is None
    assert "--verified" in _plan("bench").argv(Path("OUT"))


@pytest.mark.parametrize(
    "name, flag, says",
    [
        ("converge", "--epochs zero", "not valid `varguard converge` options"),
        ("converge", "--epochs 0", "--epochs=0: must be an integer >= 1"),
        ("converge", "--out elsewhere", "--out is set by `varguard run`"),
        ("converge", "--epochs '2", "quote the options"),
        ("bench", "--threshold -1", "--threshold=-1.0: give a positive fraction"),
        ("bench", "--verified old", "--verified is set by `varguard run`"),
    ],
)
def test_bad_stage_options_fail_before_any_check(name, flag, says):
    with pytest.raises(UsageError) as info:
        parse_options(get_stage(name), flag)
    assert says in str(info.value)


def test_bad_stage_options_are_a_usage_error_on_the_command_line(tmp_path):
    proc = varguard("run", "--profile", "quick", "--out", str(tmp_path), "--converge=--epochs 0")
    assert proc.returncode == 2 and "--converge" in proc.stderr
    assert not (tmp_path / "results.jsonl").exists()  # nothing ran
    both = varguard("run", "--converge", "--no-converge")
    assert both.returncode == 2 and "not allowed with" in both.stderr


def test_older_reports_still_load_as_baselines(tmp_path):
    report = writer.write(checks_folder(tmp_path / "v1"))
    for key in ("converge", "bench", "depth"):
        del report[key]
    report["schema_version"] = 1
    loaded = schema.validate(json.loads(json.dumps(report)))
    assert loaded["converge"] is None and loaded["bench"] is None and loaded["depth"] is None
    v2 = {k: v for k, v in loaded.items() if k != "depth"}
    assert schema.validate({**v2, "schema_version": 2})["depth"] is None  # v2 had no depth
    report = {**loaded, "schema_version": 2}
    del report["converge"]
    with pytest.raises(schema.SchemaError, match="'converge'"):
        schema.validate(report)
    v3 = {k: v for k, v in loaded.items() if k != "depth"}
    with pytest.raises(schema.SchemaError, match="'depth'"):
        schema.validate({**v3, "schema_version": 3})


def test_a_fresh_run_into_an_old_folder_drops_the_old_stages_and_repros(tmp_path):
    out = tmp_path / "report"
    shutil.copytree(CONVERGE_CPU, out / "converge")
    (out / "repro").mkdir()
    (out / "repro" / "repro_old_failure.py").write_text("raise SystemExit(1)\n")
    proc = varguard(
        "run", "--profile", "quick", "--target", "torch-xavier-uniform", "--no-isolation",
        "--out", str(out), "--corpus", str(tmp_path / "corpus"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "removed" in proc.stdout and not (out / "converge").exists()
    report = writer.load(out)
    assert report["converge"] is None and report["bench"] is None
    assert report["depth"]["status"] == "finished"  # quick runs the depth stage
    assert {r["family"] for r in report["results"]} == {"init"}
    assert not list((out / "repro").glob("*.py"))

"""`varguard sweep`: one run per seed, resumable, and a summary that lists every failure with its
seed and reproduction script (the false-alarm measure of issues 10 and 13)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import varguard

from verify.cli import main
from verify.commands.sweep import parse_seeds, run_options, seed_command
from verify.exits import UsageError
from verify.report import results
from verify.report import sweep as summary
from verify.result import Result, Status

META = {"varguard": "0", "seed": 0, "profile": "quick", "git_revision": "abc", "plan": []}


def _seed(out: Path, seed: int, rows, *, finished: bool = True) -> Path:
    """A seed folder as `varguard run` leaves it: results.jsonl, and report.json once finished."""
    folder = summary.seed_folder(out, seed)
    plan = [[t, c] for t, c, *_ in rows]
    stream = results.ResultStream(folder / results.FILENAME, {**META, "seed": seed, "plan": plan})
    records = []
    for target, check, status, ratio in rows:
        result = Result(
            check=check,
            target=target,
            family="batchnorm",
            status=status,
            message=f"{check} on {target}\nsecond line",
            worst_ratio=ratio,
            examples=10,
        )
        stream.append(result)
        repro = f"repro/{check}.py" if status == Status.FAILED else None
        records.append({**result.to_json(), "repro_path": repro})
    if finished:
        report = {"run": {"wall_seconds": 12.0, "interrupted": None}, "results": records}
        (folder / "report.json").write_text(json.dumps(report))
    return folder


@pytest.mark.parametrize(
    "text, seeds",
    [("0-3", [0, 1, 2, 3]), ("5", [5]), ("0-2,7,1", [0, 1, 2, 7]), ("4,4", [4])],
)
def test_seeds_parse(text, seeds):
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["3-1", "a", "0-", "", "1,,2"])
def test_bad_seeds_are_a_usage_error_naming_the_option(text):
    with pytest.raises(UsageError, match="--seeds"):
        parse_seeds(text)


@pytest.mark.parametrize("own", ["--seed", "--out=x", "--resume", "--shard"])
def test_the_sweep_sets_seed_and_folder_itself(own, capsys):
    with pytest.raises(UsageError, match=own.split("=")[0]):
        run_options(["--", "--profile", "quick", own])
    assert main(["sweep", "--seeds", "0", "--out", "x", "--", own, "1"]) == 2
    assert "give --seeds and --out" in capsys.readouterr().err


def test_each_seed_runs_into_its_own_folder_and_an_interrupted_one_resumes(tmp_path):
    cmd = seed_command(["--profile", "quick"], seed=4, folder=tmp_path / "seed-4", resume=True)
    assert cmd[-5:] == ["--seed", "4", "--out", str(tmp_path / "seed-4"), "--resume"]
    assert cmd[2:5] == ["verify", "run", "--profile"]


def test_summary_lists_each_failure_with_its_seed_and_flags_unfinished_seeds(tmp_path):
    ok = Status.PASSED
    _seed(tmp_path, 0, [("t", "bn.forward", ok, 0.5), ("t", "bn.backward", ok, 0.25)])
    _seed(tmp_path, 1, [("t", "bn.forward", Status.FAILED, 3.0), ("u", "bn.forward", ok, 0.9)])
    _seed(tmp_path, 2, [("t", "bn.forward", ok, 0.1)], finished=False)
    result = summary.summarise(tmp_path, [0, 1, 2, 3])
    states = {s.seed: s.state for s in result.seeds}
    assert states == {0: "complete", 1: "complete", 2: "interrupted", 3: "missing"}
    assert result.complete == [0, 1]
    (failure,) = result.failures
    assert (failure["seed"], failure["target"], failure["check"]) == (1, "t", "bn.forward")
    assert failure["message"] == "bn.forward on t"  # the first line
    assert failure["repro"] == str(tmp_path / "seed-1" / "repro" / "bn.forward.py")
    t = result.targets["t"]
    assert (t.passed, t.failed, t.cases) == (3, 1, 40)
    assert (t.worst_ratio, t.worst_where) == (3.0, "bn.forward, seed 1")
    text = summary.to_markdown(result, command=["varguard", "sweep"])
    assert "Seeds complete: 2 of 4 (0, 1)" in text
    assert "seed 1, t, bn.forward: bn.forward on t" in text
    assert "| 2 | interrupted | 1 |" in text and "| 3 | missing | 0 |" in text
    assert summary.to_json(result, command=[])["totals"]["failed"] == 1


@pytest.mark.slow
def test_a_sweep_runs_each_seed_once_and_fails_on_a_mutant(tmp_path):
    """Two seeds of a correct init target and a planted bug: exit 1, the mutant's failure at
    both seeds in sweep.md, the correct target at neither; run again, nothing runs again."""
    out = tmp_path / "sw"
    opts = ["--target", "torch-xavier-uniform", "--target", "mutant:init_xavier_sqrt3"]
    opts += ["--profile", "quick", "--no-depth", "--no-isolation", "--corpus", str(tmp_path / "c")]
    first = varguard("sweep", "--seeds", "0-1", "--out", str(out), "--", *opts)
    assert first.returncode == 1, first.stdout + first.stderr
    report = json.loads((out / summary.JSON_NAME).read_text())
    assert report["complete_seeds"] == [0, 1]
    assert {(f["seed"], f["target"]) for f in report["failures"]} == {
        (0, "mutant:init_xavier_sqrt3"),
        (1, "mutant:init_xavier_sqrt3"),
    }
    assert report["targets"]["torch-xavier-uniform"]["failed"] == 0
    assert report["targets"]["torch-xavier-uniform"]["passed"] == 6
    again = varguard("sweep", "--seeds", "0-1", "--out", str(out), "--", *opts)
    assert again.returncode == 1
    assert again.stdout.count("already complete") == 2

"""The stages `varguard run` adds after the checks: the convergence job and the kernel benchmarks.

Each stage is its own command (`varguard converge`, `varguard bench`) run in a child process,
writing into a subfolder of the report folder (``converge/``, ``bench/``) that the report writer
reads. Beside its output the stage leaves ``stage.json``: the command, the exit code, the time,
and the tail of its stderr when it crashed. A crash there is shown in the report as an error;
the checks' results, already on disk, stand.
"""

from __future__ import annotations

import argparse
import collections
import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from verify.cli import UsageError
from verify.report.atomic import write_text

STAGE_FILE = "stage.json"
#: What each stage writes when it finished (exit 0 or 1, as its command documents).
OUTPUT = {"converge": "converge.json", "bench": "bench.json"}


@dataclass(frozen=True)
class Stage:
    name: str  # the command and the subfolder: "converge" or "bench"
    options: tuple[str, ...]  # the command's options, as on its command line
    skipped: str | None = None  # why it does not run, shown in the report
    targets: tuple[str, ...] = field(default=())  # --target added from the run's targets

    def argv(self, out: Path) -> list[str]:
        extra = [a for t in self.targets for a in ("--target", t)]
        if self.name == "bench":
            extra += ["--verified", str(out / "report.json")]
        return [*self.options, *extra, "--out", str(out / self.name)]

    def command_line(self, out: Path) -> str:
        return shlex.join(["varguard", self.name, *self.argv(out)])


def parse_options(name: str, text: str) -> tuple[str, ...]:
    """``--converge '--epochs 2'``: split like a shell would, and check with the command's own
    parser now, so that a typo costs a usage error, not the minutes of checks before it."""
    try:
        options = tuple(shlex.split(text))
    except ValueError as exc:
        raise UsageError(f"--{name} {text!r}: {exc}; quote the options as one argument") from None
    for banned in ("--out", "--verified", "--compare", "--bench-only"):
        if banned in options or any(o.startswith(banned + "=") for o in options):
            raise UsageError(
                f"--{name} {text!r}: {banned} is set by `varguard run` (the stage writes into "
                f"the report folder); leave it out"
            )
    try:
        args = _parser(name).parse_args([name, *options])
    except SystemExit:  # argparse printed what was wrong
        raise UsageError(f"--{name} {text!r}: not valid `varguard {name}` options") from None
    try:
        _validate(name, args)
    except UsageError as exc:
        raise UsageError(f"--{name} {text!r}: {exc}") from None
    return options


def _validate(name: str, args: argparse.Namespace) -> None:
    """The values' own checks (an epoch count of 0, a negative threshold), as the command makes
    them before it starts."""
    if name == "converge":
        from verify.converge.command import config_from_args

        config_from_args(args)
    else:
        from verify.bench.command import check_args

        check_args(args)


def _parser(name: str) -> argparse.ArgumentParser:
    from verify.commands import add_stage_command

    parser = argparse.ArgumentParser(prog="varguard")
    add_stage_command(parser.add_subparsers(dest="command"), name)
    return parser


def plan(
    name: str,
    *,
    profile_options: tuple[str, ...] | None,
    flag: str | None,
    disabled: bool,
    run_targets: list | None,
) -> Stage | None:
    """The stage to run, or None. ``flag`` is --converge/--bench's value (None when not given;
    a string of options, maybe empty, when given); ``run_targets`` the Targets named with
    --target (None: every built-in one)."""
    if disabled:
        return None
    if flag is not None:
        options = parse_options(name, flag)
    elif profile_options is not None:
        options = tuple(profile_options)
    else:
        return None
    if "--target" in options or any(o.startswith("--target=") for o in options):
        return Stage(name, options)
    if run_targets is None:  # every built-in: the command's own default targets
        return Stage(name, options)
    batchnorm = tuple(spec for spec, t in run_targets if t.family == "batchnorm")
    if not batchnorm:
        return Stage(
            name,
            options,
            skipped=f"none of the run's targets is a batch-norm target, and `varguard {name}` "
            f"takes batch-norm targets; give them with --{name} '--target T'",
        )
    return Stage(name, options, targets=batchnorm)


def run(stage: Stage, out: Path, *, resume: bool = False) -> dict:
    """Run the stage's command into ``out/<name>/`` and return what stage.json records."""
    folder = out / stage.name
    record_path = folder / STAGE_FILE
    if resume and record_path.exists() and (folder / OUTPUT[stage.name]).exists():
        print(f"{stage.name}: kept from before ({folder})")
        return json.loads(record_path.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    record = {"stage": stage.name, "command": stage.command_line(out)}
    if stage.skipped:
        record.update(status="skipped", why=stage.skipped)
        print(f"\n{stage.name}: skipped: {stage.skipped}")
        write_text(record_path, json.dumps(record, indent=1))
        return record
    (folder / OUTPUT[stage.name]).unlink(missing_ok=True)  # never show a stale result
    print(f"\n{stage.name}: {record['command']}", flush=True)
    started = time.monotonic()
    code, tail = _spawn([sys.executable, "-m", "verify", stage.name, *stage.argv(out)])
    record["returncode"] = code
    record["seconds"] = round(time.monotonic() - started, 1)
    finished = code in (0, 1) and (folder / OUTPUT[stage.name]).exists()
    record["status"] = "finished" if finished else "crashed"
    if not finished:
        record["stderr_tail"] = "".join(tail)
    write_text(record_path, json.dumps(record, indent=1))
    return record


def _spawn(argv: list[str]) -> tuple[int, list[str]]:
    """Run a child, echoing its stderr as it comes and keeping the last lines for the report."""
    tail: collections.deque[str] = collections.deque(maxlen=40)
    with subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, errors="replace") as proc:
        assert proc.stderr is not None
        for line in proc.stderr:
            sys.stderr.write(line)
            tail.append(line)
        return proc.wait(), list(tail)


# --- reading a stage folder back (the report writer) ---------------------------------------------


def read_json(path: Path) -> dict | None:
    """A stage's JSON file, or None when it is missing or cut short by a crash."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def unfinished_result(name: str, record: dict | None) -> dict:
    """The result standing for a stage that wrote no output: skipped (with why) or an error
    (with the command, its exit code and the tail of its stderr)."""
    from verify.checks.base import CheckResult

    record = record or {}
    if record.get("status") == "skipped":
        status, message = "skipped", record.get("why", "")
    else:
        status = "error"
        message = (
            f"`{record.get('command', 'varguard ' + name)}` exited with code "
            f"{record.get('returncode')} and wrote no {OUTPUT[name]}; the last lines of its "
            f"stderr:\n{record.get('stderr_tail', '')}"
        )
    return CheckResult(
        check=f"{name}.job", target=name, family=name, status=status, message=message
    ).to_json()


__all__ = [
    "OUTPUT",
    "STAGE_FILE",
    "Stage",
    "parse_options",
    "plan",
    "read_json",
    "run",
    "unfinished_result",
]

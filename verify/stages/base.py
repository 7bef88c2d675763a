"""What a stage is: a command `varguard run` runs after the checks, into a folder of the report.

A stage is declared once, as a :class:`Stage` object in its own package (verify/converge/stage.py,
verify/bench/stage.py, verify/depth/stage.py) and registered in verify/stages/__init__.py. The
object says everything the rest of the suite needs: its command's options and their validation
(torch-free, so the command line starts fast), the options each profile runs it with, the folder
it writes and the file that says it finished, the results it contributes to the report, and its
report section. Commands, profiles, the schema and the writers loop over the registry.

Running one (:func:`run_stage`): the command runs in a child process writing into
``OUT/<name>/``; beside its output it leaves ``stage.json`` (the command, the exit code, the
time, and the tail of its stderr when it crashed). A crash is an error result in the report;
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from verify.atomic import write_text
from verify.exits import UsageError
from verify.result import Result, Status

STAGE_FILE = "stage.json"
#: Options `varguard run` sets itself for a stage: given by the user they would write elsewhere.
RESERVED = ("--out",)


@dataclass(frozen=True)
class Stage:
    name: str  # the subcommand (`varguard <name>`) and the report subfolder
    help: str  # one line for `varguard --help`
    description: str  # the subcommand's --help text
    epilog: str
    add_options: Callable[[argparse.ArgumentParser], None]  # the subcommand's arguments
    validate: Callable[[argparse.Namespace], None]  # raises UsageError naming the option
    command: str  # "module:function" that runs the parsed subcommand (imported on use)
    output: str  # the file in its folder that says it finished
    # Options per profile name (None: not in that profile); the run's --<name> overrides.
    profiles: Mapping[str, tuple[str, ...] | None]
    collect: Callable[[Path], dict | None]  # report.json's section, from the report folder
    results: Callable[[dict | None], list[dict]]  # result records the stage contributes
    markdown: Callable[[dict | None], list[str]]
    html: Callable[[dict | None, Path | None], list[str]]
    families: tuple[str, ...] = ()  # the run's targets of these families go to --target
    # The run's --family (those of ``families``) goes to the stage as --family when the run
    # names no target: the stage's own default targets are then of those families only.
    family_option: bool = False
    after_report: bool = False  # reads the report written from the checks (bench does)
    reserved: tuple[str, ...] = ()  # further options `run` sets (besides --out)
    example: str = ""  # an example of its options, for `run --help`

    def run_argv(self, out: Path, *, verified: bool = True) -> list[str]:
        """Options `run` adds: the output folder, and the report for a stage that reads it
        (unless ``verified`` is False: the report lacks checks, the stage runs its own)."""
        extra = ["--verified", str(out / "report.json")] if self.after_report and verified else []
        return [*extra, "--out", str(out / self.name)]


@dataclass(frozen=True)
class PlannedStage:
    """A stage as one run will run it: its options, the targets it gets, or why it is skipped."""

    stage: Stage
    options: tuple[str, ...]
    skipped: str | None = None
    targets: tuple[str, ...] = field(default=())
    verified: bool = True  # False: the run's report is not the whole run's (one shard of it)

    @property
    def name(self) -> str:
        return self.stage.name

    def argv(self, out: Path) -> list[str]:
        extra = [a for t in self.targets for a in ("--target", t)]
        return [*self.options, *extra, *self.stage.run_argv(out, verified=self.verified)]

    def command_line(self, out: Path) -> str:
        return shlex.join(["varguard", self.name, *self.argv(out)])


def parser_for(stage: Stage) -> argparse.ArgumentParser:
    """A parser holding only ``stage``'s subcommand: to validate its options up front."""
    parser = argparse.ArgumentParser(prog="varguard")
    sub = parser.add_subparsers(dest="command")
    add_subcommand(sub, stage)
    return parser


def add_subcommand(sub, stage: Stage) -> argparse.ArgumentParser:
    p = sub.add_parser(
        stage.name, help=stage.help, description=stage.description, epilog=stage.epilog
    )
    stage.add_options(p)
    p.set_defaults(command_function=stage.command)
    return p


def parse_options(stage: Stage, text: str) -> tuple[str, ...]:
    """``--converge '--epochs 2'``: split like a shell would, and check with the command's own
    parser now, so that a typo costs a usage error, not the minutes of checks before it."""
    name = stage.name
    try:
        options = tuple(shlex.split(text))
    except ValueError as exc:
        raise UsageError(f"--{name} {text!r}: {exc}; quote the options as one argument") from None
    for banned in (*RESERVED, *stage.reserved):
        if banned in options or any(o.startswith(banned + "=") for o in options):
            raise UsageError(
                f"--{name} {text!r}: {banned} is set by `varguard run` (the stage writes into "
                f"the report folder); leave it out"
            )
    try:
        args = parser_for(stage).parse_args([name, *options])
    except SystemExit:  # argparse printed what was wrong
        raise UsageError(f"--{name} {text!r}: not valid `varguard {name}` options") from None
    try:
        stage.validate(args)
    except UsageError as exc:
        raise UsageError(f"--{name} {text!r}: {exc}") from None
    return options


def plan_stage(
    stage: Stage,
    *,
    profile: str,
    flag: str | None,
    disabled: bool,
    run_targets: list | None,
    families: list[str] | None,
) -> PlannedStage | None:
    """The stage as this run runs it, or None. ``flag`` is --<name>'s value (None when not
    given; a string of options, maybe empty, when given); ``run_targets`` the (spec, Target)
    pairs named with --target (None: every built-in one); ``families`` the run's --family.
    Without a flag the profile decides, and a --family that excludes every family the stage
    takes targets from turns it off."""
    if disabled:
        return None
    if flag is not None:
        options = parse_options(stage, flag)
    else:
        defaults = stage.profiles.get(profile)
        if defaults is None:
            return None
        if stage.families and families and not set(stage.families) & set(families):
            return None
        options = tuple(defaults)
    if (
        not stage.families
        or "--target" in options
        or any(o.startswith("--target=") for o in options)
    ):
        return PlannedStage(stage, options)
    if run_targets is None:  # every built-in target: the command's own default targets
        if stage.family_option and families and "--family" not in options:
            mine = [f for f in stage.families if f in families]
            options = (*options, *(a for f in mine for a in ("--family", f)))
        return PlannedStage(stage, options)
    specs = tuple(spec for spec, t in run_targets if t.family in stage.families)
    if not specs:
        kinds = " or ".join(stage.families)
        return PlannedStage(
            stage,
            options,
            skipped=f"none of the run's targets is a {kinds} target, and `varguard "
            f"{stage.name}` takes {kinds} targets; give them with --{stage.name} '--target T'",
        )
    return PlannedStage(stage, options, targets=specs)


def run_stage(planned: PlannedStage, out: Path, *, resume: bool = False) -> dict:
    """Run the stage's command into ``out/<name>/`` and return what stage.json records."""
    stage = planned.stage
    folder = out / stage.name
    record_path = folder / STAGE_FILE
    if resume and record_path.exists() and (folder / stage.output).exists():
        print(f"{stage.name}: kept from before ({folder})")
        return json.loads(record_path.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    record = {"stage": stage.name, "command": planned.command_line(out)}
    if planned.skipped:
        record.update(status="skipped", why=planned.skipped)
        print(f"\n{stage.name}: skipped: {planned.skipped}")
        write_text(record_path, json.dumps(record, indent=1))
        return record
    (folder / stage.output).unlink(missing_ok=True)  # never show a stale result
    print(f"\n{stage.name}: {record['command']}", flush=True)
    started = time.monotonic()
    code, tail = _spawn([sys.executable, "-m", "verify", stage.name, *planned.argv(out)])
    record["returncode"] = code
    record["seconds"] = round(time.monotonic() - started, 1)
    finished = code in (0, 1) and (folder / stage.output).exists()
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
        try:
            for line in proc.stderr:
                sys.stderr.write(line)
                tail.append(line)
        except BaseException:  # interrupted: the stage must not outlive the run
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
        return proc.wait(), list(tail)


# --- reading a stage folder back (the report writer) ---------------------------------------------


def read_json(path: Path) -> dict | None:
    """A stage's JSON file, or None when it is missing or cut short by a crash."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def read_record(folder: Path) -> dict | None:
    """The stage.json `run` left in a stage's folder, or None."""
    return read_json(Path(folder) / STAGE_FILE)


def unfinished_result(name: str, output: str, record: dict | None) -> dict:
    """The result standing for a stage that wrote no output: skipped (with why) or an error
    (with the command, its exit code and the tail of its stderr)."""
    record = record or {}
    if record.get("status") == "skipped":
        status, message = Status.SKIPPED, record.get("why", "")
    else:
        status = Status.ERROR
        message = (
            f"`{record.get('command', 'varguard ' + name)}` exited with code "
            f"{record.get('returncode')} and wrote no {output}; the last lines of its "
            f"stderr:\n{record.get('stderr_tail', '')}"
        )
    return Result(
        check=f"{name}.job", target=name, family=name, status=status, message=message
    ).to_json()


__all__ = [
    "RESERVED",
    "STAGE_FILE",
    "PlannedStage",
    "Stage",
    "add_subcommand",
    "parse_options",
    "parser_for",
    "plan_stage",
    "read_json",
    "read_record",
    "run_stage",
    "unfinished_result",
]

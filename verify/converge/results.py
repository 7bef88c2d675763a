"""The convergence job's gated results, in the suite's one result model (verify.result).

Each check of each target arm and of the reference, taken over all seeds, becomes one result of
family ``converge`` (failed if any seed failed); each target's t-test against the reference one
more. The controls are reported, not gated. ``varguard converge`` stores these in converge.json
("results"), and the report reads them from there. Torch-free: a report is written from a
folder alone.
"""

from __future__ import annotations

from verify.converge.options import argv_for
from verify.result import Result, Status

FAMILY = "converge"
GATED = ("target", "reference")


def run_checks(run: dict) -> list[dict]:
    """A run's per-seed check records as result records. converge.json files written before the
    one result model name a check ``name`` (no family prefix) and keep ``values`` at the top."""
    out = []
    for c in run.get("checks", []):
        if "check" in c:
            out.append(c)
        else:
            out.append(
                {
                    "check": f"{FAMILY}.{c['name']}",
                    "status": c["status"],
                    "message": c.get("message", ""),
                    "extra": {"values": c.get("values", {})},
                }
            )
    return out


def find_check(run: dict | None, name: str) -> dict | None:
    """The record of check ``name`` (e.g. "init.stream") in one run, or None."""
    if run is None:
        return None
    return next((c for c in run_checks(run) if c["check"] == f"{FAMILY}.{name}"), None)


def gated_results(data: dict) -> list[dict]:
    """Result records (as in results.jsonl) for the gated checks of a converge.json."""
    runs_by_arm: dict[str, list[dict]] = {}
    for run in data["runs"]:
        runs_by_arm.setdefault(run["arm"], []).append(run)
    out = []
    for arm in data["arms"]:
        if arm["role"] not in GATED:
            continue
        if arm["status"] == Status.SKIPPED:
            out.append(_record(arm["name"], "converge.job", Status.SKIPPED, arm.get("note", "")))
            continue
        runs = runs_by_arm.get(arm["name"]) or runs_by_arm.get("reference", [])
        shared = arm["name"] not in runs_by_arm
        for name in _check_names(runs):
            out.append(_per_seed(arm, runs, name, data["config"], shared=shared))
        c = arm.get("comparison")
        if c:
            c = run_checks({"checks": [c]})[0]
            values = c.get("extra", {}).get("values", {})
            failed = c["status"] == Status.FAILED
            out.append(
                _record(
                    arm["name"],
                    c["check"],
                    Status(c["status"]),
                    c["message"],
                    bound="one-sided Welch t-test against the reference, alpha "
                    f"{values.get('alpha')}",
                    examples=len(arm["seeds"]),
                    seconds=arm["wall_s"],
                    repro=_repro(arm, c["check"], c["message"], data["config"]) if failed else None,
                    extra={"values": values},
                )
            )
    return out


def _check_names(runs: list[dict]) -> list[str]:
    names: list[str] = []
    for r in runs:
        names += [c["check"] for c in run_checks(r) if c["check"] not in names]
    return names


def _per_seed(arm: dict, runs: list[dict], name: str, config: dict, *, shared: bool) -> dict:
    """One result for a check over every seed: failed if any seed failed."""
    found = [(r["seed"], c) for r in runs for c in run_checks(r) if c["check"] == name]
    failed = [(s, c) for s, c in found if c["status"] == Status.FAILED]
    passed = [(s, c) for s, c in found if c["status"] == Status.PASSED]
    if failed:
        status, shown = Status.FAILED, failed
    elif passed:
        status, shown = Status.PASSED, passed[:1]
    else:
        status, shown = Status.SKIPPED, found[:1]
    lines = [f"seed {s}: {c['message']}" for s, c in shown]
    if status == Status.PASSED:
        lines.append(f"passed for every seed ({', '.join(str(s) for s, _ in found)})")
    if shared:
        lines.append("(same implementation and settings as the reference: its runs)")
    message = "\n".join(lines)
    return _record(
        arm["name"],
        name,
        status,
        message,
        examples=len(found),
        repro=_repro(arm, name, message, config) if status == Status.FAILED else None,
        extra={"seeds": [s for s, _ in found]},
    )


def _record(target: str, check: str, status: Status, message: str, **kw) -> dict:
    return Result(
        check=check,
        target=target,
        family=FAMILY,
        status=status,
        message=message,
        bound=kw.pop("bound", "verify.converge.checks (see the converge section)"),
        **kw,
    ).to_json()


REPRO = '''\
"""Reproduce a varguard failure: {check} on {target} (the convergence job).

{comment}

Trains again with the same settings, without the controls; exits 1 while a check fails.
Run from a checkout with varguard installed:  python THIS_FILE
"""

import sys

from verify.converge.command import main

sys.exit(main({argv!r}))
'''


def _repro(arm: dict, check: str, message: str, config: dict) -> str:
    target = "torch-eager" if arm["role"] == "reference" else arm["name"]
    comment = "\n".join("    " + line for line in message.splitlines())
    return REPRO.format(
        check=check,
        target=arm["name"],
        comment=comment,
        argv=argv_for(config, targets=[target], controls=False),
    )


__all__ = ["FAMILY", "find_check", "gated_results", "run_checks"]

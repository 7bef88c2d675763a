"""`varguard sweep --seeds A-B --out DIR [-- RUN OPTIONS]`: one `varguard run` per Hypothesis
seed, each into DIR/seed-S, then DIR/sweep.json and sweep.md (verify.report.sweep): every failure
with its seed and reproduction script, and each target's checks, cases and closest approach to
its bound over all seeds. The false-alarm measure: correct implementations must fail at no seed.

Each seed runs as its own process (a crash costs that seed, not the sweep). A seed whose folder
holds a finished report is not run again, and one that was interrupted is continued with
--resume: run the same command again after a stop and only the work left is done. Reads folders
and starts processes only (torch-free).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from verify.atomic import write_text
from verify.exits import EXIT_FAILED, EXIT_OK, UsageError, interruption, stop_signals
from verify.report import sweep as summary

#: run options the sweep sets itself, per seed.
OWN = ("--seed", "--out", "--resume", "--shard", "--plan", "--list")


def parse_seeds(text: str) -> list[int]:
    """ "0-19" or "0,3,7" or "5": the seeds, in order, each once."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            lo, sep, hi = part.strip().partition("-")
            first, last = int(lo), int(hi) if sep else int(lo)
            if last < first:
                raise ValueError
            seeds += [s for s in range(first, last + 1) if s not in seeds]
    except ValueError:
        raise UsageError(
            f"--seeds {text!r}: give a range A-B, a comma list, or both (e.g. 0-19 or 0,4,9)"
        ) from None
    if any(s < 0 for s in seeds):
        raise UsageError(f"--seeds {text!r}: seeds are non-negative integers")
    return seeds


def run_options(extra: list[str]) -> list[str]:
    """The options given after --, checked: the sweep sets the seed and the folder itself."""
    rest = extra[1:] if extra[:1] == ["--"] else list(extra)
    for arg in rest:
        name = arg.split("=", 1)[0]
        if name in OWN:
            raise UsageError(
                f"{name} after --: the sweep sets it for each seed; give --seeds and --out to "
                "`varguard sweep` itself"
            )
    return rest


def seed_command(options: list[str], *, seed: int, folder: Path, resume: bool) -> list[str]:
    cmd = [sys.executable, "-m", "verify", "run", *options, "--seed", str(seed)]
    return cmd + ["--out", str(folder)] + (["--resume"] if resume else [])


def cmd_sweep(args: argparse.Namespace) -> int:
    seeds = parse_seeds(args.seeds)
    options = run_options(args.run_options or [])
    out = Path(args.out)
    shown = ["varguard", "sweep", "--seeds", args.seeds, "--out", str(out)]
    shown += ["--", *options] if options else []
    child: subprocess.Popen | None = None
    try:
        with stop_signals():
            for i, seed in enumerate(seeds, 1):
                folder = summary.seed_folder(out, seed)
                state = summary.seed_state(folder, seed)
                if state.state == "complete":
                    print(f"sweep: seed {seed} ({i}/{len(seeds)}): already complete in {folder}")
                    continue
                resume = state.state == "interrupted"
                how = "continuing" if resume else "running"
                print(f"sweep: seed {seed} ({i}/{len(seeds)}): {how} into {folder}", flush=True)
                # Its own session: a Ctrl-C reaches the run once, forwarded below, not twice.
                child = subprocess.Popen(
                    seed_command(options, seed=seed, folder=folder, resume=resume),
                    start_new_session=True,
                )
                code = child.wait()
                child = None
                if code == 2:  # a usage error is the same at every seed: stop at the first
                    raise UsageError(f"`varguard run` refused the options at seed {seed} (above)")
                print(f"sweep: seed {seed} exit {code}", flush=True)
    except KeyboardInterrupt as exc:
        stop = interruption(exc)
        if child is not None:  # the run writes its interrupted report, then the summary follows
            child.send_signal(stop.signum)
            with stop_signals():  # a second signal must not cut that report short
                while child.poll() is None:
                    try:
                        child.wait()
                    except KeyboardInterrupt:
                        continue
        _write(out, seeds, shown)
        print(f"sweep: interrupted ({stop.name}); run the same command again to continue")
        return stop.exit_code
    result = _write(out, seeds, shown)
    return EXIT_FAILED if result.bad else EXIT_OK


def _write(out: Path, seeds: list[int], shown: list[str]) -> summary.Sweep:
    result = summary.summarise(out, seeds)
    report = summary.to_json(result, command=shown)
    write_text(out / summary.JSON_NAME, json.dumps(report, indent=1))
    write_text(out / summary.MARKDOWN_NAME, summary.to_markdown(result, command=shown))
    tot = summary.totals(result)
    print(
        f"sweep: {len(result.complete)}/{len(seeds)} seeds complete; {tot['passed']} passed, "
        f"{tot['failed']} failed, {tot['error']} errors, {tot['skipped']} skipped, "
        f"{tot['cases']} cases; {out / summary.MARKDOWN_NAME}"
    )
    return result


__all__ = ["cmd_sweep", "parse_seeds", "run_options", "seed_command"]

"""Run each target's checks in a worker process, so a target cannot take the run down with it.

A target that hangs is killed after a per-check timeout; one that kills its process (segfault,
os._exit, the OOM killer) is reported as an error naming the exit code or signal. Either way
the worker is restarted for that target's remaining checks and the run goes on.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from verify.checks.base import ERROR, CheckResult


@dataclass(frozen=True)
class Job:
    spec: str  # how the worker re-resolves the target (name, mutant:NAME, module:Name)
    target: str  # the target's display name
    family: str
    checks: tuple[str, ...]


def _worker(
    conn, spec: str, checks: tuple[str, ...], profile: str, seed: int, corpus_root: str | None
) -> None:
    # Runs in the child: resolve everything by name, stream each result back as it finishes.
    from verify.checks import get_check
    from verify.checks.base import run_check
    from verify.profiles import get_profile
    from verify.report import corpus
    from verify.targets import resolve

    try:
        target = resolve(spec)
        prof = get_profile(profile)
        for name in checks:
            conn.send(("start", name))
            check = get_check(name)
            cases = corpus.load(corpus_root, name, target.name) if corpus_root else []
            conn.send(("result", run_check(check, target, prof, seed=seed, corpus=cases)))
    except Exception as exc:  # outside any check (resolving, pickling): say what, not exit 1
        conn.send(("fatal", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("done", None))


def _death(exitcode: int | None) -> str:
    if exitcode is None:
        return "the target's process stopped answering"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"the target killed its process ({name})"
    return f"the target's process exited with code {exitcode}"


def run_jobs(
    jobs: list[Job],
    *,
    profile: str,
    seed: int,
    timeout: float,
    corpus_root: str | None = None,
    on_start: Callable[[str, str], None] | None = None,
    on_result: Callable[[CheckResult], None] | None = None,
) -> list[CheckResult]:
    ctx = mp.get_context("spawn")
    results: list[CheckResult] = []

    def emit(r: CheckResult) -> None:
        results.append(r)
        if on_result:
            on_result(r)

    def error(job: Job, check: str, why: str) -> None:
        emit(CheckResult(check, job.target, job.family, ERROR, message=f"isolation: {why}"))

    for job in jobs:
        remaining = list(job.checks)
        while remaining:
            parent, child = ctx.Pipe(duplex=False)
            proc = ctx.Process(
                target=_worker,
                daemon=True,
                args=(child, job.spec, tuple(remaining), profile, seed, corpus_root),
            )
            proc.start()
            child.close()
            current, started = None, time.monotonic()
            while True:
                budget = timeout if current else timeout + 120  # first message waits for imports
                if parent.poll(max(0.0, budget - (time.monotonic() - started))):
                    try:
                        kind, payload = parent.recv()
                    except EOFError:
                        kind, payload = "died", None
                else:
                    kind, payload = "timeout", None
                if kind == "start":
                    current, started = payload, time.monotonic()
                    if on_start:
                        on_start(job.target, payload)
                elif kind == "result":
                    emit(payload)
                    remaining.remove(payload.check)
                    current = None
                    started = time.monotonic()
                elif kind == "done":
                    break
                elif kind == "fatal":
                    for name in list(remaining):
                        error(job, name, f"worker failed: {payload}")
                    remaining.clear()
                    break
                else:  # died or timed out: blame the running check, restart for the rest
                    if kind == "timeout":
                        proc.kill()
                    proc.join(10)
                    name = current or remaining[0]
                    why = (
                        f"timed out after {timeout:g} s (per-check limit; --timeout)"
                        if kind == "timeout"
                        else _death(proc.exitcode)
                    )
                    error(job, name, why)
                    remaining.remove(name)
                    break
            proc.join(10)
            if proc.is_alive():
                proc.kill()
            parent.close()
    return results

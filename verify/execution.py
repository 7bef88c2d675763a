"""The one way checks are executed: `run`, `mutants`, the bench's verification and the pytest
plugin all call :func:`run_checks`.

A :class:`Job` is one target and the checks to run on it. In-process (``isolate=False``) the jobs
run one after another in this process. Isolated (the default for the command line), each job
runs in a worker process, so a target cannot take the run down with it: a target that hangs is
killed after the per-check timeout, one that kills its process (segfault, os._exit, the OOM
killer) is reported as an error naming the exit code or signal, and a fresh worker takes the
target's remaining checks. ``workers`` processes run jobs side by side, each pinned to its share
of the CPU threads. A target that hangs or crashes twice in a row gets its remaining checks
recorded at once as errors (one timeout, not one per check). Results are handed to
``on_result`` as soon as they exist; the seed, not the scheduling, decides every case.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from multiprocessing.connection import wait
from pathlib import Path

from verify import corpus as corpus_files
from verify.checks import all_checks, get_check
from verify.checks.base import run_check
from verify.profiles import Profile, get_profile
from verify.resolve import resolve
from verify.result import Result, Status
from verify.targets import builtin
from verify.targets.base import Target

#: Seconds a fresh worker may take to import torch, Hypothesis and theory/ before its first
#: check starts (the SELU constants alone are derived in ~3 s).
STARTUP_SECONDS = 120.0
#: Hangs or crashes in a row after which a target's remaining checks are not run.
STRIKES = 2


@dataclass(frozen=True)
class Job:
    spec: str  # how a worker resolves the target again (name, mutant:NAME, module:Name)
    target: str  # the target's display name
    family: str
    checks: tuple[str, ...]
    # The Target itself, for in-process runs of a target that has no name to resolve by.
    resolved: Target | None = field(default=None, compare=False, repr=False)
    # Stop at the first failed check (the mutant catalog: one kill is enough).
    stop_at_failure: bool = False

    @classmethod
    def of(
        cls,
        target: Target,
        checks: Sequence[str],
        *,
        spec: str | None = None,
        stop_at_failure: bool = False,
    ) -> Job:
        return cls(
            spec=spec or target.name,
            target=target.name,
            family=target.family,
            checks=tuple(checks),
            resolved=target,
            stop_at_failure=stop_at_failure,
        )


@dataclass(frozen=True)
class Execution:
    """How the checks run: the search effort, the seed, and the isolation policy."""

    profile: Profile
    seed: int = 0
    isolate: bool = True
    workers: int = 1
    timeout: float | None = None  # per check; None: the profile's
    corpus: Path | None = None  # regression corpus folder, replayed first
    known_cases: bool = True  # the checks' fixed known-bad cases (off: the search alone)

    @property
    def check_timeout(self) -> float:
        return self.timeout if self.timeout is not None else self.profile.timeout


OnStart = Callable[[str, str], None]
OnResult = Callable[[Result], None]


def run_checks(
    jobs: Sequence[Job],
    execution: Execution,
    *,
    on_start: OnStart | None = None,
    on_result: OnResult | None = None,
) -> list[Result]:
    """Run every check of every job; return the results in the order they finished."""
    results: list[Result] = []

    def emit(r: Result) -> None:
        results.append(r)
        if on_result:
            on_result(r)

    if execution.isolate:
        _Pool(execution, on_start=on_start, emit=emit).run(jobs)
    else:
        for job in jobs:
            _run_in_process(job, execution, on_start=on_start, emit=emit)
    return results


def _target_of(job: Job) -> Target:
    return job.resolved if job.resolved is not None else resolve(job.spec)


def _one(target: Target, name: str, execution: Execution) -> Result:
    check = get_check(name)
    cases = corpus_files.load(execution.corpus, name, target.name) if execution.corpus else []
    return run_check(
        check,
        target,
        execution.profile,
        seed=execution.seed,
        corpus=cases,
        known_cases=execution.known_cases,
    )


def _run_in_process(job: Job, execution: Execution, *, on_start, emit) -> None:
    try:
        target = _target_of(job)
    except Exception as exc:  # resolving failed: every check of the job says why
        for name in job.checks:
            emit(isolation_error(job, name, f"could not load the target: {exc}"))
        return
    for name in job.checks:
        if on_start:
            on_start(job.target, name)
        result = _one(target, name, execution)
        emit(result)
        if job.stop_at_failure and result.status == Status.FAILED:
            return


def isolation_error(job: Job, check: str, why: str, **extra) -> Result:
    return Result(
        check=check,
        target=job.target,
        family=job.family,
        status=Status.ERROR,
        message=f"isolation: {why}",
        extra=dict(extra),
    )


# --- the worker side ---------------------------------------------------------------------------


def _worker(conn, execution: Execution, threads: int) -> None:
    """Runs in a child: take jobs one at a time, stream each result back as it finishes."""
    import torch

    torch.set_num_threads(threads)
    # Import every family's checks and targets now, not inside the first check's time limit.
    all_checks()
    builtin()
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        job: Job = message
        try:
            target = resolve(job.spec)
        except Exception as exc:  # outside any check (resolving, importing): say what
            conn.send(("fatal", f"{type(exc).__name__}: {exc}"))
            continue
        for name in job.checks:
            conn.send(("start", name))
            result = _one(target, name, execution)
            conn.send(("result", result))
            if job.stop_at_failure and result.status == Status.FAILED:
                break
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


# --- the parent side: a pool of workers ------------------------------------------------------


@dataclass
class _Slot:
    """One worker process and what it is doing."""

    proc: mp.process.BaseProcess
    conn: object
    job: Job | None = None
    remaining: list[str] = field(default_factory=list)
    current: str | None = None
    since: float = 0.0  # when the current check (or the job's first message) started


class _Pool:
    def __init__(self, execution: Execution, *, on_start: OnStart | None, emit) -> None:
        self.execution = execution
        self.on_start = on_start
        self.emit = emit
        self.ctx = mp.get_context("spawn")
        self.threads = max(1, (os.cpu_count() or 1) // max(1, execution.workers))
        self.strikes: dict[str, list[str]] = {}  # target -> checks that hung or crashed in a row

    def _spawn(self) -> _Slot:
        parent, child = self.ctx.Pipe(duplex=True)
        proc = self.ctx.Process(
            target=_worker, args=(child, self.execution, self.threads), daemon=True
        )
        proc.start()
        child.close()
        return _Slot(proc=proc, conn=parent)

    def run(self, jobs: Sequence[Job]) -> None:
        queue: deque[Job] = deque(jobs)
        slots: list[_Slot] = []
        try:
            while queue or any(s.job for s in slots):
                while queue and (idle := self._idle(slots)) is not None:
                    self._assign(idle, queue.popleft())
                while queue and len(slots) < self.execution.workers:
                    slot = self._spawn()
                    slots.append(slot)
                    self._assign(slot, queue.popleft())
                busy = [s for s in slots if s.job]
                if not busy:
                    continue
                deadline = min(self._deadline(s) for s in busy)
                ready = wait([s.conn for s in busy], timeout=max(0.0, deadline - time.monotonic()))
                for slot in busy:
                    if slot.conn in ready:
                        self._receive(slot, slots, queue)
                    elif time.monotonic() >= self._deadline(slot):
                        self._lost(slot, slots, queue, timed_out=True)
        finally:
            for slot in slots:
                self._close(slot)

    def _idle(self, slots: list[_Slot]) -> _Slot | None:
        return next((s for s in slots if s.job is None), None)

    def _deadline(self, slot: _Slot) -> float:
        budget = self.execution.check_timeout
        if slot.current is None:  # waiting for the first message: imports count too
            budget += STARTUP_SECONDS
        return slot.since + budget

    def _assign(self, slot: _Slot, job: Job) -> None:
        dead = self._dead_end(job)
        if dead:
            for name in job.checks:
                self.emit(dead(name))
            return
        slot.job, slot.remaining, slot.current = job, list(job.checks), None
        slot.since = time.monotonic()
        slot.conn.send(replace(job, resolved=None))  # workers resolve it again, by name

    def _dead_end(self, job: Job):
        """For a target that already hung or crashed STRIKES times in a row: a function giving
        the error result of each check it will not run; else None."""
        struck = self.strikes.get(job.target, [])
        if len(struck) < STRIKES:
            return None
        why = (
            f"not run: the target hung or crashed in {' and '.join(struck)}, {len(struck)} "
            f"checks in a row"
        )
        return lambda name: isolation_error(job, name, why, not_run=True)

    def _receive(self, slot: _Slot, slots: list[_Slot], queue: deque[Job]) -> None:
        try:
            kind, payload = slot.conn.recv()
        except (EOFError, OSError):
            self._lost(slot, slots, queue, timed_out=False)
            return
        job = slot.job
        if kind == "start":
            slot.current, slot.since = payload, time.monotonic()
            if self.on_start:
                self.on_start(job.target, payload)
        elif kind == "result":
            self.strikes.pop(job.target, None)
            self.emit(payload)
            slot.remaining.remove(payload.check)
            slot.current, slot.since = None, time.monotonic()
        elif kind == "done":
            slot.job = None
        elif kind == "fatal":
            for name in slot.remaining:
                self.emit(isolation_error(job, name, f"worker failed: {payload}"))
            slot.job = None

    def _lost(self, slot: _Slot, slots: list[_Slot], queue: deque[Job], *, timed_out: bool):
        """The worker hung past its deadline or died: blame the running check, replace the
        worker, and put the job's other checks back at the front of the queue."""
        job = slot.job
        if timed_out:
            slot.proc.kill()
        slot.proc.join(10)
        name = slot.current or slot.remaining[0]
        elapsed = time.monotonic() - slot.since
        if timed_out:
            why = f"timed out after {self.execution.check_timeout:g} s (per-check limit; --timeout)"
        else:
            why = _death(slot.proc.exitcode)
        self.emit(isolation_error(job, name, why, hung=timed_out, seconds=round(elapsed, 1)))
        self.strikes.setdefault(job.target, []).append(name)
        rest = [c for c in slot.remaining if c != name]
        self._close(slot)
        slots.remove(slot)
        if rest:
            queue.appendleft(replace(job, checks=tuple(rest)))

    def _close(self, slot: _Slot) -> None:
        try:
            if slot.proc.is_alive():
                slot.conn.send(None)
                slot.proc.join(5)
        except (BrokenPipeError, OSError):
            pass
        if slot.proc.is_alive():
            slot.proc.kill()
            slot.proc.join(5)
        slot.conn.close()


def execution_for(
    profile: str | Profile, *, seed: int = 0, isolate: bool = True, **kw
) -> Execution:
    """An Execution from a profile name or object (the keyword arguments as in Execution)."""
    prof = get_profile(profile) if isinstance(profile, str) else profile
    return Execution(profile=prof, seed=seed, isolate=isolate, **kw)


__all__ = ["Execution", "Job", "execution_for", "isolation_error", "run_checks"]

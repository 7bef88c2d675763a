"""The one way checks are executed: `run`, `mutants`, the bench's verification and the pytest
plugin all call :func:`run_checks`.

A :class:`Job` is one target and the checks to run on it. In-process (``isolate=False``) the jobs
run one after another in this process. Isolated (the default for the command line), each job
runs in a worker process, so a target cannot take the run down with it: a target that hangs is
killed after the per-check limit, one that kills its process (segfault, os.abort, the OOM
killer) is reported as an error naming the exit code or signal, and a fresh worker takes the
target's remaining checks. ``workers`` processes run jobs side by side, each on one CPU thread
(:data:`WORKER_THREADS`). A target that hangs or crashes twice in a row gets its remaining checks
recorded at once as errors (two limits, not one per check). A hang or crash carries a
reproduction script that runs that check on that target (no single case is known).

The per-check limit is derived, not flat: :data:`TIMEOUT_FACTOR` times what the same check took
on its family's reference target (verify.families.REFERENCE_TARGETS) in this run, at least
:data:`TIMEOUT_FLOOR`; before the reference has run it (it is scheduled first), the profile's
limit; ``Execution.timeout`` (--timeout) fixes it. Results are handed to ``on_result`` as soon as
they exist; the seed, not the scheduling, decides every case.
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

import torch

from verify import corpus as corpus_files
from verify.checks import all_checks, get_check
from verify.checks.base import run_check
from verify.families import FAMILIES, REFERENCE_TARGETS
from verify.profiles import Profile, get_profile
from verify.resolve import resolve
from verify.result import Result, Status, repro_filename
from verify.targets import builtin
from verify.targets.base import Target

#: Seconds a fresh worker may take to import torch, Hypothesis and theory/ before its first
#: check starts (the SELU constants alone are derived in ~3 s).
STARTUP_SECONDS = 120.0
#: Hangs or crashes in a row after which a target's remaining checks are not run.
STRIKES = 2
#: A check may take this many times what it took on the family's reference target, and at least
#: TIMEOUT_FLOOR seconds: generous (the slowest target that compiles nothing took 5x the
#: reference's time in the standard report on a loaded 2-core machine; targets that compile
#: keep the profile's limit), while a hang costs only the floor when the reference is fast: a
#: hung target costs two floors, which keeps a quick CI run with one under 3 minutes on 2 cores.
TIMEOUT_FACTOR = 20.0
TIMEOUT_FLOOR = 45.0
#: Torch threads per worker, whatever the number of workers: torch's sums round differently
#: with another thread count, Hypothesis climbs its error/allowed scores to other cases, and the
#: gate would read a report made with another --jobs as drift. One thread each, and as many
#: workers as cores (the default), keeps every core busy without oversubscribing them.
WORKER_THREADS = 1


def available_cores() -> int:
    """The cores this process may run on (a CI container or taskset may allow fewer than exist)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


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
    timeout: float | None = None  # per check, fixed (--timeout); None: derived (module doc)
    corpus: Path | None = None  # regression corpus folder, replayed first
    known_cases: bool = True  # the checks' fixed known-bad cases (off: the search alone)


@dataclass(frozen=True)
class Shard:
    """The K-th of N shares of a run (`run --shard K/N`), for fanning one run out over machines.

    The share is round-robin over the planned (target, check) pairs in plan order: every machine
    computes the same split from the same plan, each gets within one check of 1/N, and one
    target's checks spread over the shards (a slow target does not weigh on one machine)."""

    index: int  # 1-based, as written
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        k, sep, n = str(text).partition("/")
        try:
            index, count = int(k), int(n)
        except ValueError:
            index = count = 0
        if not sep or not 1 <= index <= count:
            raise ValueError(f"--shard {text}: give K/N with 1 <= K <= N, e.g. --shard 1/4")
        return cls(index=index, count=count)

    def owns(self, position: int) -> bool:
        """Whether the item at ``position`` (0-based) of a planned sequence is this shard's."""
        return position % self.count == self.index - 1

    def take(self, jobs: Sequence[Job]) -> list[Job]:
        pairs = [(job.target, check) for job in jobs for check in job.checks]
        mine = {pair for i, pair in enumerate(pairs) if self.owns(i)}
        taken = [
            replace(job, checks=tuple(c for c in job.checks if (job.target, c) in mine))
            for job in jobs
        ]
        return [job for job in taken if job.checks]

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def check_limit(
    execution: Execution,
    check: str,
    reference: dict[str, tuple[str, float]],
    *,
    compiles: bool = False,
) -> tuple[float, str]:
    """Seconds ``check`` may run in a worker, and why that many (for the timeout message).
    ``reference`` maps a check to (reference target, seconds it took there) in this run;
    ``compiles``: the target compiles its kernels (:func:`compiles`)."""
    if execution.timeout is not None:
        return execution.timeout, "set by --timeout"
    if compiles:  # compiling or interpreting, of which the eager reference's time says nothing
        return execution.profile.timeout, f"the {execution.profile.name} profile's limit"
    if check not in reference:
        return (
            execution.profile.timeout,
            f"the {execution.profile.name} profile's limit: no reference time for it yet",
        )
    target, took = reference[check]
    limit = max(TIMEOUT_FLOOR, TIMEOUT_FACTOR * took)
    return (
        limit,
        f"{TIMEOUT_FACTOR:g}x the {took:.1f} s it took on {target}, at least {TIMEOUT_FLOOR:g} s",
    )


def compiles(target: Target | None) -> bool:
    """Whether a target compiles its kernels per shape (torch.compile, Triton's JIT) or runs them
    in an interpreter (Triton on the CPU): 25x the reference's time was seen, with no hang."""
    return target is not None and (target.compile or "triton" in target.requires)


def is_reference(job: Job) -> bool:
    return REFERENCE_TARGETS.get(job.family) == job.target


def schedule(jobs: Sequence[Job]) -> list[Job]:
    """The order workers take jobs in. The families' reference targets first: the other
    targets' limits derive from their times. Then each check of a compiling target as a job of
    its own: every check compiles kernels for its own shapes, which is minutes in one worker
    (batch norm's torch.compile: 867 s for 15 checks in the quick profile on this CPU) and a
    fraction of that side by side in many. Then the rest, as planned."""
    reference = [j for j in jobs if is_reference(j)]
    rest = [j for j in jobs if not is_reference(j)]
    split = [
        replace(j, checks=(c,))
        for j in rest
        if compiles(j.resolved) and not j.stop_at_failure
        for c in j.checks
    ]
    whole = [j for j in rest if not compiles(j.resolved) or j.stop_at_failure]
    return reference + split + whole


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
    # The checks draw their cases from seeded generators; resetting torch's global generator too
    # keeps anything a target draws unseeded (dropout) independent of which checks ran before
    # in this process: the report is the same whatever the number of workers.
    torch.manual_seed(execution.seed)
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


def isolation_error(
    job: Job, check: str, why: str, *, repro: str | None = None, seconds: float = 0.0, **extra
) -> Result:
    return Result(
        check=check,
        target=job.target,
        family=job.family,
        status=Status.ERROR,
        message=f"isolation: {why}",
        repro=repro,
        seconds=seconds,
        extra=dict(extra),
    )


HANG_REPRO = '''\
"""Reproduce a varguard {kind}: {check} on {target}.

In the run it {what}. No single case is known (the process was stopped mid-search), so this
runs the whole check in this process, with the run's profile ({profile}) and seed ({seed}); it
may hang or crash the same way (stop it with Ctrl-C, or run it under `timeout 600`).
Run from a checkout with varguard installed:  python {filename}
"""

from verify.checks import get_check
from verify.checks.base import run_check
from verify.profiles import get_profile
from verify.resolve import resolve

target = resolve({spec!r})
result = run_check(get_check({check!r}), target, get_profile({profile!r}), seed={seed!r})
print(f"{{result.status}}: {{result.message}}")
raise SystemExit(0 if result.status in ("passed", "skipped") else 1)
'''


def hang_repro(job: Job, check: str, execution: Execution, *, hung: bool, what: str) -> str:
    """A script that runs ``check`` on the job's target: a hang or crash has no case to replay."""
    return HANG_REPRO.format(
        kind="hang" if hung else "crash",
        check=check,
        target=job.target,
        spec=job.spec,
        what=what,
        profile=execution.profile.name,
        seed=execution.seed,
        filename=repro_filename(check, job.target),
    )


# --- the worker side ---------------------------------------------------------------------------


def _worker(conn, execution: Execution, threads: int) -> None:
    """Runs in a child: take jobs one at a time, stream each result back as it finishes."""
    # Ctrl-C reaches the whole process group; the parent stops the workers itself and writes
    # the report of what finished, so a worker must not die mid-message on its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
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
            if _device_lost(target):
                # The check's own result already says what broke; the job's other checks go to
                # a fresh worker instead of failing one after another in this one.
                conn.send(("device lost", None))
                return
        conn.send(("done", None))


def _device_lost(target: Target) -> bool:
    """Whether this process can no longer use the target's GPU: a kernel fault (a misaligned
    or illegal address) is sticky, and every later CUDA call of the process fails with it."""
    if not str(target.device).startswith("cuda"):
        return False
    try:
        torch.cuda.synchronize()
    except Exception:
        return True
    return False


def _death(exitcode: int | None) -> tuple[str, str]:
    """How the worker died, as a sentence and as a word or two (the signal, the exit code)."""
    if exitcode is None:
        return "the target's process stopped answering", "no answer"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"the target killed its process ({name})", name
    return f"the target's process exited with code {exitcode}", f"exit code {exitcode}"


def _implementation(job: Job) -> str:
    """What the hang and crash strikes count against: a drop-in class, whichever of its dtype x
    layout variants ran (a class that hangs in float32 hangs in float16 too, and twelve variants
    must not cost twelve pairs of timeouts); a built-in target by its name."""
    return job.spec.split("[", 1)[0]


# --- the parent side: a pool of workers ------------------------------------------------------


def prestart() -> None:
    """Start the fork server now, so that its imports overlap this process's planning instead
    of following it (a few seconds of every isolated run)."""
    if _context().get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


def _context():
    """Where to start workers from: a fork server that imported the harness once, so that the
    fresh worker after a hang or crash is ready at once instead of after ~10 s of imports
    (torch, SciPy, the SymPy derivations). It has run no check and started no threads, so its
    forks are clean; where there is no fork server (Windows), each worker is spawned."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    # torch.cuda.is_available() (verify.kernels asks at import) initialises the CUDA driver
    # unless it asks NVML instead; a fork of a process whose driver is initialised cannot use
    # the GPU, and every worker is a fork of the fork server.
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([__name__, *(f"verify.checks.{f}" for f in FAMILIES)])
    return ctx


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
        self.ctx = _context()
        self.threads = WORKER_THREADS
        # A fresh worker for each job where starting one is cheap (a fork of the fork server):
        # what a target leaves behind in its process (torch.compile's global state, modules it
        # imported) must not change the next target's cases, whichever worker that lands on.
        self.fresh = self.ctx.get_start_method() == "forkserver"
        # implementation -> what went wrong in the checks that hung or crashed in a row
        self.strikes: dict[str, list[str]] = {}
        # check -> (reference target, seconds it took there): what the limits derive from
        self.reference: dict[str, tuple[str, float]] = {}

    def _spawn(self) -> _Slot:
        parent, child = self.ctx.Pipe(duplex=True)
        proc = self.ctx.Process(
            target=_worker, args=(child, self.execution, self.threads), daemon=True
        )
        proc.start()
        child.close()
        return _Slot(proc=proc, conn=parent)

    def run(self, jobs: Sequence[Job]) -> None:
        queue: deque[Job] = deque(schedule(jobs))
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
                # Deadlines are recomputed each time round: a reference time that arrives while
                # another target's check runs shortens that check's limit.
                deadline = min(self._deadline(s) for s in busy)
                ready = wait([s.conn for s in busy], timeout=max(0.0, deadline - time.monotonic()))
                for slot in busy:
                    if slot.conn in ready:
                        self._receive(slot, slots, queue)
                    elif time.monotonic() >= self._deadline(slot):
                        self._lost(slot, slots, queue, timed_out=True)
        except BaseException:  # interrupted (Ctrl-C, SIGTERM): stop the workers now
            for slot in slots:
                slot.proc.kill()
            raise
        finally:
            for slot in slots:
                self._close(slot)

    def _idle(self, slots: list[_Slot]) -> _Slot | None:
        return next((s for s in slots if s.job is None), None)

    def _limit(self, slot: _Slot) -> tuple[float, str]:
        check = slot.current or (slot.remaining[0] if slot.remaining else "")
        target = slot.job.resolved if slot.job else None
        return check_limit(self.execution, check, self.reference, compiles=compiles(target))

    def _deadline(self, slot: _Slot) -> float:
        budget, _ = self._limit(slot)
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
        struck = self.strikes.get(_implementation(job), [])
        if len(struck) < STRIKES:
            return None
        why = f"not run: the target {' and '.join(struck)}, {len(struck)} checks in a row"
        return lambda name: isolation_error(job, name, why, not_run=True)

    def _retire(self, slot: _Slot, slots: list[_Slot]) -> None:
        self._close(slot)
        slots.remove(slot)

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
            self.strikes.pop(_implementation(job), None)
            # The check's own time: the parent's clock would also count a fresh worker's
            # one-off costs and the other workers' load.
            took = (job.target, payload.seconds)
            if is_reference(job) and payload.status != Status.SKIPPED:
                self.reference[payload.check] = took
            elif payload.status == Status.PASSED and not compiles(job.resolved):
                # A run without the family's reference target (a drop-in next to torch's own
                # class): the first eager target that passed the check stands in for it.
                self.reference.setdefault(payload.check, took)
            self.emit(payload)
            slot.remaining.remove(payload.check)
            slot.current, slot.since = None, time.monotonic()
        elif kind == "device lost":
            if slot.remaining:
                queue.appendleft(replace(job, checks=tuple(slot.remaining)))
            slot.job = None
            self._retire(slot, slots)
        elif kind in ("done", "fatal"):
            if kind == "fatal":
                for name in slot.remaining:
                    self.emit(isolation_error(job, name, f"worker failed: {payload}"))
            slot.job = None
            if self.fresh:
                self._retire(slot, slots)

    def _lost(self, slot: _Slot, slots: list[_Slot], queue: deque[Job], *, timed_out: bool):
        """The worker hung past its deadline or died: blame the running check, replace the
        worker, and put the job's other checks back at the front of the queue."""
        job = slot.job
        limit, basis = self._limit(slot)
        if timed_out:
            slot.proc.kill()
        slot.proc.join(10)
        if slot.current is None and not slot.remaining:  # gone after its last result
            self._retire(slot, slots)
            return
        name = slot.current or slot.remaining[0]
        elapsed = time.monotonic() - slot.since
        if timed_out:
            why = f"timed out after {limit:.0f} s ({basis}): the target hung in {name}"
            strike = f"hung in {name} (killed after {limit:.0f} s)"
            what = f"was still running after {limit:.0f} s and was killed"
        else:
            death, short = _death(slot.proc.exitcode)
            why = f"{death} in {name}"
            strike = f"crashed in {name} ({short})"
            what = f"stopped its worker: {death}"
        self.emit(
            isolation_error(
                job,
                name,
                why + "; no single case is known: the repro script runs the whole check",
                repro=hang_repro(job, name, self.execution, hung=timed_out, what=what),
                seconds=round(elapsed, 1),
                hung=timed_out,
                limit=round(limit, 1),
            )
        )
        self.strikes.setdefault(_implementation(job), []).append(strike)
        rest = [c for c in slot.remaining if c != name]
        self._retire(slot, slots)
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


__all__ = [
    "Execution",
    "Job",
    "Shard",
    "available_cores",
    "check_limit",
    "execution_for",
    "isolation_error",
    "run_checks",
]

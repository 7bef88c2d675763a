"""Exit codes, the usage error and the interruption: the leaf every command imports, and nothing
else.

0 every check passed; 1 a check failed or errored (or the gate blocks, or a mutant survived);
2 a usage error (one line on stderr naming the argument and the fix); 130 interrupted by SIGINT
(Ctrl-C), 143 by SIGTERM (a CI job's time limit): 128 + the signal's number, as a shell reports.
"""

from __future__ import annotations

import contextlib
import signal
import threading

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143


class UsageError(Exception):
    """Bad command-line input: reported as one line and exit code 2, never a traceback."""


class Interrupted(KeyboardInterrupt):
    """A stop signal, raised where the program was (a KeyboardInterrupt, so that code which lets
    Ctrl-C through lets SIGTERM through too)."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def interruption(exc: KeyboardInterrupt) -> Interrupted:
    """Ctrl-C's plain KeyboardInterrupt as the Interrupted of SIGINT."""
    return exc if isinstance(exc, Interrupted) else Interrupted(signal.SIGINT)


@contextlib.contextmanager
def stop_signals():
    """SIGTERM (a CI job's time limit, `kill`) stops the run the way Ctrl-C does: an Interrupted
    exception where the run is, so the workers are stopped and the report is still written."""
    if threading.current_thread() is not threading.main_thread():  # handlers are main-only
        yield
        return

    def stop(signum, frame):
        raise Interrupted(signum)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "Interrupted",
    "UsageError",
    "interruption",
    "stop_signals",
]

"""A one-line progress display on a terminal; silent when stderr is not one (CI, pipes)."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, *, stream=None, enabled: bool | None = None):
        self.total = total
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.done = 0
        self.started = time.monotonic()

    def start(self, target: str, check: str) -> None:
        if self.enabled:
            elapsed = time.monotonic() - self.started
            line = f"[{self.done + 1}/{self.total}] {target} {check}  ({elapsed:.0f} s)"
            self.stream.write("\r\033[K" + line[:150])
            self.stream.flush()

    def advance(self) -> None:
        self.done += 1

    def clear(self) -> None:
        if self.enabled:
            self.stream.write("\r\033[K")
            self.stream.flush()

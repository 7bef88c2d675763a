"""Exit codes and the usage error: the leaf every command imports, and nothing else.

0 every check passed; 1 a check failed or errored (or the gate blocks, or a mutant survived);
2 a usage error (one line on stderr naming the argument and the fix); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """Bad command-line input: reported as one line and exit code 2, never a traceback."""


__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "UsageError"]

"""What the project's Triton kernels need from Triton's interpreter (``TRITON_INTERPRET=1``),
shared by triton_bn.py and triton_norms.py: triton.language's own @jit functions made callable
from interpreted kernels, and the interpreter's per-call overhead taken out.

Neither changes what a kernel computes: the interpreter runs the same Python source on the same
numpy blocks either way.
"""

from __future__ import annotations

import triton.language as tl

from verify.kernels import INTERPRETED


def library(fn):
    """``fn``, one of triton.language's own @jit functions, callable from an interpreted kernel.

    Under the interpreter those must be interpreted too. When something imported triton before
    TRITON_INTERPRET was set (torch.compile does, in a process that verifies several targets)
    they are compile-only JITFunctions: wrap their Python source again.
    """
    if not INTERPRETED:
        return fn
    from triton.runtime.interpreter import InterpretedFunction

    return fn if isinstance(fn, InterpretedFunction) else InterpretedFunction(fn.fn)


def patch_language_once() -> bool:
    """Make a device-function call inside an interpreted launch skip re-patching the language.

    The interpreter swaps triton.language's builtins for numpy ones at each launch (and restores
    them after); it also redoes that swap at every call of a @jit helper (``_tile``, ``_chan``,
    ...), where it finds every builtin already swapped and changes nothing, at the price of an
    ``inspect.getmembers`` over the language modules: a quarter of the batch-norm kernels' time
    under the interpreter. When the language is already swapped (``tl.arange`` is no longer a
    builtin), that call is skipped. Returns whether the interpreter is patched (False: not
    interpreting, or a Triton whose interpreter lacks what this relies on).
    """
    if not INTERPRETED:
        return False
    from triton.runtime import interpreter

    original = getattr(interpreter, "_patch_lang", None)
    scope_type = getattr(interpreter, "_LangPatchScope", None)
    if None in (original, scope_type, getattr(tl.core, "is_builtin", None)):
        return False  # another Triton's interpreter: left as it is
    if getattr(original, "_varguard_once", False):
        return True

    def _patch_lang(fn):
        if not tl.core.is_builtin(tl.arange):  # swapped by the launch around this call
            return scope_type()
        return original(fn)

    _patch_lang._varguard_once = True
    _patch_lang.__wrapped__ = original
    interpreter._patch_lang = _patch_lang
    return True


__all__ = ["library", "patch_language_once"]

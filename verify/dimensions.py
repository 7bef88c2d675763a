"""The vocabulary of the configuration space (DESIGN.md): the dtypes, input layouts and devices a
kernel can branch on. Torch-free, so that the command line can offer them without importing torch.
"""

from __future__ import annotations

DTYPES = ("float32", "float16", "bfloat16", "float64")
#: Every input layout a case can take: dense in two orders, and three kinds of view.
LAYOUTS = ("contiguous", "channels_last", "strided", "expanded", "offset")
#: The layout variants of a drop-in, and the input layouts each one's cases draw.
LAYOUT_VARIANTS: dict[str, tuple[str, ...]] = {
    "contiguous": ("contiguous",),
    "channels_last": ("channels_last",),
    "strided": ("strided", "expanded", "offset"),
}
DEVICES = ("cpu", "cuda")

__all__ = ["DEVICES", "DTYPES", "LAYOUTS", "LAYOUT_VARIANTS"]

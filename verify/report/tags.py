"""HTML helpers shared by the report page and its sections: escaping and inline images."""

from __future__ import annotations

import base64
from html import escape


def esc(value) -> str:
    """Text for HTML (None is empty)."""
    return escape("" if value is None else str(value), quote=True)


def image(png: bytes | None, alt: str) -> str:
    """An <img> with the PNG inline (the page stays one self-contained file)."""
    if png is None:
        return f'<p class="note">{esc(alt)}: nothing to plot.</p>'
    data = base64.b64encode(png).decode("ascii")
    return f'<img class="plot" alt="{esc(alt)}" src="data:image/png;base64,{data}">'

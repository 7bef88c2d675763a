"""The depth experiments as a stage of `varguard run`: declared once, here."""

from __future__ import annotations

from verify.depth import options, section
from verify.stages.base import Stage

STAGE = Stage(
    name="depth",
    help=options.HELP,
    description=options.DESCRIPTION,
    epilog=options.EPILOG,
    add_options=options.add_options,
    validate=options.validate,
    command="verify.depth.command:cmd_depth",
    output=section.OUTPUT,
    # A few seconds (width 256, batch 1024, depth 20), in every profile: the report's depth plot.
    profiles={"quick": (), "standard": (), "gpu": (), "release": ()},
    collect=section.collect,
    results=section.results,
    markdown=section.markdown,
    html=section.html,
    example="--depth 30",
)

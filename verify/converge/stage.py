"""The convergence job as a stage of `varguard run`: declared once, here."""

from __future__ import annotations

from verify.converge import options, section
from verify.stages.base import Stage

STAGE = Stage(
    name="converge",
    help=options.HELP,
    description=options.DESCRIPTION,
    epilog=options.EPILOG,
    add_options=options.add_options,
    validate=options.validate,
    command="verify.converge.command:cmd_converge",
    output=section.OUTPUT,
    # standard: 8 epochs over 2 seeds (the fewest a t-test takes) with both controls, ~3 min on
    # 2 CPU cores; release: DESIGN's 3 seeds.
    # gpu: 2 seeds of torch's native CUDA kernel and of our Triton kernel against cuDNN (the
    # reference arm on a GPU), channels_last + autocast.
    profiles={
        "quick": None,
        "standard": ("--seeds", "2"),
        "gpu": ("--seeds", "2", "--target", "cuda-native", "--target", "triton-bn"),
        "release": (),
    },
    collect=section.collect,
    results=section.results,
    markdown=section.markdown,
    html=section.html,
    families=("batchnorm",),
    reserved=("--bench-only",),
    example="--seeds 3",
)

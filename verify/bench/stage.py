"""The kernel benchmarks as a stage of `varguard run`: declared once, here."""

from __future__ import annotations

from verify.bench import options, section
from verify.stages.base import Stage

STAGE = Stage(
    name="bench",
    help=options.HELP,
    description=options.DESCRIPTION,
    epilog=options.EPILOG,
    add_options=options.add_options,
    validate=options.check_args,
    command="verify.bench.command:cmd_bench",
    output=section.OUTPUT,
    # standard: two layer sizes at batch 2, one thread (a shared machine's other load would
    # stall OpenMP barriers), ~1.5 min; release: every ResNet-50 layer size.
    # gpu: every ResNet-50 layer size at batch 32, against cuDNN, shorter pytest-benchmark
    # rounds (the CUDA-event timings are what the report reads there).
    profiles={
        "quick": None,
        "standard": ("--quick", "--threads", "1"),
        "gpu": ("--reference", "cuda-cudnn", "--max-time", "0.2"),
        "release": (),
    },
    collect=section.collect,
    results=section.results,
    markdown=section.markdown,
    html=section.html,
    families=("batchnorm",),
    after_report=True,  # times only what passed in this report
    reserved=("--verified", "--compare"),
    example="--quick",
)

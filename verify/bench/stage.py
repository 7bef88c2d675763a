"""The kernel benchmarks as a stage of `varguard run`: declared once, here."""

from __future__ import annotations

from verify.bench import options, section
from verify.bench.families import benches
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
    # Every family with a benchmark (verify/bench/families), unless the run names families.
    # standard: two sizes per family at a small first dimension (batch 2, 128-256 tokens), one
    # thread (a shared machine's other load would stall OpenMP barriers), 0.2 s of rounds per
    # case: ~250 cases (with their copies) of the five families' CPU targets, ~1.5-2 min
    # (measured: ~1.1 s per case at the default 1 s, ~40 CPU norm targets x 2 ops x 2 sizes).
    # release: every size of every family. gpu: two sizes per family at the GPU's first
    # dimension (ResNet-50's layer1 and layer4 batch norms: the first GPU run measured ~0.1 s a
    # case at 0.05 s of rounds, and each torch.compile target compiles per size), batch norm
    # against cuDNN, the other families against torch's CUDA kernels, short rounds (the
    # CUDA-event timings are what the report reads there).
    profiles={
        "quick": None,
        "standard": ("--quick", "--threads", "1", "--max-time", "0.2"),
        # Each family against torch's CUDA kernel (verified in the same run: the gpu
        # profile's extra targets), the Triton kernels against those and copy bandwidth.
        "gpu": (
            "--quick",
            "--reference",
            "cuda-cudnn",
            "--reference",
            "cuda-layernorm",
            "--reference",
            "cuda-rmsnorm",
            "--reference",
            "cuda-groupnorm",
            "--reference",
            "cuda-add-rmsnorm-float32",
            "--max-time",
            "0.1",
        ),  # fmt: skip
        "release": (),
    },
    collect=section.collect,
    results=section.results,
    markdown=section.markdown,
    html=section.html,
    families=tuple(benches()),
    family_option=True,  # `run --family F` times F's targets only
    after_report=True,  # times only what passed in this report
    reserved=("--verified", "--compare"),
    example="--quick",
)

"""The stage registry: the commands `varguard run` can add after the checks, in the order they
run. A stage is declared in its own package (see verify/stages/base.py); registering it is the
one line here."""

from __future__ import annotations

from verify.bench.stage import STAGE as BENCH
from verify.converge.stage import STAGE as CONVERGE
from verify.depth.stage import STAGE as DEPTH
from verify.stages.base import Stage

STAGES: tuple[Stage, ...] = (DEPTH, CONVERGE, BENCH)


def get_stage(name: str) -> Stage:
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise KeyError(f"no stage named {name!r}; known: {', '.join(s.name for s in STAGES)}")


__all__ = ["STAGES", "Stage", "get_stage"]

"""``varguard depth``: run the experiments and write depth.json (everything the report draws)."""

from __future__ import annotations

import argparse
import json

from verify.atomic import write_text
from verify.depth import experiments
from verify.depth.options import validate
from verify.depth.section import OUTPUT
from verify.exits import EXIT_OK


def cmd_depth(args: argparse.Namespace) -> int:
    validate(args)
    curves = experiments.curves(args.depth, seed=args.seed)
    data = to_json(curves, depth=args.depth, seed=args.seed)
    write_text(args.out / OUTPUT, json.dumps(data, indent=1))
    print(f"wrote {args.out / OUTPUT} ({len(curves)} curves, depth {args.depth})")
    return EXIT_OK


def to_json(curves: dict, *, depth: int, seed: int) -> dict:
    """depth.json: the curves with what each one shows, and the experiment's sizes."""
    return {
        "width": experiments.WIDTH,
        "batch": experiments.BATCH,
        "depth": depth,
        "seed": seed,
        "curves": {
            name: {
                "title": experiments.DESCRIPTIONS[name][0],
                "theory": experiments.DESCRIPTIONS[name][1],
                "x": xs,
                "measured": measured,
                "predicted": predicted,
            }
            for name, (xs, measured, predicted) in curves.items()
        },
    }

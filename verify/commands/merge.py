"""`varguard merge DIR... --out OUT`: combine the report folders of one run (its shards, or one
folder per machine of a CI matrix) into one report folder.

OUT gets one results.jsonl (the first folder's run metadata, its plan deciding the order, and
where each part came from), each stage's folder (from the folder whose stage finished), and the
report written from them, reproduction scripts included. Folders of different varguard versions
or git revisions, profiles or seeds are refused: their results would not be one run's. Reads
folders only (torch-free).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from verify.exits import EXIT_FAILED, EXIT_OK, UsageError
from verify.report import junit, results, writer
from verify.result import Status
from verify.stages.base import STAGE_FILE
from verify.stages.registry import STAGES

#: Run metadata that must agree between the folders, and how to name it in the refusal.
MUST_AGREE = {"varguard": "varguard version", "profile": "profile", "seed": "seed"}


def _revision(meta: dict) -> str | None:
    rev = meta.get("git_revision")
    return rev.removesuffix("-dirty") if rev else None  # uncommitted edits: same revision


def _read(folder: Path) -> tuple[dict, list[dict]]:
    if not (folder / results.FILENAME).is_file():
        raise UsageError(
            f"{folder}: no {results.FILENAME} here; give folders that `varguard run` wrote"
        )
    meta, records = results.read(folder / results.FILENAME)
    if not meta:
        raise UsageError(f"{folder}/{results.FILENAME}: no run metadata on its first line")
    return meta, records


def _check_same_run(folders: list[Path], metas: list[dict]) -> None:
    first, ref = folders[0], metas[0]
    for folder, meta in zip(folders[1:], metas[1:], strict=True):
        for key, what in MUST_AGREE.items():
            if meta.get(key) != ref.get(key):
                raise UsageError(
                    f"{folder} was run with {what} {meta.get(key)!r}, {first} with "
                    f"{ref.get(key)!r}; merge only folders of one run (same varguard version, "
                    "git revision, profile and seed)"
                )
        if _revision(meta) and _revision(ref) and _revision(meta) != _revision(ref):
            raise UsageError(
                f"{folder} was run at git revision {_revision(meta)}, {first} at "
                f"{_revision(ref)}; merge only folders of one run (same varguard version, git "
                "revision, profile and seed)"
            )
    shards = [(f, m["shard"]) for f, m in zip(folders, metas, strict=True) if m.get("shard")]
    counts = {s["count"] for _, s in shards}
    if len(counts) > 1:
        splits = ", ".join(f"{f}: {s['index']}/{s['count']}" for f, s in shards)
        raise UsageError(
            f"the folders are shards of different splits ({splits}); merge the shards of one "
            "--shard K/N split"
        )
    seen: dict[int, Path] = {}
    for folder, s in shards:
        if s["index"] in seen:
            raise UsageError(
                f"shard {s['index']}/{s['count']} is given twice ({seen[s['index']]} and "
                f"{folder}); give each shard's folder once"
            )
        seen[s["index"]] = folder


def _rank(record: dict) -> int:
    """Which of several results for one (target, check) the merged report keeps: one that ran
    over a skip (another machine could not run it), and a failure over a pass (never hide one)."""
    status = Status(record["status"])
    return {Status.FAILED: 0, Status.ERROR: 1, Status.PASSED: 2, Status.SKIPPED: 3}[status]


def merge_records(parts: list[list[dict]]) -> list[dict]:
    """One record per (target, check), in the order first seen."""
    chosen: dict[tuple[str, str], dict] = {}
    for records in parts:
        for r in records:
            key = (r["target"], r["check"])
            if key not in chosen or _rank(r) < _rank(chosen[key]):
                chosen[key] = r
    return list(chosen.values())


def _stage_source(folders: list[Path], name: str, output: str) -> Path | None:
    """The folder whose ``name`` stage finished (wrote its output), else one that has a record
    of it (a skip or a crash), else None."""
    finished = [f / name for f in folders if (f / name / output).exists()]
    recorded = [f / name for f in folders if (f / name / STAGE_FILE).exists()]
    if len(finished) > 1:
        print(f"merge: {name}/ finished in {len(finished)} folders; keeping {finished[0]}")
    return (finished or recorded or [None])[0]


def _wall(folders: list[Path]) -> float | None:
    """The longest of the parts' wall times: shards run side by side."""
    walls = []
    for f in folders:
        try:
            walls.append(json.loads((f / "report.json").read_text())["run"]["wall_seconds"])
        except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError):
            continue
    walls = [w for w in walls if isinstance(w, (int, float))]
    return max(walls) if walls else None


def cmd_merge(args: argparse.Namespace) -> int:
    folders = [Path(f) for f in args.folders]
    out = Path(args.out)
    for f in folders:
        if f.resolve() == out.resolve():
            raise UsageError(f"--out {out} is one of the folders to merge; give a new folder")
    read = [_read(f) for f in folders]
    metas = [m for m, _ in read]
    _check_same_run(folders, metas)

    meta = dict(metas[0])
    plan = next((m["plan"] for m in metas if m.get("plan")), None)
    meta.update(
        plan=plan,
        shard=None,
        merged=[
            {
                "folder": str(f),
                "shard": m.get("shard"),
                "device": (m.get("device") or {}).get("name"),
                "started": m.get("started"),
            }
            for f, m in zip(folders, metas, strict=True)
        ],
    )
    records = merge_records([r for _, r in read])
    missing = len({tuple(p) for p in plan or ()} - {(r["target"], r["check"]) for r in records})
    count = next((m["shard"]["count"] for m in metas if m.get("shard")), None)
    if count and len(folders) < count:
        print(f"merge: {len(folders)} of {count} shards given", file=sys.stderr)
    if missing:
        print(f"merge: {missing} planned checks are in none of the folders", file=sys.stderr)

    results.write_all(out / results.FILENAME, meta, records)
    results.clear_interrupted(out)
    stopped = [(f, s) for f in folders if (s := results.read_interrupted(f))]
    if stopped:  # the merged report is no more complete than its parts
        folder, stop = stopped[0]
        results.mark_interrupted(out, {**stop, "resume": f"{stop.get('resume')}  (in {folder})"})
        print(f"merge: {folder} was interrupted; resume it, then merge again", file=sys.stderr)
    for stage in STAGES:
        if (out / stage.name).is_dir():
            shutil.rmtree(out / stage.name)
        source = _stage_source(folders, stage.name, stage.output)
        if source is not None:
            shutil.copytree(source, out / stage.name)

    report = writer.write(out, wall_seconds=_wall(folders))
    if args.junit_xml is not None:
        junit.write(args.junit_xml, report, folder=out)
    s = report["summary"]
    print(
        f"merged {len(folders)} folders: {s['passed']} passed, {s['failed']} failed, "
        f"{s['error']} errors, {s['skipped']} skipped; report: {out / 'report.html'}"
    )
    return EXIT_FAILED if s["failed"] or s["error"] else EXIT_OK


__all__ = ["cmd_merge", "merge_records"]

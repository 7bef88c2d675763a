"""The sentences report.md and report.html show about how a run ran: interrupted, one shard of a
run, or merged from several folders (report.json's run.interrupted, run.shard, run.merged)."""

from __future__ import annotations

from typing import NamedTuple


class Note(NamedTuple):
    kind: str  # "interrupted", "shard" or "merged" (the page styles an interruption as a warning)
    text: str
    command: str | None  # shown as code after the text


def run_notes(run: dict) -> list[Note]:
    notes = []
    stop = run.get("interrupted")
    if stop:
        notes.append(
            Note(
                kind="interrupted",
                text=f"INTERRUPTED by {stop.get('signal')} after {stop.get('finished')} of "
                f"{stop.get('planned')} checks: this report holds only what finished. Continue "
                "the run with:",
                command=stop.get("resume"),
            )
        )
    shard = run.get("shard")
    if shard:
        notes.append(
            Note(
                kind="shard",
                text=f"Shard {shard['index']}/{shard['count']}: this folder holds one of "
                f"{shard['count']} shares of the run's checks; combine the shards' folders with:",
                command="varguard merge DIR... --out OUT",
            )
        )
    merged = run.get("merged")
    if merged:
        parts = [
            m["folder"] + (f" (shard {s['index']}/{s['count']})" if (s := m.get("shard")) else "")
            for m in merged
        ]
        notes.append(
            Note(
                kind="merged",
                text=f"Merged from {len(merged)} folders: {', '.join(parts)}.",
                command=None,
            )
        )
    return notes


__all__ = ["Note", "run_notes"]

"""From pytest-benchmark's JSON to bandwidth ratios, bench.md, and a comparison with an old run.

:func:`annotate` adds to each benchmark's ``extra_info``: ``time_s`` (the median, or the CUDA-event
median on a GPU), ``gbps`` (minimum bytes / time), ``copy_gbps`` (the copy of as many bytes in the
same run), ``bandwidth_ratio`` (gbps / copy_gbps) and, for operations, ``reference_time_s`` and
``speedup_vs_reference`` (the time of the family's reference target / this time, same
operation and shape).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from verify.bench.families import benches

JSON_NAME, MD_NAME = "bench.json", "bench.md"
#: The family of a benchmark recorded without one (runs from before the other families).
OLD_FAMILY = "batchnorm"


def family_of(info: dict) -> str:
    return info.get("family", OLD_FAMILY)


def time_of(bench: dict) -> tuple[float, str]:
    """(seconds, what was measured) of one benchmark: CUDA events where recorded."""
    events = bench.get("extra_info", {}).get("cuda_event_s")
    if events:
        return float(events["median"]), "median of CUDA-event timings"
    return float(bench["stats"]["median"]), "median of wall-clock rounds"


def annotate(data: dict, *, references: dict[str, str]) -> dict:
    """Bandwidth, ratio to the copy and to its family's reference target (``references``:
    {family: target name}), per benchmark (in place)."""
    benches = data.get("benchmarks", [])
    for b in benches:
        # pytest-benchmark's JSON keeps every round's time: megabytes for a fast copy timed
        # 10^4 times. The summary statistics are what the report and --compare read.
        b.get("stats", {}).pop("data", None)
    by_id = {b["extra_info"]["id"]: b for b in benches if "id" in b.get("extra_info", {})}
    for b in benches:
        info = b.setdefault("extra_info", {})
        if "bytes" not in info:
            continue
        t, how = time_of(b)
        info["time_s"], info["time_stat"] = t, how
        info["gbps"] = info["bytes"] / t / 1e9
    for b in benches:
        info = b["extra_info"]
        if info.get("kind") != "op":
            continue
        copy = by_id.get(info["copy_id"])
        if copy is not None:
            info["copy_gbps"] = copy["extra_info"]["gbps"]
            info["bandwidth_ratio"] = info["gbps"] / info["copy_gbps"]
        reference = references.get(family_of(info))
        ref = by_id.get(f"{info['op']}:{reference}:{'x'.join(map(str, info['shape']))}")
        if ref is not None:
            info["reference"] = reference
            info["reference_time_s"] = ref["extra_info"]["time_s"]
            info["speedup_vs_reference"] = ref["extra_info"]["time_s"] / info["time_s"]
    return data


def load(path: Path) -> dict:
    """A bench.json (or the folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / JSON_NAME
    if not path.exists():
        raise FileNotFoundError(f"no bench results at {path}; pass a bench.json or its folder")
    data = json.loads(path.read_text())
    if "benchmarks" not in data:
        raise ValueError(f"{path} is not pytest-benchmark JSON (no 'benchmarks' list)")
    return data


# --- comparison --------------------------------------------------------------------------------


def machine_difference(old: dict, device: dict) -> str | None:
    """How the machine that timed ``old`` differs from ``device`` (this run's), or None.

    Timings from two machines, or two thread counts, compare hardware, not code: --compare
    refuses them unless asked. A bench.json without varguard's metadata cannot be placed."""
    then = old.get("varguard", {}).get("meta", {}).get("device")
    if not then:
        return "the old run has no device record (not written by varguard bench)"
    keys = sorted(set(then) | set(device))
    diff = [
        f"{k} {then.get(k)!r} then, {device.get(k)!r} now"
        for k in keys
        if then.get(k) != device.get(k)
    ]
    return "; ".join(diff) or None


@dataclass(frozen=True)
class Change:
    id: str
    old_s: float
    new_s: float
    regression: bool

    @property
    def ratio(self) -> float:
        return self.new_s / self.old_s

    def line(self) -> str:
        verdict = "REGRESSION" if self.regression else "ok"
        return (
            f"{verdict:10s} {self.id}: {self.old_s * 1e3:.4g} ms -> {self.new_s * 1e3:.4g} ms "
            f"({self.ratio:.2f}x)"
        )


def compare(old: dict, new: dict, *, threshold: float) -> list[Change]:
    """Each operation timed in both runs; a regression is new > old (1 + threshold). Copies are
    the yardstick, not a product: they are never flagged."""
    old_times = {b["extra_info"]["id"]: time_of(b)[0] for b in _ops(old)}
    changes = []
    for b in _ops(new):
        bid = b["extra_info"]["id"]
        if bid in old_times:
            t = time_of(b)[0]
            changes.append(Change(bid, old_times[bid], t, t > old_times[bid] * (1 + threshold)))
    return changes


def _ops(data: dict) -> list[dict]:
    return [b for b in data.get("benchmarks", []) if b.get("extra_info", {}).get("kind") == "op"]


# --- bench.md ------------------------------------------------------------------------------------


def _fmt(v, spec: str, missing: str = "-") -> str:
    return missing if v is None else format(v, spec)


def markdown(
    data: dict,
    *,
    meta: dict,
    skipped: list[tuple[str, str, str]],
    notes: list[str],
    changes: list[Change] | None = None,
    threshold: float | None = None,
) -> str:
    """The report: one table per family and operation, rows by size in the network's order
    and target, the family's reference first."""
    dev = meta.get("device", {})
    lines = [
        "# varguard bench",
        "",
        f"- device: {dev.get('kind', '?')} {dev.get('name', '')}"
        + (f", {dev.get('cores')} cores" if dev.get("cores") else "")
        + (f", torch threads {dev.get('torch_threads')}" if dev.get("torch_threads") else ""),
        f"- versions: torch {meta.get('versions', {}).get('torch')}, triton "
        f"{meta.get('versions', {}).get('triton')}, pytest-benchmark {data.get('version')}",
        f"- git revision: {meta.get('git_revision')}; started {meta.get('started')}",
        f"- command: `{' '.join(meta.get('argv', []))}`",
        "- minimum bytes: each input read once, each output written once (activations in the "
        "target's dtype, parameters and saved statistics float32; each family's derivation is "
        "in verify/bench/families/); GB/s = minimum bytes / time; ratio = "
        "that over a `y.copy_(x)` of as many bytes (half read, half written) timed in the same "
        "run; vs reference = the family's reference time / this time (>1: faster than the "
        "reference)",
    ]
    lines += [f"- {n}" for n in notes]
    ops = _ops(data)
    copies = [b for b in data.get("benchmarks", []) if b["extra_info"].get("kind") == "copy"]
    if ops:
        lines += ["", f"Time: {time_of(ops[0])[1]}.", ""]
    for family, bench in benches().items():
        mine = [b for b in ops if family_of(b["extra_info"]) == family]
        reference = data.get("varguard", {}).get("references", {}).get(family) or next(
            (b["extra_info"]["reference"] for b in mine if "reference" in b["extra_info"]), None
        )
        for op in bench.ops:
            rows = [b for b in mine if b["extra_info"]["op"] == op.name]
            if not rows:
                continue
            rows.sort(
                key=lambda b: (
                    bench.order(b["extra_info"]["shape"]),
                    b["extra_info"]["target"] != reference,
                    b["extra_info"]["target"],
                )
            )
            lines += [
                f"## {family} {op.name}: {op.what}",
                "",
                f"Reference: {reference or '-'}.",
                "",
                f"| shape ({bench.axes}) | {bench.size_column} | target | dtype | time (ms) "
                "| min bytes (MB) | GB/s | copy GB/s | ratio to copy | vs reference |",
                "|---|---|---|---|---:|---:|---:|---:|---:|---:|",
            ]
            for b in rows:
                i = b["extra_info"]
                lines.append(
                    f"| {'x'.join(map(str, i['shape']))} | {bench.label(i['shape'])} "
                    f"| {i['target']} | {i['dtype']} | {i['time_s'] * 1e3:.4g} "
                    f"| {i['bytes'] / 1e6:.4g} | {i['gbps']:.3g} "
                    f"| {_fmt(i.get('copy_gbps'), '.3g')} "
                    f"| {_fmt(i.get('bandwidth_ratio'), '.3g')} "
                    f"| {_fmt(i.get('speedup_vs_reference'), '.3g')} |"
                )
            lines.append("")
    if copies:
        lines += [
            "## copy (the bandwidth yardstick)",
            "",
            "| bytes moved (MB) | time (ms) | GB/s |",
            "|---:|---:|---:|",
        ]
        for b in sorted(copies, key=lambda b: b["extra_info"]["bytes"]):
            i = b["extra_info"]
            lines.append(f"| {i['bytes'] / 1e6:.4g} | {i['time_s'] * 1e3:.4g} | {i['gbps']:.3g} |")
        lines.append("")
    if skipped:
        lines += ["## Not benchmarked", "", "| target | operation | why |", "|---|---|---|"]
        lines += [f"| {t} | {op} | {why} |" for t, op, why in skipped]
        lines.append("")
    if changes is not None:
        bad = [c for c in changes if c.regression]
        lines += [
            f"## Comparison with the old run (threshold {threshold:.0%})",
            "",
            f"{len(bad)} regression(s) among {len(changes)} operations timed in both runs.",
            "",
            "| case | old (ms) | new (ms) | new/old | verdict |",
            "|---|---:|---:|---:|---|",
        ]
        lines += [
            f"| {c.id} | {c.old_s * 1e3:.4g} | {c.new_s * 1e3:.4g} | {c.ratio:.2f} "
            f"| {'REGRESSION' if c.regression else 'ok'} |"
            for c in changes
        ]
        lines.append("")
    return "\n".join(lines)


__all__ = [
    "Change",
    "annotate",
    "compare",
    "family_of",
    "load",
    "machine_difference",
    "markdown",
    "time_of",
]

"""From pytest-benchmark's JSON to bandwidth ratios, bench.md, and a comparison with an old run.

:func:`annotate` adds to each benchmark's ``extra_info``: ``time_s`` (the median, or the CUDA-event
median on a GPU), ``gbps`` (minimum bytes / time), ``copy_gbps`` (the copy of as many bytes in the
same run), ``bandwidth_ratio`` (gbps / copy_gbps) and, for operations, ``reference_time_s`` and
``speedup_vs_reference`` (reference time / this time, same operation and shape).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from verify.bench.layers import OPS, layer_name

JSON_NAME, MD_NAME = "bench.json", "bench.md"


def time_of(bench: dict) -> tuple[float, str]:
    """(seconds, what was measured) of one benchmark: CUDA events where recorded."""
    events = bench.get("extra_info", {}).get("cuda_event_s")
    if events:
        return float(events["median"]), "median of CUDA-event timings"
    return float(bench["stats"]["median"]), "median of wall-clock rounds"


def annotate(data: dict, *, reference: str) -> dict:
    """Bandwidth, ratio to the copy and to the reference target, per benchmark (in place)."""
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
    """The report: one table per operation, rows by shape and target, reference first."""
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
        "target's dtype, per-channel vectors float32); GB/s = minimum bytes / time; ratio = "
        "that over a `y.copy_(x)` of as many bytes (half read, half written) timed in the same "
        "run; vs reference = reference time / this time (>1: faster than the reference)",
    ]
    lines += [f"- {n}" for n in notes]
    ops = _ops(data)
    copies = [b for b in data.get("benchmarks", []) if b["extra_info"].get("kind") == "copy"]
    if ops:
        lines += ["", f"Time: {time_of(ops[0])[1]}.", ""]
    reference = next((b["extra_info"].get("reference") for b in ops), None)
    for op, what in OPS.items():
        rows = [b for b in ops if b["extra_info"]["op"] == op]
        if not rows:
            continue
        rows.sort(
            key=lambda b: (
                _network_order(b["extra_info"]["shape"]),
                b["extra_info"]["target"] != reference,
                b["extra_info"]["target"],
            )
        )
        lines += [
            f"## {op}: {what}",
            "",
            "| shape (N, C, H, W) | layer | target | dtype | time (ms) | min bytes (MB) | GB/s "
            "| copy GB/s | ratio to copy | vs reference |",
            "|---|---|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for b in rows:
            i = b["extra_info"]
            lines.append(
                f"| {'x'.join(map(str, i['shape']))} | {layer_name(i['shape'])} | {i['target']} "
                f"| {i['dtype']} | {i['time_s'] * 1e3:.4g} | {i['bytes'] / 1e6:.4g} "
                f"| {i['gbps']:.3g} | {_fmt(i.get('copy_gbps'), '.3g')} "
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


def _network_order(shape) -> tuple:
    """Layers in network order: larger spatial size first, then fewer channels."""
    return (-int(shape[2]) * int(shape[3]), int(shape[1]), int(shape[0]))


__all__ = ["Change", "annotate", "compare", "load", "machine_difference", "markdown", "time_of"]

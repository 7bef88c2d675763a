"""PNG plots for the HTML report (matplotlib, Agg backend): ratio distributions and the worst
cases, and :func:`png`, which the stages' sections use for theirs. Each plot function returns PNG
bytes, or None when there is nothing to plot."""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DPI = 100
#: log10(error/allowed) drawn for ratios of 0 (exact agreement) and for inf / NaN: off the scale.
FLOOR, CEIL = -6.0, 3.0
STATUS_COLOURS = {
    "passed": "#2e7d32",
    "failed": "#c62828",
    "error": "#ef6c00",
    "skipped": "#9e9e9e",
}


def ratio_value(r: dict) -> float | None:
    """The result's worst error/allowed as a float (the JSON string "inf" becomes math.inf)."""
    w = r.get("worst_ratio")
    if w is None:
        return None
    try:
        v = float(w)
    except (TypeError, ValueError):
        return None
    return math.inf if math.isnan(v) else v


def _log_ratio(v: float) -> float:
    if not math.isfinite(v):
        return CEIL
    return FLOOR if v <= 0 else min(max(math.log10(v), FLOOR), CEIL)


def png(fig) -> bytes:
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    finally:
        plt.close(fig)
    return buf.getvalue()


def _ratios(results: list[dict]) -> list[tuple[dict, float]]:
    return [(r, v) for r in results if (v := ratio_value(r)) is not None]


def ratio_distribution(results: list[dict]) -> bytes | None:
    """Strip plot: log10(worst error/allowed) of every target, one column per check, coloured by
    status, with the pass line at ratio 1 (log 0)."""
    rated = _ratios(results)
    if not rated:
        return None
    checks = sorted({r["check"] for r, _ in rated})
    col = {c: i for i, c in enumerate(checks)}
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(checks) + 2.5), 4.5))
    # A box per check behind the points, where there are enough targets to summarise.
    # Only finite, positive ratios: the floor and ceiling are markers, not values.
    boxes = [
        [_log_ratio(v) for r, v in rated if r["check"] == c and 0 < v < math.inf] for c in checks
    ]
    wide = [i for i, b in enumerate(boxes) if len(b) >= 3]
    if wide:
        ax.boxplot(
            [boxes[i] for i in wide],
            positions=wide,
            widths=0.6,
            showfliers=False,
            whis=(0, 100),
            medianprops={"color": "#424242"},
            boxprops={"color": "#bdbdbd"},
            whiskerprops={"color": "#bdbdbd"},
            capprops={"color": "#bdbdbd"},
        )
    for i, (r, v) in enumerate(rated):
        jitter = ((i * 0.618034) % 1.0 - 0.5) * 0.5  # deterministic spread within the column
        ax.scatter(
            col[r["check"]] + jitter,
            _log_ratio(v),
            s=22,
            color=STATUS_COLOURS.get(r["status"], "black"),
            marker="^" if not math.isfinite(v) else "o",
            alpha=0.8,
            edgecolors="none",
        )
    ax.axhline(0.0, color="#c62828", linestyle="--", linewidth=1)
    ax.text(
        len(checks) - 0.5,
        0.05,
        "pass line: error = allowed",
        color="#c62828",
        ha="right",
        va="bottom",
        fontsize=8,
    )
    ax.set_xticks(range(len(checks)))
    ax.set_xticklabels(checks, rotation=60, ha="right", fontsize=8)
    ax.set_xlim(-0.7, len(checks) - 0.3)
    ax.set_ylim(FLOOR - 0.3, CEIL + 0.3)
    ax.set_ylabel("log10(worst error / allowed)")
    ax.set_title(
        f"Worst error/allowed per check across targets (0 at {FLOOR:g}, inf at {CEIL:g})",
        fontsize=10,
    )
    present = {r["status"] for r, _ in rated}
    for status, colour in STATUS_COLOURS.items():
        if status in present:
            ax.scatter([], [], color=colour, s=22, label=status)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    return png(fig)


def worst_cases(results: list[dict], top: int = 15) -> bytes | None:
    """Horizontal bars: the ``top`` largest worst error/allowed ratios, (target, check) labelled."""
    rated = sorted(_ratios(results), key=lambda rv: rv[1], reverse=True)[:top]
    if not rated:
        return None
    fig, ax = plt.subplots(figsize=(8.0, 0.32 * len(rated) + 1.4))
    labels = [f"{r['check']} on {r['target']}" for r, _ in rated]
    # Bars start at the floor so that tiny ratios still show as short bars on a log scale.
    heights = [_log_ratio(v) - FLOOR for _, v in rated]
    ys = list(range(len(rated)))[::-1]
    ax.barh(
        ys, heights, left=FLOOR, color=[STATUS_COLOURS.get(r["status"], "black") for r, _ in rated]
    )
    for y, (_, v) in zip(ys, rated, strict=True):
        text = "inf" if not math.isfinite(v) else f"{v:.3g}"
        ax.text(_log_ratio(v) + 0.05, y, text, va="center", fontsize=7)
    ax.axvline(0.0, color="#c62828", linestyle="--", linewidth=1)
    ax.set_yticks(ys)
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_xlim(FLOOR, CEIL + 0.8)
    ax.set_xlabel("log10(worst error / allowed); dashed: the pass line")
    ax.set_title(f"Top {len(rated)} worst cases", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return png(fig)

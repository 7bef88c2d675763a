"""The report's figures (matplotlib, Agg), drawn from converge.json alone.

Loss, held-out loss and accuracy curves of every arm (each seed thin, the mean thick) and the
residual stream at init against the theory. ``python -m verify.converge.plots DIR`` redraws them
from ``DIR/converge.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from verify.converge.results import find_check

CURVES = (
    ("loss", "training loss (mean per epoch)", "loss.png"),
    ("test_loss", "held-out loss", "test_loss.png"),
    ("acc", "held-out accuracy", "accuracy.png"),
)


def write_plots(report: dict, out_dir: Path) -> list[Path]:
    """Draw the figures of ``report`` (the JSON form of a ConvergeSummary) into ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    out_dir.mkdir(parents=True, exist_ok=True)
    runs_by_arm: dict[str, list[dict]] = {}
    for run in report["runs"]:
        runs_by_arm.setdefault(run["arm"], []).append(run)
    shared = set()
    for arm in report["arms"]:  # a target that shares the reference's runs: dashed, on top
        if arm["name"] not in runs_by_arm and arm["role"] == "target" and arm["final_acc"]:
            runs_by_arm[arm["name"]] = runs_by_arm.get("reference", [])
            shared.add(arm["name"])
    cfg = report["config"]
    paths = []
    for key, ylabel, name in CURVES:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for i, (arm, runs) in enumerate(runs_by_arm.items()):
            color = f"C{i}"
            curves = [r[key] for r in runs if r[key]]
            for c in curves:
                ax.plot(range(1, len(c) + 1), c, color=color, alpha=0.3, lw=1)
            longest = max(map(len, curves), default=0)
            full = [c for c in curves if len(c) == longest and longest == cfg["epochs"]]
            legend = f"{arm} (= reference runs)" if arm in shared else arm
            if full:
                mean = np.mean(np.asarray(full, dtype=float), axis=0)
                style = "--" if arm in shared else "-"
                ax.plot(range(1, len(mean) + 1), mean, style, color=color, lw=2, marker="o",
                        label=legend)  # fmt: skip
            else:
                ax.plot([], [], color=color, lw=2, label=f"{legend} (stopped early)")
        if key == "acc":
            threshold = cfg["threshold"]
            ax.axhline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:.0%}")
            ax.set_ylim(0, 1)
        else:
            ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{cfg['model']} on {cfg['data']}: {ylabel}")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out_dir / name
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    stream = _stream_plot(report, out_dir, plt)
    if stream:
        paths.append(stream)
    return paths


def _stream_plot(report: dict, out_dir: Path, plt) -> Path | None:
    run = next((r for r in report["runs"] if r["role"] == "reference"), None)
    check = find_check(run, "init.stream")
    blocks = check["extra"]["values"].get("blocks") if check else None
    if not blocks or "gamma1_var_sum" not in blocks[0]:
        return None
    idx = [b["block"] for b in blocks]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(idx, [b["var_out"] for b in blocks], "o-", label="zero-init: Var(block output)")
    ax.plot(idx, [b["predicted"] for b in blocks], "k:", label="theory, branch gain 0")
    ax.plot(idx, [b["gamma1_var_sum"] for b in blocks], "s-", label="gamma=1: Var(x + F)")
    ax.errorbar(
        idx,
        [b["gamma1_predicted"] for b in blocks],
        yerr=[b["gamma1_tolerance"] for b in blocks],
        fmt="k_",
        capsize=3,
        label="theory: Var(x) + Var_BN(F), with tolerance",
    )
    ax.set_xticks(idx)
    ax.set_xlabel("residual block")
    ax.set_ylabel("activation variance (mean over channels)")
    model = report["config"]["model"]
    ax.set_title(f"{model} at init: residual stream, reference seed {run['seed']}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out_dir / "stream.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m verify.converge.plots DIR  (DIR holds converge.json)")
        return 2
    out = Path(argv[0])
    for path in write_plots(json.loads((out / "converge.json").read_text()), out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

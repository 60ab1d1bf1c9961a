"""Plot a simulation report: disk usage and prefill tokens saved over time.

Shell (writes a PNG). Imported only when a plot is asked for, so the daemon
and the rest of the CLI never load matplotlib (`kvgroomd[plot]`; the CLI
checks for it before simulating).

What a reader should get at a glance: the engine's budget and kvgroomd's
(lower, by the headroom that keeps the engine's own eviction from running)
as lines on the disk panel; each run named in words, with its exact total of
tokens served from disk (whole numbers: two runs never read the same "0.3M").
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib as mpl

mpl.use("Agg")  # no display: files only
import matplotlib.pyplot as plt
import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from kvgroomd.sim.report import Report, RunReport

GiB = 1 << 30
# Engine alone in grey, kvgroomd runs in colour: the comparison reads at a glance.
COLOURS = ("#7f7f7f", "#1f77b4", "#d62728", "#2ca02c", "#9467bd")
# Run labels (sim/replay.py) as a person reads them.
NAMES = {
    "engine alone": "engine alone (ds4-server's own eviction)",
    "ds4+supersede": "kvgroomd: supersession + the engine's score",
    "default": "kvgroomd default policy",
    "config": "kvgroomd with your config",
}
ENGINE_COL, KVGROOMD_COL = 3, 4  # budget columns of RunReport.timeline


def run_name(label: str) -> str:
    """A run's label in words ("kvgroomd default policy", not "default")."""
    return NAMES.get(label, f"kvgroomd, policy {label}")


def _budget(run: RunReport, col: int) -> Any:
    """One budget over time (GiB), or None when the run has none."""
    if run.timeline.shape[1] <= col or np.isnan(run.timeline[:, col]).all():
        return None
    return run.timeline[:, col] / GiB


def figure(report: Report) -> Figure:
    """Two panels sharing the time axis: bytes on disk with both budgets,
    cumulative prefill tokens served from disk."""
    runs = report.runs
    span = max((float(r.timeline[-1, 0]) for r in runs if len(r.timeline)), default=0.0)
    unit, scale = ("days", 86400.0) if span > 2 * 86400 else ("hours", 3600.0)
    fig, (disk, saved) = plt.subplots(2, 1, sharex=True, figsize=(9, 7), layout="constrained",
                                      gridspec_kw={"height_ratios": (1, 1.4)})  # fmt: skip
    top = report.budget / GiB
    for run, colour in zip(runs, COLOURS, strict=False):
        t = run.timeline[:, 0] / scale
        width = 1.0 if run is runs[0] else 1.4
        name = run_name(run.label)
        disk.plot(t, run.timeline[:, 1] / GiB, color=colour, lw=width * 0.8, alpha=0.85,
                  label=name, drawstyle="steps-post")  # fmt: skip
        saved.plot(t, run.timeline[:, 2] / 1e6, color=colour, lw=width + 0.4,
                   label=f"{name}: {run.tokens_saved:,}")  # fmt: skip
    # The engine's budget is the same in every run; kvgroomd's may differ by run.
    if runs and (engine := _budget(runs[0], ENGINE_COL)) is not None:
        t = runs[0].timeline[:, 0] / scale
        disk.plot(t, engine, color="black", ls=":", lw=1.2, drawstyle="steps-post",
                  label="engine budget (--kv-disk-space-mb)")  # fmt: skip
        top = max(top, float(engine.max()))
    mine = [(r, c, b) for r, c in zip(runs, COLOURS, strict=False)
            if (b := _budget(r, KVGROOMD_COL)) is not None]  # fmt: skip
    same = len({tuple(b.round(6)) for _, _, b in mine}) == 1
    for run, colour, b in mine[:1] if same else mine:
        label = "kvgroomd budget" if same else f"kvgroomd budget ({run_name(run.label)})"
        disk.plot(run.timeline[:, 0] / scale, b, color="black" if same else colour, ls="--",
                  lw=1, drawstyle="steps-post", label=label)  # fmt: skip
        top = max(top, float(np.nanmax(b)))
    disk.set_ylabel("cache directory (GiB)")
    disk.set_ylim(0, top * 1.12 if math.isfinite(top) and top > 0 else None)
    disk.legend(loc="lower right", fontsize=7, ncols=2)
    saved.set_ylabel("prefill tokens served from disk (millions)")
    saved.set_xlabel(f"time ({unit})")
    saved.set_ylim(bottom=0)
    saved.legend(loc="upper left", fontsize=8, title="tokens served from disk, in total",
                 title_fontsize=8)  # fmt: skip
    for ax in (disk, saved):
        ax.grid(alpha=0.3)
        ax.set_xlim(left=0)
    fig.suptitle(f"{report.workload}: ds4-server alone vs with kvgroomd", fontsize=11)
    return fig


def plot_report(report: Report, path: str | Path) -> None:
    """Write the figure as a PNG."""
    fig = figure(report)
    fig.savefig(path, dpi=110)
    plt.close(fig)

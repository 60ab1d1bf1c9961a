"""Plot a simulation report: disk usage and prefill tokens saved over time.

Shell (writes a PNG). Imported only when a plot is asked for, so the daemon
and the rest of the CLI never load matplotlib.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib as mpl

mpl.use("Agg")  # no display: files only
import matplotlib.pyplot as plt

if TYPE_CHECKING:
    from kvgroomd.sim.replay import Report

GiB = 1 << 30
# Engine alone in grey, kvgroomd runs in colour: the comparison reads at a glance.
COLOURS = ("#7f7f7f", "#1f77b4", "#d62728", "#2ca02c", "#9467bd")


def plot_report(report: Report, path: str | Path) -> None:
    """Two panels sharing the time axis: bytes on disk, cumulative tokens saved."""
    runs = report.runs
    span = max((float(r.timeline[-1, 0]) for r in runs if len(r.timeline)), default=0.0)
    unit, scale = ("days", 86400.0) if span > 2 * 86400 else ("hours", 3600.0)
    fig, (disk, saved) = plt.subplots(
        2,
        1,
        sharex=True,
        figsize=(9, 6.5),
        layout="constrained",
        gridspec_kw={"height_ratios": (1, 1.4)},
    )
    for run, colour in zip(runs, COLOURS, strict=False):
        t = run.timeline[:, 0] / scale
        width = 1.0 if run is runs[0] else 1.4
        disk.plot(
            t,
            run.timeline[:, 1] / GiB,
            color=colour,
            lw=width * 0.8,
            alpha=0.85,
            label=run.label,
            drawstyle="steps-post",
        )
        saved.plot(
            t,
            run.timeline[:, 2] / 1e6,
            color=colour,
            lw=width + 0.4,
            label=f"{run.label}: {run.tokens_saved / 1e6:.1f}M",
        )
    disk.axhline(report.budget / GiB, color="black", ls=":", lw=1)
    disk.annotate(
        "engine budget",
        (1, report.budget / GiB),
        xycoords=("axes fraction", "data"),
        xytext=(-4, 3),
        textcoords="offset points",
        ha="right",
        fontsize=8,
    )
    disk.set_ylabel("cache directory (GiB)")
    disk.set_ylim(0, report.budget / GiB * 1.12)  # room for the budget line and its label
    disk.legend(loc="lower right", fontsize=8, ncols=len(runs))
    saved.set_ylabel("prefill tokens saved (millions)")
    saved.set_xlabel(f"time ({unit})")
    saved.set_ylim(bottom=0)
    saved.legend(loc="upper left", fontsize=8, title="tokens served from disk", title_fontsize=8)
    for ax in (disk, saved):
        ax.grid(alpha=0.3)
        ax.set_xlim(left=0)
    fig.suptitle(f"{report.workload}: engine alone vs kvgroomd", fontsize=11)
    fig.savefig(path, dpi=110)
    plt.close(fig)

"""Plot a trace replay sweep: prompt tokens served from disk against disk used.

Shell (writes a PNG). Imported only when --plot is given, so nothing else
loads matplotlib. One point per config at its mean disk use, a line to its
peak, the recording as a star: the operator reads off which budget and
parameters serve the most from their own traffic.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib as mpl

mpl.use("Agg")  # no display: files only
import matplotlib.pyplot as plt

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from kvgroomd.sim.traceoutcome import Outcome

GiB = 1 << 30


def figure(recorded: Outcome, runs: Sequence[Outcome], title: str = "") -> Figure:
    """Tokens served from disk (millions) against mean GiB on disk (a line to the peak)."""
    fig, ax = plt.subplots(figsize=(9, 6), layout="constrained")
    for r in runs:
        y = r.tokens_from_disk / 1e6
        ax.plot([r.mean_bytes / GiB, r.peak_bytes / GiB], [y, y], color="#1f77b4", lw=0.8,
                alpha=0.4)  # fmt: skip
        ax.scatter([r.peak_bytes / GiB], [y], color="#1f77b4", alpha=0.35, s=14, marker="|")
        ax.scatter([r.mean_bytes / GiB], [y], color="#1f77b4", s=30)
        ax.annotate(r.label, (r.mean_bytes / GiB, y), fontsize=7, xytext=(4, 3),
                    textcoords="offset points")  # fmt: skip
    ax.plot([recorded.mean_bytes / GiB, recorded.peak_bytes / GiB],
            [recorded.tokens_from_disk / 1e6] * 2, color="#d62728", lw=0.8, alpha=0.4)
    ax.scatter([recorded.mean_bytes / GiB], [recorded.tokens_from_disk / 1e6], marker="*",
               s=140, color="#d62728", label="recorded", zorder=3)  # fmt: skip
    ax.scatter([], [], color="#1f77b4", s=30, label="replayed: mean disk use")
    ax.scatter([], [], color="#1f77b4", alpha=0.35, s=14, marker="|",
               label="replayed: peak disk use")  # fmt: skip
    ax.set_xlabel("cache directory, mean over the trace (GiB; line: to the peak)")
    ax.set_ylabel("prompt tokens served from disk (millions)")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"{title}: tokens served against disk used, per config".lstrip(": "),
                 fontsize=11)  # fmt: skip
    return fig


def plot_sweep(recorded: Outcome, runs: Sequence[Outcome], path: str | Path,
               title: str = "") -> None:  # fmt: skip
    """Write the figure as a PNG."""
    fig = figure(recorded, runs, title)
    fig.savefig(path, dpi=110)
    plt.close(fig)

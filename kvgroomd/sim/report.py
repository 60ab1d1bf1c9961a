"""What a replay measured: one run, one workload's runs, many seeds.

Pure. `RunReport` is one configuration on one workload; `Report` all runs of
one workload (engine alone first); `Sweep` the same runs over many seeds of a
generated workload, summarised as the share of prompt tokens served from cache
and the share of the alone-to-unbounded gap each configuration closes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

GiB = 1 << 30
ALONE = "engine alone"
UNBOUNDED = "unbounded"


@dataclass(frozen=True, slots=True)
class RunReport:
    """What one configuration achieved on one workload."""

    label: str
    requests: int
    lookups: int
    hits: int
    tokens_saved: int  # prefill tokens served from disk
    tokens_prefilled: int  # prefill tokens computed
    bytes_written: int
    bytes_deleted_unhit: int
    peak_bytes: int
    deleted: Mapping[str, int]
    # One row per request: finish time (s), disk bytes, cumulative tokens saved,
    # the engine's budget and kvgroomd's (NaN: none) in force then.
    timeline: npt.NDArray[np.float64] = field(repr=False, compare=False)
    tokens_prompt: int = 0  # prompt tokens processed: served from memory or disk, or prefilled

    @property
    def share(self) -> float:
        """Share of prompt tokens served from cache (live session or disk)."""
        return 1.0 - self.tokens_prefilled / self.tokens_prompt if self.tokens_prompt else 0.0

    @property
    def disk_share(self) -> float:
        """Share of prompt tokens served from disk."""
        return self.tokens_saved / self.tokens_prompt if self.tokens_prompt else 0.0

    @property
    def files_held(self) -> float:
        """Snapshots on disk, on average over the requests: what the budget holds."""
        if self.timeline.shape[1] < 6 or not len(self.timeline):
            return 0.0
        return float(self.timeline[:, 5].mean())

    @property
    def hit_rate(self) -> float:
        """Disk hits per disk lookup (requests that missed the live session)."""
        return self.hits / self.lookups if self.lookups else 0.0

    def summary(self) -> dict[str, Any]:
        """Plain data for --json."""
        return {
            "label": self.label,
            "requests": self.requests,
            "lookups": self.lookups,
            "hits": self.hits,
            "hit_rate": round(self.hit_rate, 4),
            "tokens_saved": self.tokens_saved,
            "tokens_prefilled": self.tokens_prefilled,
            "tokens_prompt": self.tokens_prompt,
            "share_served": round(self.share, 4),
            "gib_written": round(self.bytes_written / GiB, 3),
            "gib_deleted_unhit": round(self.bytes_deleted_unhit / GiB, 3),
            "peak_gib": round(self.peak_bytes / GiB, 3),
            "files_held_mean": round(self.files_held, 1),
            "deleted": dict(self.deleted),
        }


@dataclass(frozen=True, slots=True)
class Report:
    """All runs of one workload, engine alone first."""

    workload: str
    description: str
    budget: int
    runs: tuple[RunReport, ...]

    def run(self, label: str) -> RunReport:
        """The run named `label`."""
        return next(r for r in self.runs if r.label == label)
def format_table(report: Report) -> str:
    """A fixed-width table of the runs."""
    head = (
        f"{'run':<16} {'tokens saved':>13} {'vs engine':>9} {'hits':>11} {'hit rate':>8} "
        f"{'GiB written':>11} {'GiB del. unhit':>14}"
    )
    base = report.runs[0].tokens_saved
    lines = [
        f"{report.workload}: {report.description}".rstrip(": "),
        f"engine budget {report.budget / GiB:.2f} GiB",
        head,
        "-" * len(head),
    ]
    for r in report.runs:
        ratio = f"{r.tokens_saved / base:.2f}x" if base else ("-" if not r.tokens_saved else "inf")
        lines.append(
            f"{r.label:<16} {r.tokens_saved:>13,} {ratio:>9} {f'{r.hits}/{r.lookups}':>11} "
            f"{r.hit_rate:>8.1%} {r.bytes_written / GiB:>11.2f} "
            f"{r.bytes_deleted_unhit / GiB:>14.2f}"
        )
    return "\n".join(lines)




def gap_closed(run: RunReport, alone: RunReport, unbounded: RunReport) -> float | None:
    """Share of the alone-to-unbounded gap `run` closes (None: no gap)."""
    gap = unbounded.share - alone.share
    if gap <= 1e-9:
        return None
    return (run.share - alone.share) / gap


@dataclass(frozen=True, slots=True)
class Sweep:
    """The same configurations on many seeds of one workload, at one engine budget."""

    workload: str
    budget: int
    seeds: tuple[int, ...]
    reports: tuple[Report, ...]  # one per seed: engine alone, unbounded, then contenders

    @property
    def labels(self) -> list[str]:
        """Run labels, engine alone first."""
        return [r.label for r in self.reports[0].runs]

    def shares(self, label: str) -> list[float]:
        """Share served per seed."""
        return [r.run(label).share for r in self.reports]

    def gaps(self, label: str) -> list[float | None]:
        """Gap closed per seed."""
        return [gap_closed(r.run(label), r.run(ALONE), r.run(UNBOUNDED)) for r in self.reports]

    def summary(self) -> dict[str, Any]:
        """Plain data for --json: per label, shares, gaps, mean and worst."""
        out: dict[str, Any] = {"workload": self.workload, "budget": self.budget,
                               "seeds": list(self.seeds), "runs": {}}  # fmt: skip
        for label in self.labels:
            shares, gaps = self.shares(label), self.gaps(label)
            real = [g for g in gaps if g is not None]
            out["runs"][label] = {
                "share": [round(s, 4) for s in shares],
                "gap_closed": [None if g is None else round(g, 4) for g in gaps],
                "share_mean": round(float(np.mean(shares)), 4),
                "share_worst": round(min(shares), 4),
                "gap_mean": round(float(np.mean(real)), 4) if real else None,
                "gap_worst": round(min(real), 4) if real else None,
                "below_alone": sum(s < a - 1e-12
                                   for s, a in zip(shares, self.shares(ALONE), strict=True)),
            }
        return out


def format_sweep(sweep: Sweep, *, per_seed: bool = False) -> str:
    """Mean and worst seed per configuration; with `per_seed`, every seed."""
    seeds = sweep.seeds
    span = f"{seeds[0]}-{seeds[-1]}" if seeds == tuple(range(seeds[0], seeds[-1] + 1)) else (
        ",".join(map(str, seeds)))  # fmt: skip
    head = (f"{'run':<16} {'share mean':>10} {'worst (seed)':>14} {'gap closed mean':>15} "
            f"{'worst (seed)':>14} {'below alone':>11}")  # fmt: skip
    lines = [f"{sweep.workload}, engine budget {sweep.budget / GiB:.2f} GiB, "
             f"{len(seeds)} seeds ({span})", head, "-" * len(head)]  # fmt: skip
    alone = sweep.shares(ALONE)
    for label in sweep.labels:
        shares, gaps = sweep.shares(label), sweep.gaps(label)
        w = int(np.argmin(shares))
        row = f"{label:<16} {np.mean(shares):>10.1%} {f'{shares[w]:.1%} (s{seeds[w]})':>14}"
        if label not in (ALONE, UNBOUNDED):
            real = [(g, s) for g, s in zip(gaps, seeds, strict=True) if g is not None]
            if real:
                worst = min(real)
                mean = float(np.mean([g for g, _ in real]))
                row += f" {mean:>15.0%} {f'{worst[0]:.0%} (s{worst[1]})':>14}"
            else:
                row += f" {'-':>15} {'-':>14}"
            below = sum(s < a - 1e-12 for s, a in zip(shares, alone, strict=True))
            row += f" {f'{below} of {len(seeds)}':>11}"
        lines.append(row)
    if per_seed:
        lines.append("")
        lines.append("seed  " + "  ".join(f"{lab:>16}" for lab in sweep.labels))
        for i, s in enumerate(seeds):
            cells = []
            for label in sweep.labels:
                share, gap = sweep.shares(label)[i], sweep.gaps(label)[i]
                cell = f"{share:.1%}" + ("" if gap is None or label in (ALONE, UNBOUNDED)
                                         else f" ({gap:+.0%})")  # fmt: skip
                cells.append(f"{cell:>16}")
            lines.append(f"{s:<4}  " + "  ".join(cells))
    return "\n".join(lines)


def parse_seeds(text: str) -> tuple[int, ...]:
    """`1-10`, `3`, `1,4,7` or a mix: the seeds, in order, without repeats."""
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        try:
            a, b = int(lo), int(hi or lo)
        except ValueError:
            raise ValueError(f"expected seeds such as 1-10 or 1,4,7, got {text!r}") from None
        for s in range(a, b + 1):
            if s not in out:
                out.append(s)
    if not out:
        raise ValueError(f"no seeds in {text!r}")
    return tuple(out)


__all__ = ["ALONE", "UNBOUNDED", "Report", "RunReport", "Sweep", "format_sweep", "format_table",
           "gap_closed", "parse_seeds"]  # fmt: skip

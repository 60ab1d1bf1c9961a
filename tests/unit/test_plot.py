"""The simulator's plot: both budgets drawn, runs named in words, exact totals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kvgroomd.sim.plot import figure, plot_report
from kvgroomd.sim.replay import compare
from kvgroomd.sim.report import Report, RunReport
from kvgroomd.sim.workload import load_workload

GiB = 1 << 30
SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


def _run(label: str, saved: int, engine: list[float], mine: list[float]) -> RunReport:
    n = len(engine)
    timeline = np.column_stack([np.arange(n) * 3600.0, np.full(n, 2.0 * GiB),
                                np.linspace(0, saved, n), engine, mine])  # fmt: skip
    return RunReport(label=label, requests=n, lookups=n, hits=1, tokens_saved=saved,
                     tokens_prefilled=0, bytes_written=0, bytes_deleted_unhit=0, peak_bytes=0,
                     deleted={}, timeline=timeline)  # fmt: skip


def _report(*runs: RunReport) -> Report:
    return Report("cut", "", 8 * GiB, runs)


def _lines(report: Report) -> dict[str, Any]:
    fig = figure(report)
    disk = fig.axes[0]
    return {line.get_label(): line for line in disk.get_lines()}


def _legend(report: Report, panel: int) -> list[str]:
    legend = figure(report).axes[panel].get_legend()
    return [t.get_text() for t in legend.get_texts()]


CUT = [8.0 * GiB] * 3 + [4.0 * GiB] * 3  # the operator lowers the engine's budget
NAN = [float("nan")] * 6


def test_both_budgets_are_drawn_and_follow_a_budget_change() -> None:
    """The disk panel has the engine's budget and kvgroomd's (one line when every kvgroomd
    run has the same), each stepping down when the budget is cut."""
    mine = [b - 0.5 * GiB for b in CUT]
    lines = _lines(_report(_run("engine alone", 10, CUT, NAN), _run("ds4+supersede", 20, CUT, mine),
                           _run("default", 30, CUT, mine)))  # fmt: skip
    engine = lines["engine budget (--kv-disk-space-mb)"].get_ydata()
    assert list(engine) == [8, 8, 8, 4, 4, 4]
    assert list(lines["kvgroomd budget"].get_ydata()) == [7.5, 7.5, 7.5, 3.5, 3.5, 3.5]


def test_different_kvgroomd_budgets_get_a_line_each() -> None:
    """A config with its own budget: one kvgroomd budget line per run, named."""
    lines = _lines(_report(_run("engine alone", 10, CUT, NAN),
                           _run("default", 20, CUT, [b - GiB for b in CUT]),
                           _run("config", 30, CUT, [3.0 * GiB] * 6)))  # fmt: skip
    assert "kvgroomd budget (kvgroomd default policy)" in lines
    assert "kvgroomd budget (kvgroomd with your config)" in lines


def test_runs_are_named_in_words_with_exact_totals() -> None:
    """Labels a person reads, and totals that never round two runs to the same "0.3M"."""
    report = _report(_run("engine alone", 287_000, CUT, NAN),
                     _run("default", 312_400, CUT, CUT), _run("prefill", 1, CUT, CUT))  # fmt: skip
    assert _legend(report, 1) == [
        "engine alone (ds4-server's own eviction): 287,000",
        "kvgroomd default policy: 312,400",
        "kvgroomd, policy prefill: 1",
    ]


def test_simulate_plot_of_a_scenario(tmp_path: Path) -> None:
    """A real replay: the PNG is written, and the engine's budget line is at the scenario's
    budget with kvgroomd's below it."""
    report = compare(load_workload(SCENARIOS / "nested-ladder.yaml"))
    lines = _lines(report)
    engine = lines["engine budget (--kv-disk-space-mb)"].get_ydata()
    # kvgroomd keeps the room each run predicts the engine's next store needs:
    # one line per run when they differ.
    mine = [line.get_ydata() for label, line in lines.items()
            if label.startswith("kvgroomd budget")]  # fmt: skip
    assert float(engine[0]) == report.budget / GiB
    assert mine and all((np.asarray(m) <= np.asarray(engine)).all() for m in mine)
    assert all((np.asarray(m) < np.asarray(engine)).any() for m in mine)
    png = tmp_path / "p.png"
    plot_report(report, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

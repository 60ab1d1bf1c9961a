"""Benchmarks cannot rot: every script in bench/ is run by bench/smoke, which .ci/run runs."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HELPERS = {"__init__.py", "common.py", "daemon_figures.py", "inproc_figures.py"}  # used by run.py


def test_every_bench_script_has_a_quick_line_in_bench_smoke() -> None:
    """A script added to bench/ without its line in bench/smoke fails here."""
    smoke = (ROOT / "bench" / "smoke").read_text()
    scripts = {p.name for p in (ROOT / "bench").glob("*.py")} - HELPERS
    assert scripts, "no bench scripts found"
    assert {s for s in scripts if f"bench/{s}" not in smoke} == set()


def test_ci_runs_the_bench_smoke() -> None:
    """.ci/run calls bench/smoke."""
    assert "bench/smoke" in (ROOT / ".ci" / "run").read_text()

"""tail.py rendering, filtering and summary (pure)."""

from __future__ import annotations

from kvgroomd.ops.tail import Filter, Summary, parse, render

UNLINK = {"event": "snapshot.unlinked", "level": "info", "timestamp": "2026-11-27T14:10:03.5Z",
          "path": "/c/ab.kv", "cause": "budget", "sha": "ab" * 20, "size": 3 * 2**20,
          "reason": "evict"}  # fmt: skip


class TestRender:
    def test_unlink_line_is_time_level_event_then_cause_first(self) -> None:
        """An unlink renders as time, level, padded event, then cause, reason, short sha, size."""
        line = render(UNLINK)
        assert line.startswith("14:10:03 INFO  snapshot.unlinked")
        assert "cause=budget" in line
        assert line.index("cause=") < line.index("reason=") < line.index("sha=abababababab ")
        assert "size=3.0 MiB" in line

    def test_would_unlink_is_dimmed_in_its_cause_colour(self) -> None:
        """A dry-run line uses the cause's colour, dimmed."""
        line = render({**UNLINK, "event": "snapshot.would_unlink"}, colour=True)
        assert line.startswith("\x1b[2;33m")

    def test_non_json_lines_are_not_records(self) -> None:
        """Plain text and JSON that is not an object parse to None."""
        assert parse("hello") is None
        assert parse("[1, 2]") is None
        assert parse('{"event": "x"}') == {"event": "x"}


class TestFilterAndSummary:
    def test_filter_by_glob_and_cause(self) -> None:
        """Event globs and causes must both match when both are given."""
        keep = Filter(("snapshot.*",), ("superseded",))
        assert not keep(UNLINK)
        assert keep({**UNLINK, "cause": "superseded"})
        assert not keep({"event": "reconcile.done"})

    def test_summary_sums_unlinks_and_dry_runs_apart(self) -> None:
        """Unlinks and would-unlinks are counted by cause, separately."""
        s = Summary()
        s.add(UNLINK)
        s.add(UNLINK)
        s.add({**UNLINK, "event": "snapshot.would_unlink", "cause": "superseded"})
        assert s.line() == (
            "summary: unlinked 2 files, 6.0 MiB: budget 2 (6.0 MiB); "
            "dry run: would unlink 1 file, 3.0 MiB: superseded 1 (3.0 MiB)"
        )

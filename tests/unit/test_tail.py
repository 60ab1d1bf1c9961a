"""tail.py rendering, filtering and summary (pure)."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from kvgroomd import log
from kvgroomd.ops.tail import Filter, Summary, colour_wanted, parse, render

UNLINK = {"event": "snapshot.unlinked", "level": "info", "timestamp": "2026-11-27T14:10:03.5Z",
          "path": "/c/ab.kv", "cause": "budget", "sha": "ab" * 20, "size": 3 * 2**20,
          "reason": "evict"}  # fmt: skip


class TestRender:
    def test_unlink_line_is_time_level_event_then_cause_first(self) -> None:
        """An unlink renders as time, level, padded event, then its cause (no key), short
        sha, human size, reason."""
        line = render(UNLINK)
        assert line.startswith("14:10:03 INFO  snapshot.unlinked      budget     sha=abababababab "
                               "size=3.0 MiB reason=evict")  # fmt: skip

    def test_key_order_is_fixed_whatever_the_record_order(self) -> None:
        """The first keys in a fixed order, then the rest by name: a record reads the same
        whichever order its keys were logged in."""
        rec = {"event": "reconcile.done", "level": "info", "startup": False, "snapshots": 3,
               "dir_bytes": 2048, "added": 1, "repaired": 1, "gone": 0}  # fmt: skip
        backwards = dict(reversed(list(rec.items())))
        assert render(rec) == render(backwards)
        assert render(rec).endswith("added=1 dir_bytes=2.0 KiB gone=0 repaired=1 snapshots=3 "
                                    "startup=false")  # fmt: skip

    def test_width_cuts_long_values_then_the_line(self) -> None:
        """With a width, a long value is cut first (so later keys stay visible), then the
        line; every cut ends in an ellipsis."""
        rec = {**UNLINK, "superseded_by": "cd" * 20, "detail": "x" * 200, "zz": 1}
        line = render(rec, width=80)
        assert len(line) <= 80 and line.endswith("…")
        wide = render(rec, width=200)
        assert len(wide) <= 200
        assert "detail=" + "x" * 65 + "…" in wide and "zz=1" in wide
        assert len(render(rec)) > 200  # no width (a pipe): whole

    def test_a_traceback_follows_the_line_whole(self) -> None:
        """A multi-line value (structlog's `exception`) is printed below the line, indented,
        and never cut."""
        tb = "Traceback (most recent call last):\n  File \"x.py\", line 1\nRuntimeError: " + "y" * 90
        out = render({"event": "daemon.failed", "level": "error", "exception": tb}, width=60)
        first, *rest = out.splitlines()
        assert first.rstrip().endswith("daemon.failed")
        assert rest[0] == "  exception:"
        assert rest[-1] == "    RuntimeError: " + "y" * 90

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


class TestOneRenderer:
    @pytest.mark.parametrize(("no_color", "tty", "colour"),
                             [("", True, True), ("1", True, False), ("", False, False)])  # fmt: skip
    def test_colour_only_on_a_terminal_without_no_color(
        self, monkeypatch: pytest.MonkeyPatch, no_color: str, tty: bool, colour: bool
    ) -> None:
        """NO_COLOR set to anything non-empty turns colour off; an empty one does not."""
        monkeypatch.setenv("NO_COLOR", no_color)

        class Out(io.StringIO):
            def isatty(self) -> bool:
                return tty

        assert colour_wanted(Out()) is colour

    def test_the_daemon_console_log_is_tails_rendering(self) -> None:
        """`log.format: console` prints what `kvgroomd tail` prints for the same record."""
        console, jsonl = io.StringIO(), io.StringIO()
        fields: dict[str, Any] = {"cause": "superseded", "sha": "ab" * 20, "size": 5 << 20,
                                  "reason": "continued", "superseded_by": "cd" * 20}
        for fmt, out in (("console", console), ("json", jsonl)):
            log.configure(fmt, "info", stream=out)
            log.get().info(log.UNLINKED, **fields)
        log.configure("json", "info")
        assert console.getvalue() == render(json.loads(jsonl.getvalue())) + "\n"
        assert "superseded sha=abababababab size=5.0 MiB" in console.getvalue()

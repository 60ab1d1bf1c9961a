"""The daemon's timers: named deadlines on the monotonic clock.

Shell state, no I/O. Every timer the work loop has (the next rescan, the
next watchdog ping, the observer health check, a retry, a budget look) is a
deadline here, on `time.monotonic()`: a wall clock stepped back or forward
moves none of them. The loop sleeps until the nearest one.
"""

from __future__ import annotations

from collections.abc import Callable


class Timers:
    """Deadlines by name (monotonic seconds); a name not set is not pending."""

    def __init__(self, mono: Callable[[], float]) -> None:
        self._mono = mono
        self._at: dict[str, float] = {}

    def start(self, name: str, after: float = 0.0) -> None:
        """`name` falls due `after` seconds from now (0: at once)."""
        self._at[name] = self._mono() + after

    def cancel(self, name: str) -> None:
        """`name` is no longer pending."""
        self._at.pop(name, None)

    def due(self, name: str) -> bool:
        """`name` is set and its time has come."""
        at = self._at.get(name)
        return at is not None and self._mono() >= at

    def pending(self, name: str) -> bool:
        """`name` is set and its time has not come yet."""
        at = self._at.get(name)
        return at is not None and self._mono() < at

    def wait(self) -> float | None:
        """Seconds until the nearest deadline (0 when one is due; None: none set)."""
        if not self._at:
            return None
        return max(0.0, min(self._at.values()) - self._mono())

"""Prometheus metrics: a textfile for node_exporter and/or an HTTP endpoint.

Shell. prometheus_client is an optional dependency (`kvgroomd[metrics]`),
imported only when `metrics.textfile` or `metrics.listen` is configured, so
the daemon runs without it otherwise.

Threading: the daemon thread calls `update()` after it changed something; it
builds an immutable `State` and swaps it in with one assignment. Scrapes run
in prometheus_client's server thread and only read the current `State`, so
they never see the index half-updated. The latency histogram is the one live
instrument (prometheus_client locks it).

Metric names are a stable interface, documented in docs/operator-tools.md.
"""

from __future__ import annotations

import functools
import platform
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kvgroomd import log as events
from kvgroomd.config import Config, ConfigError
from kvgroomd.core.decision import Cause
from kvgroomd.daemon._http import HttpServer
from kvgroomd.format.header import ABI_LEGACY, Reason

if TYPE_CHECKING:
    from kvgroomd.daemon.groom import DiskGroomer as Groomer

PREFIX = "kvgroomd"


@functools.cache
def version() -> str:
    """The installed kvgroomd version (importlib.metadata: read only when metrics are on)."""
    from importlib.metadata import PackageNotFoundError  # noqa: PLC0415 - ~50 ms, only if asked
    from importlib.metadata import version as installed  # noqa: PLC0415

    try:
        return installed("kvgroomd")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


# Event-to-decision latency: a pass over one landed file is normally well
# under 10 ms; tens of seconds mean a reconcile or a slow disk held us up.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                   1.0, 2.5, 5.0, 10.0, 30.0)  # fmt: skip


@dataclass(frozen=True, slots=True)
class State:
    """What the gauges and counters report, as of the last `update()`."""

    snapshots: Mapping[str, int] = field(default_factory=dict)  # by reason label
    snapshot_bytes: Mapping[str, int] = field(default_factory=dict)
    used: int = 0  # bytes counted against the budget
    budget: int | None = None
    invalid: int = 0
    other_layout: int = 0  # snapshots of layouts the engine does not read (not in `invalid`)
    other_layout_bytes: int = 0
    stale_format: int = 0
    stale_format_bytes: int = 0
    unlinks: Mapping[str, int] = field(default_factory=dict)  # by cause
    freed: Mapping[str, int] = field(default_factory=dict)
    unlink_failures: int = 0
    events: int = 0
    repairs: int = 0
    dry_run: bool = False
    # The config in force: did the last load (start or reload) succeed, and when
    # did one last succeed. `systemctl reload` returns 0 even when it failed.
    reload_ok: bool = True
    reload_success_at: float = 0.0


def other_layouts(invalid: Mapping[str, tuple[tuple[int, int, int] | None, str]],
                  ) -> tuple[int, int]:  # fmt: skip
    """(files, bytes) of snapshots of layouts the engine does not read, among
    a groomer's `invalid` entries: they use disk but are not the engine's."""
    sizes = [v[0][2] if v[0] else 0 for v in invalid.values() if v[1] == "other_layout"]
    return len(sizes), sum(sizes)


def state_of(groomer: Groomer, config: Config) -> State:
    """Read the groomer's index and totals into a State (daemon thread only)."""
    cols = groomer.index.columns()
    reasons = cols["reason"].astype(np.int64)
    counts = np.bincount(reasons, minlength=len(Reason))
    sizes = np.bincount(reasons, weights=cols["size"].astype(np.float64), minlength=len(Reason))
    legacy = cols["abi"] == ABI_LEGACY
    t = groomer.totals
    others, other_bytes = other_layouts(groomer.invalid)
    return State(
        snapshots={r.label: int(counts[r]) for r in Reason},
        snapshot_bytes={r.label: int(sizes[r]) for r in Reason},
        used=groomer.core.usage,
        budget=groomer.core.limit(),
        invalid=len(groomer.invalid) - others,
        other_layout=others,
        other_layout_bytes=other_bytes,
        stale_format=int(legacy.sum()),
        stale_format_bytes=int(cols["size"][legacy].sum()),
        unlinks={str(c): t.unlinked[c] for c in Cause},
        freed={str(c): t.freed[c] for c in Cause},
        unlink_failures=t.failed,
        events=t.events,
        repairs=t.repairs,
        dry_run=config.dry_run,
    )


def _host_port(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


class NoMetrics:
    """Stands in when metrics are not configured: every call does nothing."""

    def start(self) -> bool:
        """Nothing to start; always succeeds."""
        return True

    def update(self, groomer: Groomer, config: Config) -> None:
        """Nothing to update."""

    def observe_latency(self, seconds: float) -> None:
        """Nothing to observe."""

    def config_loaded(self, ok: bool, at: float) -> None:
        """Nothing to record."""

    def close(self) -> None:
        """Nothing to close."""


class Metrics(NoMetrics):
    """A private registry exported as a textfile and/or over HTTP."""

    def __init__(self, log: Any, *, textfile: Path | None = None,
                 listen: str | None = None) -> None:  # fmt: skip
        try:
            import prometheus_client as prom  # noqa: PLC0415 - optional dependency
        except ImportError:
            raise ConfigError(
                "metrics: needs prometheus_client (pip install 'kvgroomd[metrics]')"
            ) from None
        # No `_created` series: they double the sample count and nobody graphs them.
        prom.disable_created_metrics()  # type: ignore[no-untyped-call]
        self._prom = prom
        self.log = log
        self.textfile = textfile
        self.listen = listen
        self.state = State(reload_success_at=time.time())  # the config at start loaded
        self.registry = prom.CollectorRegistry()
        self.registry.register(_Collector(self))
        self.latency = prom.Histogram(
            f"{PREFIX}_decision_latency_seconds",
            "Time from a landed file's event entering the queue to its decisions being applied.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._server: HttpServer | None = None
        self.address: tuple[str, int] | None = None  # bound host and port, once started

    def start(self) -> bool:
        """Open the HTTP endpoint, if configured. False (logged) when it cannot bind."""
        if self.listen is None:
            return True
        host, port = _host_port(self.listen)
        try:  # bounded: one thread, few connections, idle ones closed (_http.py)
            self._server = HttpServer(host, port, self.render, self._prom.CONTENT_TYPE_LATEST)
        except OSError as e:
            self.log.error(events.METRICS_FAILED, listen=self.listen, error=e.strerror,
                           errno=e.errno)  # fmt: skip
            return False
        self._server.start()
        self.address = (host, self._server.port)
        shown = f"[{host}]" if ":" in host else host
        self.log.info(events.METRICS_LISTENING, host=host, port=self.address[1],
                      url=f"http://{shown}:{self.address[1]}/metrics")  # fmt: skip
        return True

    def update(self, groomer: Groomer, config: Config) -> None:
        """Take a fresh State from the groomer; rewrite the textfile."""
        s = self.state
        self.state = replace(state_of(groomer, config), reload_ok=s.reload_ok,
                             reload_success_at=s.reload_success_at)  # fmt: skip
        self.write_textfile()

    def config_loaded(self, ok: bool, at: float) -> None:
        """Record a reload: `ok` False when the new config was rejected."""
        s = self.state
        self.state = replace(s, reload_ok=ok, reload_success_at=at if ok else s.reload_success_at)
        self.write_textfile()

    def observe_latency(self, seconds: float) -> None:
        """Record one event-to-decision latency."""
        self.latency.observe(max(0.0, seconds))

    def write_textfile(self) -> None:
        """Write the textfile atomically (temp file + rename), if configured."""
        if self.textfile is None:
            return
        try:
            self._prom.write_to_textfile(str(self.textfile), self.registry)
        except OSError as e:
            self.log.warning(events.METRICS_FAILED, textfile=str(self.textfile),
                             error=e.strerror, errno=e.errno)  # fmt: skip

    def render(self) -> bytes:
        """The exposition text, as a scrape would see it."""
        return bytes(self._prom.generate_latest(self.registry))

    def close(self) -> None:
        """Final textfile write; stop the HTTP endpoint."""
        self.write_textfile()
        if self._server is not None:
            self._server.close()
            self._server = None


class _Collector:
    """Yields the State's metrics at scrape time."""

    def __init__(self, owner: Metrics) -> None:
        self.owner = owner

    def describe(self) -> list[Any]:
        return []  # unchecked collector: families vary (budget may be absent)

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (  # noqa: PLC0415 - optional dependency
            CounterMetricFamily,
            GaugeMetricFamily,
        )

        s = self.owner.state
        info = GaugeMetricFamily(f"{PREFIX}_build_info",
                                 "kvgroomd's version and the Python running it; always 1.",
                                 labels=["version", "python"])  # fmt: skip
        info.add_metric([version(), platform.python_version()], 1)
        yield info
        snaps = GaugeMetricFamily(f"{PREFIX}_snapshots", "Indexed snapshots, by reason.",
                                  labels=["reason"])  # fmt: skip
        size = GaugeMetricFamily(f"{PREFIX}_snapshot_bytes",
                                 "Bytes held by indexed snapshots, by reason.",
                                 labels=["reason"])  # fmt: skip
        for r in Reason:
            snaps.add_metric([r.label], s.snapshots.get(r.label, 0))
            size.add_metric([r.label], s.snapshot_bytes.get(r.label, 0))
        yield snaps
        yield size
        if s.budget is not None:
            yield GaugeMetricFamily(f"{PREFIX}_budget_bytes",
                                    "The usage budget eviction keeps below (budget, or "
                                    "engine_budget less the next store's room).",
                                    value=s.budget)  # fmt: skip
            yield GaugeMetricFamily(f"{PREFIX}_budget_headroom_bytes",
                                    "Budget minus the bytes counted against it (negative: over).",
                                    value=s.budget - s.used)  # fmt: skip
        yield GaugeMetricFamily(f"{PREFIX}_config_last_reload_successful",
                                "0 when the last reload (SIGHUP) rejected the new config.",
                                value=int(s.reload_ok))  # fmt: skip
        yield GaugeMetricFamily(f"{PREFIX}_config_last_reload_success_timestamp_seconds",
                                "When a config was last loaded successfully (start or reload).",
                                value=s.reload_success_at)  # fmt: skip
        yield GaugeMetricFamily(f"{PREFIX}_invalid_files",
                                "Snapshot-named files that are not usable snapshots.",
                                value=s.invalid)  # fmt: skip
        yield GaugeMetricFamily(f"{PREFIX}_other_layout_snapshots",
                                "Snapshots of layouts the engine does not read (left alone).",
                                value=s.other_layout)  # fmt: skip
        yield GaugeMetricFamily(f"{PREFIX}_other_layout_bytes",
                                "Bytes held by snapshots of layouts the engine does not read.",
                                value=s.other_layout_bytes)  # fmt: skip
        yield GaugeMetricFamily(f"{PREFIX}_stale_format_snapshots",
                                "Indexed payload ABI 0 snapshots (invisible to current engines).",
                                value=s.stale_format)  # fmt: skip
        yield GaugeMetricFamily(f"{PREFIX}_stale_format_bytes",
                                "Bytes held by payload ABI 0 snapshots.",
                                value=s.stale_format_bytes)  # fmt: skip
        yield GaugeMetricFamily(f"{PREFIX}_dry_run", "1 when unlinks are only logged.",
                                value=int(s.dry_run))  # fmt: skip
        unlinks = CounterMetricFamily(f"{PREFIX}_unlinks", "Files unlinked, by cause.",
                                      labels=["cause"])  # fmt: skip
        freed = CounterMetricFamily(f"{PREFIX}_freed_bytes", "Bytes freed by unlinks, by cause.",
                                    labels=["cause"])  # fmt: skip
        for c in Cause:
            unlinks.add_metric([str(c)], s.unlinks.get(str(c), 0))
            freed.add_metric([str(c)], s.freed.get(str(c), 0))
        yield unlinks
        yield freed
        yield CounterMetricFamily(f"{PREFIX}_unlink_failures",
                                  "Unlinks that failed with an OS error.",
                                  value=s.unlink_failures)  # fmt: skip
        yield CounterMetricFamily(f"{PREFIX}_events",
                                  "Directory events handled (landed and gone).",
                                  value=s.events)  # fmt: skip
        yield CounterMetricFamily(f"{PREFIX}_reconcile_repairs",
                                  "Drift repaired by rescans (files changed unseen).",
                                  value=s.repairs)  # fmt: skip


def for_config(config: Config, log: Any) -> NoMetrics:
    """Metrics as configured, or a do-nothing stand-in."""
    if config.metrics_textfile is None and config.metrics_listen is None:
        return NoMetrics()
    return Metrics(log, textfile=config.metrics_textfile, listen=config.metrics_listen)

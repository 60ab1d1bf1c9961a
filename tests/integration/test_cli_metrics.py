"""Metrics scraped from a real daemon's HTTP endpoint and parsed as Prometheus text."""

from __future__ import annotations

import json
import platform
import time
import urllib.request
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, str | None], float]
SUPERSEDED_BYTES = 19176 + 34152  # the two continued files of chain C that get superseded


def parse(text: str) -> Samples:
    """name and (cause or reason or le) label -> value."""
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            label = s.labels.get("cause") or s.labels.get("reason") or s.labels.get("le")
            out[(s.name, label)] = s.value
    return out


@pytest.fixture
def daemon(fixture_cache: Path, start_daemon: Any, tmp_path: Path) -> tuple[Any, int]:
    """A daemon (conftest's DaemonProcess) on the fixture directory, with leak
    cleanup on and metrics on an ephemeral loopback port."""
    d = start_daemon(
        cache_dir=fixture_cache, budget="1GiB", log={"format": "json", "level": "info"},
        cleanup={"orphan_temps": True, "stale_format": True},
        metrics={"listen": "127.0.0.1:0", "textfile": str(tmp_path / "k.prom")},
    )  # fmt: skip
    return d, int(d.wait_for("metrics.listening")[0]["port"])


def scrape(port: int) -> Samples:
    """One scrape of the real endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return parse(r.read().decode())


class TestEndpoint:
    def test_scrape_reports_the_directory_and_the_startup_unlinks(
        self, daemon: tuple[Any, int], manifest: dict[str, dict[str, Any]]
    ) -> None:
        """After start-up, gauges count what is indexed and counters the unlinks by cause."""
        _, port = daemon
        s = scrape(port)
        legacy = [f for f in manifest.values() if f["valid"] and f["abi"] == 0]
        kept = [f for f in manifest.values() if f["valid"] and f["abi"] == 2]
        for reason in ("cold", "continued", "evict", "shutdown", "agent-session"):
            n = sum(1 for f in kept if f["reason_name"] == reason)
            n -= 2 if reason == "continued" else 0  # chain C's two superseded files
            assert s[("kvgroomd_snapshots", reason)] == n
        total = sum(f["file_size"] for f in kept) - SUPERSEDED_BYTES
        assert sum(v for (k, _), v in s.items() if k == "kvgroomd_snapshot_bytes") == total
        assert s[("kvgroomd_unlinks_total", "superseded")] == 2
        assert s[("kvgroomd_freed_bytes_total", "superseded")] == SUPERSEDED_BYTES
        assert s[("kvgroomd_unlinks_total", "stale_format")] == len(legacy)
        assert s[("kvgroomd_freed_bytes_total", "stale_format")] == sum(
            f["file_size"] for f in legacy
        )
        assert s[("kvgroomd_unlinks_total", "orphan_temps")] == 1
        assert s[("kvgroomd_unlinks_total", "budget")] == 0
        assert s[("kvgroomd_budget_bytes", None)] == 2**30
        assert s[("kvgroomd_invalid_files", None)] == 5
        assert s[("kvgroomd_other_layout_snapshots", None)] == 1  # the version-2 copy
        assert s[("kvgroomd_stale_format_snapshots", None)] == 0
        assert s[("kvgroomd_reconcile_repairs_total", None)] == 0

    def test_build_info_headroom_and_no_created_series(
        self, daemon: tuple[Any, int], manifest: dict[str, dict[str, Any]]
    ) -> None:
        """kvgroomd_build_info names the installed version; the headroom gauge is the budget
        less the bytes counted against it; no `_created` series is exported."""
        _, port = daemon
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
        assert "_created" not in text
        info = [s for f in text_string_to_metric_families(text) for s in f.samples
                if s.name == "kvgroomd_build_info"]  # fmt: skip
        assert len(info) == 1 and info[0].value == 1
        assert info[0].labels["version"] == version("kvgroomd")
        assert info[0].labels["python"] == platform.python_version()
        s = parse(text)
        kept = [f for f in manifest.values() if f["valid"] and f["abi"] == 2]
        used = sum(f["file_size"] for f in kept) - SUPERSEDED_BYTES
        assert s[("kvgroomd_budget_headroom_bytes", None)] == 2**30 - used

    def test_with_only_the_engine_budget_the_budget_and_headroom_are_reported(
        self, fixture_cache: Path, start_daemon: Any
    ) -> None:
        """`--engine-budget` alone (the README's set-up): the budget gauge is the one eviction
        keeps below (at most the engine's), and the headroom is it less the usage."""
        d = start_daemon(cache_dir=fixture_cache, engine_budget=1024,
                         metrics={"listen": "127.0.0.1:0"})  # fmt: skip
        s = scrape(int(d.wait_for("metrics.listening")[0]["port"]))
        budget = s[("kvgroomd_budget_bytes", None)]
        assert 0 < budget <= 1024 * 2**20
        used = sum(v for (k, _), v in s.items() if k == "kvgroomd_snapshot_bytes")
        assert s[("kvgroomd_budget_headroom_bytes", None)] == budget - used

    def test_a_landed_file_is_counted_and_its_latency_observed(
        self, daemon: tuple[Any, int], fixture_cache: Path, kit: Any
    ) -> None:
        """A snapshot renamed into place shows up in the gauges and in the latency histogram."""
        d, port = daemon
        before = scrape(port)
        kit.write_snapshot(fixture_cache, b"<|User|>metrics test " * 40)
        d.wait_for("snapshot.added", timeout=10)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            after = scrape(port)
            if after.get(("kvgroomd_decision_latency_seconds_count", None), 0) >= 1:
                break
            time.sleep(0.05)
        assert after[("kvgroomd_decision_latency_seconds_count", None)] >= 1
        assert after[("kvgroomd_decision_latency_seconds_bucket", "+Inf")] >= 1
        assert 0 < after[("kvgroomd_decision_latency_seconds_sum", None)] < 5
        assert after[("kvgroomd_snapshots", "cold")] == before[("kvgroomd_snapshots", "cold")] + 1
        assert after[("kvgroomd_events_total", None)] > before[("kvgroomd_events_total", None)]

    def test_stops_cleanly_and_leaves_the_textfile(self, daemon: tuple[Any, int],
                                                   tmp_path: Path) -> None:  # fmt: skip
        """On SIGTERM the daemon exits 0, closes the port and leaves a parseable textfile."""
        d, port = daemon
        assert d.stop() == 0
        s = parse((tmp_path / "k.prom").read_text())
        assert s[("kvgroomd_unlinks_total", "superseded")] == 2
        assert sorted(p.name for p in tmp_path.glob("k.prom*")) == ["k.prom"]
        with pytest.raises(OSError):
            scrape(port)


class TestListen:
    def test_bare_port_binds_to_loopback(self, cli_inproc: Any, tmp_path: Path) -> None:
        """`metrics.listen: 9101` means 127.0.0.1:9101, never all interfaces."""
        cfg = tmp_path / "k.yaml"
        cfg.write_text(f"cache_dir: {tmp_path}\nmetrics:\n  listen: 9101\n")
        code, out, _ = cli_inproc("check-config", cfg)
        assert code == 0
        assert json.loads(out)["metrics_listen"] == "127.0.0.1:9101"

    def test_port_in_use_fails_with_status_1(self, fixture_cache: Path, start_daemon: Any,
                                             daemon: tuple[Any, int]) -> None:  # fmt: skip
        """A second daemon that cannot bind the metrics port logs metrics.failed and exits 1."""
        _, port = daemon
        second = start_daemon(cache_dir=fixture_cache, wait_ready=False,
                              metrics={"listen": f"127.0.0.1:{port}"})  # fmt: skip
        second.wait_for("metrics.failed")
        assert second.proc.wait(timeout=10) == 1

"""Integration fixtures.

The daemon as a subprocess with its JSON log parsed (`start_daemon`), and for
the operator-tool tests (test_cli_*.py): copies of the public fixture set
(`fixture_cache`) plus small files written with `Header.pack()` (`kit`), and
the commands run as real subprocesses (`run_cli`) or in-process (`cli_inproc`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from kvgroomd.cli import main
from kvgroomd.format.header import Header, Reason, sha1_hex
from kvgroomd.testing.daemon import DaemonProcess, write_config


def wait_until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll a condition on the directory (the daemon acts asynchronously)."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    """Factory: start a daemon with config keys; every one is stopped at teardown."""
    started: list[DaemonProcess] = []

    def start(env: dict[str, str] | None = None, wait_ready: bool = True,
              prefix: tuple[str, ...] = (), **config: Any) -> DaemonProcess:  # fmt: skip
        cfg = write_config(tmp_path / f"kvgroomd-{len(started)}.yaml", **config)
        d = DaemonProcess(cfg, env, prefix)
        started.append(d)
        if wait_ready:
            d.wait_for("daemon.ready", timeout=30)
        return d

    yield start
    for d in started:
        d.stop()


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    """An empty cache directory."""
    d = tmp_path / "kv"
    d.mkdir()
    return d


# -- operator tools (test_cli_*.py) ----------------------------------------

FIXTURE_TEMP = "c7bc6ea3ed6986e74ae831c8542f240f92879b62.kv.tmp.12345"

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def manifest(fixtures_dir: Path) -> dict[str, dict[str, Any]]:
    """The fixture manifest, by file name."""
    data = json.loads((fixtures_dir / "manifest.json").read_text())
    return {f["name"]: f for f in data["files"]}


def dead_pid() -> int:
    """A pid that named a process a moment ago and now names none."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _fill(d: Path, source: Path, manifest: dict[str, dict[str, Any]]) -> Path:
    d.mkdir()
    for name in manifest:
        shutil.copy2(source / name, d / name)
    temp = d / FIXTURE_TEMP
    orphan = temp.with_name(f"{FIXTURE_TEMP.rsplit('.', 1)[0]}.{dead_pid()}")
    temp.rename(orphan)
    old = time.time() - 7200
    os.utime(orphan, (old, old))
    return d


@pytest.fixture
def fixture_cache(tmp_path: Path, fixtures_dir: Path,
                  manifest: dict[str, dict[str, Any]]) -> Path:  # fmt: skip
    """A copy of every fixture file; the temp file's writer pid is a dead one,
    and it was last written two hours ago."""
    return _fill(tmp_path / "cache", fixtures_dir, manifest)


@pytest.fixture(scope="session")
def shared_fixture_cache(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path,
                         manifest: dict[str, dict[str, Any]]) -> Path:  # fmt: skip
    """Like `fixture_cache`, built once for read-only commands: do not modify it."""
    return _fill(tmp_path_factory.mktemp("shared") / "cache", fixtures_dir, manifest)


def write_snapshot(directory: Path, text: bytes, *, reason: Reason = Reason.COLD,
                   abi: int = 2, hits: int = 0, created_at: int | None = None,
                   payload: int = 4096, via_rename: bool = True) -> Path:  # fmt: skip
    """Write a valid snapshot of `text` the engine's way (temp file, rename)."""
    now = int(time.time()) if created_at is None else created_at
    header = Header(quant_bits=2, reason=reason, ext_flags=0, model_id=0, tokens=len(text),
                    hits=hits, ctx_size=32768, abi=abi, created_at=now, last_used=now,
                    payload_bytes=payload, text_bytes=len(text))  # fmt: skip
    sha = sha1_hex(text)
    body = header.pack() + text + b"DSV4" + b"\0" * (payload - 4)
    final = directory / f"{sha}.kv"
    tmp = directory / f"{sha}.kv.tmp.{os.getpid()}" if via_rename else final
    tmp.write_bytes(body)
    if via_rename:
        tmp.rename(final)
    return final


def listing(directory: Path) -> dict[str, tuple[int, int, int, int]]:
    """name -> (inode, size, mtime_ns, ctime_ns): any write or unlink shows up."""
    out = {}
    for e in os.scandir(directory):
        st = e.stat(follow_symlinks=False)
        out[e.name] = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    return out


def json_lines(text: str) -> list[dict[str, Any]]:
    """The JSON objects of a log, one per line."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def run_kvgroomd(
    *args: object, input: str | None = None, timeout: float = 30,
    prefix: tuple[str, ...] = (), **kw: Any,
) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Run `python -m kvgroomd ARGS...` (after `prefix`) and return the finished process."""
    return subprocess.run(
        [*prefix, sys.executable, "-m", "kvgroomd", *map(str, args)],
        input=input, capture_output=True, text=True, timeout=timeout, check=False, **kw,
    )  # fmt: skip


@pytest.fixture(scope="session")
def run_cli() -> Run:
    """`run_kvgroomd`, for tests and fixtures of any scope."""
    return run_kvgroomd


@pytest.fixture
def cli_config(tmp_path: Path) -> Callable[..., Path]:
    """Write a YAML config (JSON is YAML) and return its path."""

    def write(cache: Path, **extra: Any) -> Path:
        doc = {"cache_dir": str(cache), "log": {"format": "json"}, **extra}
        path = tmp_path / "kvgroomd.yaml"
        path.write_text(json.dumps(doc))
        return path

    return write


@pytest.fixture
def kit() -> SimpleNamespace:
    """The helper functions above, for test modules (which cannot import conftest)."""
    return SimpleNamespace(write_snapshot=write_snapshot, listing=listing,
                           json_lines=json_lines, dead_pid=dead_pid)  # fmt: skip


@pytest.fixture
def cli_inproc(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """Run `kvgroomd.cli.main(ARGS)` in this process: (status, stdout, stderr).
    For quick commands whose process boundary does not matter (usage errors, sorting)."""

    def run(*args: object) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:  # argparse: --help, --version, usage errors
            code = int(e.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return run

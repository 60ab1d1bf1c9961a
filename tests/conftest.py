"""Shared test fixtures: where the read-only ds4 snapshot fixtures live.

`fixtures_dir` is the folder; a test that takes `manifest_entry` runs once per
file the folder's manifest.json describes (id = the file name).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

# Real engine-written files, kept in the repository (tests/fixtures/README.md).
FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures" / "engine"


def _manifest_files() -> list[dict[str, Any]]:
    path = FIXTURES_DIR / "manifest.json"
    if not path.is_file():
        return []
    files: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))["files"]
    return files


@pytest.fixture(scope="session", autouse=True)
def state_directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """kvgroomd's state directory (the held-file journal) for this session,
    inherited by every daemon and command the tests start: never the user's."""
    path = tmp_path_factory.mktemp("state")
    old = os.environ.get("STATE_DIRECTORY")
    os.environ["STATE_DIRECTORY"] = str(path)
    yield path
    if old is None:
        del os.environ["STATE_DIRECTORY"]
    else:
        os.environ["STATE_DIRECTORY"] = old


@pytest.fixture(autouse=True)
def _structlog_config_restored() -> Iterator[None]:
    """structlog's configuration is process-global: a test that configures
    kvgroomd's logging (a level, a stream) must not decide what a later
    test's `capture_logs` sees (a debug line filtered out by an `info` level
    left behind made one test pass or fail by the order tests ran in)."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The read-only folder of sample snapshots and its manifest.json."""
    if not (FIXTURES_DIR / "manifest.json").is_file():
        pytest.fail(f"fixtures not found at {FIXTURES_DIR} (tests/fixtures/engine)")
    return FIXTURES_DIR


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize `manifest_entry` over every file of the fixture manifest."""
    if "manifest_entry" in metafunc.fixturenames:
        files = _manifest_files()
        if not files:
            pytest.fail(f"fixtures manifest not found in {FIXTURES_DIR}")
        metafunc.parametrize("manifest_entry", files, ids=[f["name"] for f in files])

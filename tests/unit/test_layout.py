"""The package's shape holds: pure modules stay pure, imports have no cycles,
and the flow event -> parse -> index -> decide -> unlink -> log is there in
the file list."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "kvgroomd"
PURE = ("format", "core")  # facts in, decisions out: no disk, clock, log or threads
IMPURE = {"os", "time", "structlog", "watchdog", "subprocess", "threading", "socket",
          "signal", "logging", "select", "fcntl", "ctypes"}  # fmt: skip


def modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PACKAGE.rglob("*.py")):
        parts = p.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def top_level_imports(path: Path) -> set[str]:
    """Modules imported at module level (not under TYPE_CHECKING, not inside
    functions, where an import is a deliberate late one)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


@pytest.mark.parametrize("name", [m for m in modules() if m.split(".")[1:2] and
                                  m.split(".")[1] in PURE])  # fmt: skip
def test_pure_modules_import_no_disk_clock_log_or_threads(name: str) -> None:
    """format/ and core/ import none of os, time, structlog, watchdog, ..."""
    imported = {m.split(".")[0] for m in top_level_imports(modules()[name])}
    assert imported & IMPURE == set()


def test_no_import_cycles() -> None:
    """No cycle among the package's module-level imports."""
    mods = modules()
    graph = {m: {t for t in top_level_imports(p) if t in mods and t != m}
             for m, p in mods.items()}  # fmt: skip
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(u: str, path: list[str]) -> None:
        state[u] = 1
        for v in sorted(graph[u]):
            if state.get(v) == 1:
                cycles.append([*path[path.index(v):], v])
            elif v not in state:
                visit(v, [*path, v])
        state[u] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_the_flow_is_in_the_file_list() -> None:
    """event -> parse -> index -> decide -> unlink -> log, one module each."""
    for part in ("daemon/watch.py", "daemon/read.py", "format/header.py", "core/index.py",
                 "core/groomer.py", "daemon/apply.py", "log.py"):  # fmt: skip
        assert (PACKAGE / part).is_file(), part

"""Only kvgroomd/daemon/apply.py may delete files: checked on the source itself."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "kvgroomd"
# Any call of these names deletes or shrinks a file (Path.unlink, os.unlink, ...).
DELETERS = {"unlink", "rmtree", "rmdir", "removedirs", "truncate", "ftruncate"}
# `remove` only as os.remove: list.remove and set.remove are harmless.
ALLOWED = {PACKAGE / "daemon" / "apply.py"}
# The engine emulator *is* the engine: deleting is its job (tests only).
EXEMPT_DIRS = {PACKAGE / "testing"}


def _sources() -> list[Path]:
    return [
        p for p in sorted(PACKAGE.rglob("*.py"))
        if p not in ALLOWED and not any(d in p.parents for d in EXEMPT_DIRS)
    ]  # fmt: skip


def _deleting_calls(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            fn = node.func
            if isinstance(fn, ast.Attribute):  # os.unlink, Path.unlink, f.truncate
                name, receiver = fn.attr, getattr(fn.value, "id", None)
                hit = name in DELETERS or (name == "remove" and receiver == "os")
            else:  # a bare name: only if imported from os/shutil under its own name
                name = getattr(fn, "id", "")
                hit = name in {"unlink", "rmtree", "rmdir", "removedirs", "ftruncate"}
            if hit:
                found.append(f"{path.name}:{node.lineno} {name}()")
    return found


class TestOnlyApplyDeletes:
    def test_the_package_has_sources_to_check(self):
        """The scan sees the package's modules (so the next test is not vacuous)."""
        names = {p.name for p in _sources()}
        assert {"groom.py", "loop.py", "evict.py", "supersede.py"} <= names

    @pytest.mark.parametrize("path", _sources(), ids=lambda p: p.name)
    def test_no_module_but_apply_py_deletes(self, path):
        """No call to unlink/remove/rmtree/truncate outside daemon/apply.py (Path.unlink included)."""
        assert _deleting_calls(path) == []

    def test_the_check_catches_path_unlink(self, tmp_path):
        """The AST check does flag `Path(...).unlink()`, which ruff's banned-api misses."""
        bad = tmp_path / "bad.py"
        bad.write_text("import os\nfrom pathlib import Path\nPath('x').unlink()\n"
                       "os.remove('y')\n[1].remove(1)\n")
        assert _deleting_calls(bad) == ["bad.py:3 unlink()", "bad.py:4 remove()"]

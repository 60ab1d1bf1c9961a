"""A broken installation (#11.11): a dependency that cannot be imported ends
the program with exit status 5 and one line on stderr, from `python -m
kvgroomd` and from the console script, and the systemd units do not restart
on that status."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kvgroomd.__main__ import EXIT_BROKEN_INSTALL

ROOT = Path(__file__).resolve().parents[3]


def _shadow(tmp_path: Path, module: str) -> dict[str, str]:
    """An environment in which importing `module` fails as a missing one does."""
    pkg = tmp_path / "shadow" / module
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        f'raise ModuleNotFoundError("No module named {module!r}", name={module!r})\n'
    )
    return {**os.environ, "PYTHONPATH": str(tmp_path / "shadow")}


@pytest.mark.parametrize("module", ["yaml", "structlog", "numpy"])
def test_python_m_kvgroomd_with_a_missing_dependency_exits_5(module, tmp_path, cache_dir):
    """`python -m kvgroomd run` without `module`: status 5 and one line naming it."""
    r = subprocess.run([sys.executable, "-m", "kvgroomd", "run", "--cache-dir", str(cache_dir)],
                       env=_shadow(tmp_path, module), capture_output=True, text=True,
                       timeout=30, check=False)  # fmt: skip
    assert r.returncode == EXIT_BROKEN_INSTALL, r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("kvgroomd: broken installation:") and module in r.stderr


def test_console_script_with_a_missing_dependency_exits_5(tmp_path):
    """The installed `kvgroomd` script behaves the same (its entry point is guarded)."""
    script = Path(sys.executable).parent / "kvgroomd"
    if not script.exists():
        pytest.skip("no console script beside this interpreter")
    r = subprocess.run([str(script), "check-config", "/nonexistent.yaml"],
                       env=_shadow(tmp_path, "yaml"), capture_output=True, text=True,
                       timeout=30, check=False)  # fmt: skip
    assert r.returncode == EXIT_BROKEN_INSTALL, r.stderr
    assert r.stderr.count("\n") == 1


@pytest.mark.parametrize("unit", ["kvgroomd.service", "kvgroomd@.service"])
def test_units_do_not_restart_a_broken_install(unit):
    """Both units list 2, 3 and 5 in RestartPreventExitStatus=."""
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.read(ROOT / "systemd" / unit)
    statuses = set(cp["Service"]["RestartPreventExitStatus"].split())
    assert {"2", "3", str(EXIT_BROKEN_INSTALL)} <= statuses

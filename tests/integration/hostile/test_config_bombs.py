"""Hostile config files (#11.4, #11.8): the real command line and the real
daemon, by file and by SIGHUP. Each case ends in a bounded one-line error and
exit status 3, or a refused reload, never a hang or a huge log line."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

# 545 bytes that expand to 9^9 strings (the "billion laughs").
BOMB = "".join(
    ["cache_dir: {dir}\n", 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n']
    + [f"{b}: &{b} [{','.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True)]
)
EXIT_CONFIG = 3


def hostile_files(tmp_path: Path, cache: Path) -> dict[str, Path]:
    """One config file per hostile case."""
    files = {
        "alias_bomb": BOMB.replace("{dir}", str(cache)),
        "deep": f"cache_dir: {cache}\nbudget: " + "[" * 20_000 + "]" * 20_000 + "\n",
        "long_value": f"cache_dir: {cache}\nbudget: '" + "x" * 60_000 + "'\n",
        "system_dir": "cache_dir: /etc\n",
        "root": "cache_dir: /\n",
        "budget_zero": f"cache_dir: {cache}\nbudget: 0\n",
        "fraction": f"cache_dir: {cache}\nbudget: 0.4B\n",
    }
    out = {}
    for name, text in files.items():
        out[name] = tmp_path / f"{name}.yaml"
        out[name].write_text(text)
    big = tmp_path / "big.yaml"
    with big.open("wb") as f:
        f.truncate(200 * 2**20)
    out["huge_file"] = big
    return out


def test_check_config_refuses_every_hostile_file_fast(tmp_path, cache_dir, run_cli):
    """`check-config` on each hostile file: exit 3, one short line on stderr,
    nothing on stdout, well under a second of work each."""
    for name, path in hostile_files(tmp_path, cache_dir).items():
        started = time.monotonic()
        r = run_cli("check-config", path, timeout=20)
        took = time.monotonic() - started
        assert r.returncode == EXIT_CONFIG, (name, r.returncode, r.stderr[-500:])
        assert r.stdout == "", name
        assert r.stderr.count("\n") == 1 and len(r.stderr) < 700, (name, r.stderr[:300])
        assert "Traceback" not in r.stderr, name
        assert took < 5, (name, took)  # interpreter start-up included; the bomb took 40 s


def test_run_refuses_a_bomb_with_exit_3(tmp_path, cache_dir, run_cli):
    """`run --config BOMB` exits 3 before doing anything."""
    path = hostile_files(tmp_path, cache_dir)["alias_bomb"]
    r = run_cli("run", "--config", path, timeout=20)
    assert r.returncode == EXIT_CONFIG
    assert r.stderr.startswith(f"kvgroomd: invalid configuration: {path}:2: anchors and aliases")


@pytest.mark.parametrize("case", ["alias_bomb", "deep", "long_value", "system_dir", "huge_file"])
def test_sighup_with_a_hostile_file_is_refused_and_the_daemon_stays_responsive(
    case, tmp_path, cache_dir, start_daemon
):
    """A SIGHUP reload of a hostile file logs one bounded daemon.reload_failed,
    keeps the previous config, and SIGTERM still stops the daemon at once."""
    d = start_daemon(cache_dir=cache_dir)
    hostile = hostile_files(tmp_path, cache_dir)[case]
    d.config_path.write_bytes(b"")  # replace the running config with the hostile one
    hostile.replace(d.config_path)
    d.signal(signal.SIGHUP)
    failed = d.wait_for("daemon.reload_failed", timeout=10)[0]
    assert failed["kept"] == "previous config"
    assert len(failed["error"]) <= 600
    assert all(len(str(r)) < 2000 for r in d.events())
    started = time.monotonic()
    assert d.stop(timeout=5) == 0
    assert time.monotonic() - started < 2

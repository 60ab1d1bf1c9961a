"""The hostile corpus, all at once: one directory holding every kind of entry
kvgroomd must never remove (testing.audit.plant: invalid, unknown-format,
agent, unknown-reason, temp, foreign, symlink, FIFO, directory, a file outside
behind a symlink) plus odd names (not UTF-8, a newline, 255 bytes, held-looking
foreign files, a socket), before
start and while running, under a budget of 1 byte with nothing protected as
young. Only the valid snapshots go; every other entry is left exactly as it
was; the daemon stays up."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from kvgroomd.daemon.apply import QUARANTINE_PREFIX
from kvgroomd.testing.audit import look, plant

OLD = 1_700_000_000


def _odd_entries(cache: Path, kit, tag: str) -> dict[Path, object]:
    odd = {
        os.fsdecode(b"\xff\xfe-not-utf8-" + tag.encode() + b".kv"): b"x",
        f"new\nline-{tag}.kv": b"x",
        ("n" * 240 + f"-{tag}.kv")[-255:]: b"x",
        f"{QUARANTINE_PREFIX}{'ab' * 20}.kv.{tag}": b"foreign held-looking file",
        f"{QUARANTINE_PREFIX}{tag}": b"foreign held-looking file",
    }
    for name, data in odd.items():
        (cache / name).write_bytes(data)
    sock_name = f"sock-{tag}.kv"
    cwd = os.getcwd()
    os.chdir(cache)  # a relative name: tmp paths can exceed AF_UNIX's 108 bytes
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(sock_name)
    finally:
        os.chdir(cwd)
    paths = [cache / n for n in odd] + [cache / sock_name]
    return {p: look(p) for p in paths}


def test_only_valid_snapshots_go_from_a_hostile_directory(tmp_path, kit, start_daemon):
    """Every hostile entry planted before start and while running stays as it
    was under a 1-byte budget; the valid snapshots are evicted."""
    cache = tmp_path / "kv"
    cache.mkdir()
    kept = {**plant(cache, tmp_path / "outside", "start"), **_odd_entries(cache, kit, "start")}
    valid = [kit.write_snapshot(cache, f"valid {i} ".encode() * 40, created_at=OLD)
             for i in range(3)]  # fmt: skip
    d = start_daemon(cache_dir=cache, budget=1, protect_new=0, reconcile_interval=0.3)
    kept |= plant(cache, tmp_path / "outside", "run") | _odd_entries(cache, kit, "run")
    valid.append(kit.write_snapshot(cache, b"valid while running " * 40, created_at=OLD))
    d.wait_for("snapshot.unlinked", count=len(valid), cause="budget", timeout=10)
    d.wait_for("reconcile.done", count=3, startup=False, timeout=10)
    time.sleep(0.3)
    assert {p: look(p) for p in kept} == kept
    assert not any(p.exists() for p in valid)
    gone = {Path(r["path"]).name for r in d.events("snapshot.unlinked")}
    assert gone == {p.name for p in valid}
    assert d.events("observer.died") == d.events("daemon.failed") == []
    assert d.proc.poll() is None


def test_a_payload_size_past_2_63_is_never_evicted(tmp_path, kit, start_daemon):
    """A header whose payload_bytes is 2^63 + 5 (no file is that long) is invalid
    on every read path, at start (bulk) and at run time (one file): never evicted."""
    cache = tmp_path / "kv"
    cache.mkdir()

    def plant_huge(tag: str) -> Path:
        path = kit.write_snapshot(cache, f"payload past 2^63 {tag} ".encode() * 20,
                                  created_at=OLD)  # fmt: skip
        raw = bytearray(path.read_bytes())
        raw[40:48] = (2**63 + 5).to_bytes(8, "little")
        tmp = path.with_name(path.name + ".tmp.1")
        tmp.write_bytes(raw)
        os.rename(tmp, path)
        return path

    huge = [plant_huge("start")]
    d = start_daemon(cache_dir=cache, budget=1, protect_new=0, reconcile_interval=0.3)
    huge.append(plant_huge("run"))
    d.wait_for("reconcile.done", count=3, startup=False, timeout=10)
    assert d.events("snapshot.unlinked") == []
    assert all(p.exists() for p in huge)

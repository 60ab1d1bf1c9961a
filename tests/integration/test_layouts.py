"""Every layout's real files in real directories, through the commands an
operator runs: supersession along each layout's chain, eviction of each
layout (the deleter's header re-check passing), and mixed directories where
nothing is misread and nothing of another layout is touched unless asked."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

LAYOUTS = Path(__file__).resolve().parents[1] / "fixtures" / "layouts"
ENGINE = Path(__file__).resolve().parents[1] / "fixtures" / "engine"
FOLDERS = {  # folder -> the engine layout that writes it
    "pr186-head-v2-codec-at-7": "codec-at-7",
    "pr186-fork-v2-codec-at-21-shuffle-hc": "codec-at-21",
    "pr186-fork-v2-codec-at-21-plain-lz4": "codec-at-21",
    "nazerim-v2-72-byte-header": "header-72",
    "redhunt07-v1-abi4": "gb10",
}
CONTINUED_2048 = "0497dde05c7a91f863063e493153070c35b03d48.kv"  # chain A, superseded
CONTINUED_4096 = "841bf2c5596e339d3b3e1592d03742c444a54d2a.kv"  # chain A, supersedes it
COLD_1024 = "21af118bc5834d7738a6e70ea8ff82ec6d41b90c.kv"  # chain A's cold anchor
# A mixed directory: one file per name, each from another layout (the same
# names recur across the folders: two layouts of one name cannot coexist).
MIXED = {
    CONTINUED_2048: "nazerim-v2-72-byte-header",
    "080f61fce8c053f1eb2f1a78fe084c20ebe2b85f.kv": "pr186-fork-v2-codec-at-21-plain-lz4",
    COLD_1024: "pr186-head-v2-codec-at-7",
    CONTINUED_4096: "redhunt07-v1-abi4",
    "b077410e9e5b36ca3e8d53995b7940958d24a0b6.kv": "pr186-fork-v2-codec-at-21-shuffle-hc",
    "70113efa95c9680451bb593217060233c19a3848.kv": "pr186-head-v2-codec-at-7",
}


def copy_folder(folder: str, to: Path) -> Path:
    to.mkdir()
    for p in (LAYOUTS / folder).glob("*.kv"):
        shutil.copy2(p, to / p.name)
    return to


def mixed(to: Path) -> Path:
    """The engine fixtures' snapshots (upstream and legacy) plus MIXED."""
    to.mkdir()
    manifest = json.loads((ENGINE / "manifest.json").read_text())
    for f in manifest["files"]:
        if f["name"].endswith(".kv") and f["name"] != "sysprompt.kv":
            shutil.copy2(ENGINE / f["name"], to / f["name"])
    for name, folder in MIXED.items():
        shutil.copy2(LAYOUTS / folder / name, to / name)
    return to


def config(path: Path, cache: Path, **keys: Any) -> Path:
    doc = {"cache_dir": str(cache), "log": {"format": "json"}, "protect_new": 0, **keys}
    path.write_text(json.dumps(doc))
    return path


def groom(run_cli: Any, cfg: Path) -> list[dict[str, Any]]:
    p = run_cli("groom", "--once", "--config", cfg)
    assert p.returncode in (0, 4), p.stderr
    return [json.loads(x) for x in p.stdout.splitlines() if x.startswith("{")]


def unlinked(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """name -> the snapshot.unlinked line; and no refusal or failure anywhere."""
    assert not [x for x in lines if x["event"] in ("snapshot.unlink_refused",
                                                   "snapshot.unlink_failed")]  # fmt: skip
    return {Path(x["path"]).name: x for x in lines if x["event"] == "snapshot.unlinked"}


def identities(directory: Path) -> dict[str, tuple[int, int, int]]:
    return {e.name: (e.inode(), e.stat().st_size, e.stat().st_mtime_ns)
            for e in os.scandir(directory)}  # fmt: skip


@pytest.mark.parametrize("folder", sorted(FOLDERS))
def test_each_layouts_chain_is_superseded_under_its_engine(run_cli: Any, tmp_path: Path,
                                                           folder: str) -> None:  # fmt: skip
    """Under its engine's layout, the 2048-token continued file of chain A is
    superseded by the 4096-token one (the manifest's prefix_of); the cold
    anchor and the rest stay. ls shows the chain in the files' layout."""
    cache = copy_folder(folder, tmp_path / "kv")
    cfg = config(tmp_path / "c.yaml", cache, engine={"layout": FOLDERS[folder]})
    p = run_cli("ls", "--config", cfg, "--json")
    assert p.returncode == 0, p.stderr
    rows = {r["name"]: r for r in json.loads(p.stdout)["snapshots"]}
    assert {r["layout"] for r in rows.values()} == {FOLDERS[folder]}
    assert all(r["engine_visible"] for r in rows.values())
    assert rows[CONTINUED_2048]["superseded_by"] == CONTINUED_4096[:40]
    assert rows[COLD_1024]["covered"] and rows[COLD_1024]["superseded_by"] is None
    gone = unlinked(groom(run_cli, cfg))
    assert set(gone) == {CONTINUED_2048}
    assert gone[CONTINUED_2048]["cause"] == "superseded"
    assert gone[CONTINUED_2048]["superseded_by"] == CONTINUED_4096[:40]
    assert not (cache / CONTINUED_2048).exists() and (cache / COLD_1024).exists()


@pytest.mark.parametrize("folder", sorted(FOLDERS))
def test_each_layout_is_evicted_under_its_engine(run_cli: Any, tmp_path: Path,
                                                 folder: str) -> None:  # fmt: skip
    """A one-byte budget under the files' own engine evicts every one of
    them, each through the deleter's re-check of its header bytes; usage is
    counted from the files' sizes (compressed payloads as they are on disk)."""
    cache = copy_folder(folder, tmp_path / "kv")
    before = {p.name: p.stat().st_size for p in cache.iterdir()}
    cfg = config(tmp_path / "c.yaml", cache, engine={"layout": FOLDERS[folder]}, budget=1,
                 supersede=False)  # fmt: skip
    p = run_cli("stats", "--config", cfg, "--json")
    assert json.loads(p.stdout)["budget"]["used"] == sum(before.values())
    gone = unlinked(groom(run_cli, cfg))
    assert set(gone) == set(before)
    assert {x["cause"] for x in gone.values()} == {"budget"}
    assert {x["size"] for x in gone.values()} <= set(before.values())
    assert list(cache.iterdir()) == []


@pytest.mark.parametrize("folder", sorted(FOLDERS))
def test_undetected_engine_leaves_another_layout_alone(run_cli: Any, tmp_path: Path,
                                                       folder: str) -> None:  # fmt: skip
    """With no engine named (kvgroomd counts as upstream's engine) a fork's
    files are read in their layout, reported apart in stats, and left alone
    even over a one-byte budget; evict_other_layouts: true grooms them."""
    cache = copy_folder(folder, tmp_path / "kv")
    before = identities(cache)
    cfg = config(tmp_path / "c.yaml", cache, budget=1)
    st = json.loads(run_cli("stats", "--config", cfg, "--json").stdout)
    sizes = sum(v[1] for v in before.values())
    assert (st["snapshots"]["count"], st["budget"]["used"]) == (0, 0)
    assert st["other_layouts"]["count"] == len(before)
    assert st["other_layouts"]["bytes"] == sizes
    assert set(st["other_layouts"]["by_layout"]) == {FOLDERS[folder]}
    lines = groom(run_cli, cfg)
    assert unlinked(lines) == {}
    apart = [x for x in lines if x["event"] == "snapshot.other_layout"]
    assert {x["layout"] for x in apart} == {FOLDERS[folder]} and len(apart) == len(before)
    assert identities(cache) == before
    text = run_cli("stats", "--config", cfg).stdout
    assert f"other layouts   {len(before)} files" in text
    cfg = config(tmp_path / "c.yaml", cache, budget=1, evict_other_layouts=True)
    assert set(unlinked(groom(run_cli, cfg))) == set(before)


class TestMixedDirectory:
    @pytest.mark.parametrize("engine", ["detect", "upstream", "codec-at-21", "codec-at-7",
                                        "header-72", "gb10"])  # fmt: skip
    def test_nothing_is_misread_and_only_the_engines_files_go(self, run_cli: Any,
                                                              tmp_path: Path,
                                                              engine: str) -> None:  # fmt: skip
        """Upstream, legacy and five fork layouts side by side: ls reads each
        file in its own layout; the engine's files (and legacy ones) are
        counted and evicted over a one-byte budget; every other layout's file
        is listed apart and stays byte for byte, inode for inode."""
        cache = mixed(tmp_path / "kv")
        keys: dict[str, Any] = {"budget": 1}
        if engine != "detect":
            keys["engine"] = {"layout": engine}
        cfg = config(tmp_path / "c.yaml", cache, **keys)
        doc = json.loads(run_cli("ls", "--config", cfg, "--json").stdout)
        read_as = {r["name"]: r["layout"] for r in doc["snapshots"]}
        read_as |= {o["name"]: o["why"] for o in doc["others"] if o["kind"] == "other_layout"}
        for name, folder in MIXED.items():
            assert read_as[name] == FOLDERS[folder], name
        lists = {"detect": {"upstream"}, "upstream": {"upstream"},
                 "codec-at-21": {"upstream", "codec-at-21"},
                 "codec-at-7": {"upstream", "legacy", "gb10", "codec-at-21", "codec-at-7"},
                 "header-72": {"upstream", "header-72"}, "gb10": {"gb10"}}[engine]  # fmt: skip
        counted = {n for n, lay in read_as.items() if lay in lists | {"legacy"}}
        assert {r["name"] for r in doc["snapshots"]} == counted
        before = identities(cache)
        gone = unlinked(groom(run_cli, cfg))
        after = identities(cache)
        for name in read_as:
            if name in counted:
                continue
            assert after[name] == before[name], name  # another engine's: untouched
        assert set(gone) <= counted
        evictable = {r["name"] for r in doc["snapshots"] if r["protected"] is None}
        assert evictable <= set(gone)

    def test_supersession_never_crosses_layouts(self, run_cli: Any, tmp_path: Path) -> None:
        """With every layout counted (evict_other_layouts) and no budget, the
        72-byte header's 2048-token continued file stays, though its text is a
        prefix of the gb10 4096-token one: no engine loads both."""
        cache = mixed(tmp_path / "kv")
        cfg = config(tmp_path / "c.yaml", cache, evict_other_layouts=True)
        doc = json.loads(run_cli("ls", "--config", cfg, "--json").stdout)
        rows = {r["name"]: r for r in doc["snapshots"]}
        assert rows[CONTINUED_2048]["layout"] == "header-72"
        assert rows[CONTINUED_4096]["layout"] == "gb10"
        assert rows[CONTINUED_2048]["superseded_by"] is None
        assert not rows[CONTINUED_2048]["covered"]
        gone = unlinked(groom(run_cli, cfg))
        assert CONTINUED_2048 not in gone and (cache / CONTINUED_2048).exists()
        # the engine fixtures' own chain still supersedes within upstream
        assert {x["cause"] for x in gone.values()} <= {"superseded"}
        assert all(rows[n]["layout"] == "upstream" for n in gone)

    def test_a_touched_file_changes_layout_and_is_judged_again(self, run_cli: Any,
                                                               tmp_path: Path) -> None:  # fmt: skip
        """A compressing engine rewrites an upstream file's header as version 2
        when it serves a hit (same name, same inode): under an upstream engine
        that file then leaves the count, reported apart, and is never evicted."""
        cache = mixed(tmp_path / "kv")
        doc = json.loads(run_cli("ls", cache, "--json").stdout)
        victim = next(r for r in doc["snapshots"] if r["layout"] == "upstream")
        path = cache / victim["name"]
        with open(path, "r+b") as fp:  # version 2; bytes 21-23 stay 0: codec none
            fp.seek(3)
            fp.write(b"\x02")
        cfg = config(tmp_path / "c.yaml", cache, budget=1, engine={"layout": "upstream"})
        doc = json.loads(run_cli("ls", "--config", cfg, "--json").stdout)
        others = {o["name"]: o for o in doc["others"]}
        assert others[victim["name"]]["kind"] == "other_layout"
        assert others[victim["name"]]["why"] == "codec-at-21"
        before = identities(cache)[victim["name"]]
        assert victim["name"] not in unlinked(groom(run_cli, cfg))
        assert identities(cache)[victim["name"]] == before


@pytest.mark.parametrize("folder", sorted(FOLDERS))
def test_a_temp_file_of_each_layout_announces_its_final_size(run_cli: Any, tmp_path: Path,
                                                             folder: str) -> None:  # fmt: skip
    """A `<sha>.kv.tmp.<pid>` being written in any layout is listed with the
    size its header announces, read in that layout (the 72-byte header's
    text length sits past byte 52), and is never touched."""
    cache = tmp_path / "kv"
    cache.mkdir()
    src = LAYOUTS / folder / CONTINUED_4096
    temp = cache / f"{CONTINUED_4096}.tmp.{os.getpid()}"  # our pid: a live writer
    shutil.copy2(src, temp)
    cfg = config(tmp_path / "c.yaml", cache, engine={"layout": FOLDERS[folder]}, budget=1)
    doc = json.loads(run_cli("ls", "--config", cfg, "--json").stdout)
    (other,) = doc["others"]
    assert (other["kind"], other["why"]) == ("temp", "writing")
    assert other["expected_size"] == src.stat().st_size
    before = identities(cache)
    assert unlinked(groom(run_cli, cfg)) == {}
    assert identities(cache) == before


@pytest.mark.parametrize("engine", ["detect", "codec-at-21"])
def test_the_start_up_helper_reads_as_the_engine_does(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path, engine: str) -> None:  # fmt: skip
    """A large start-up is read half by a helper process: it reads with the
    engine's layout too, so both halves agree on what is the engine's."""
    from kvgroomd.config import Config  # noqa: PLC0415
    from kvgroomd.daemon import groom  # noqa: PLC0415
    from kvgroomd.daemon.pinned import PinnedDir  # noqa: PLC0415
    from kvgroomd.format.engine import EngineOptions  # noqa: PLC0415

    cache = tmp_path / "kv"
    cache.mkdir()
    data = (LAYOUTS / "pr186-fork-v2-codec-at-21-shuffle-hc" / COLD_1024).read_bytes()
    for i in range(60):
        (cache / f"{i:040x}.kv").write_bytes(data)
    monkeypatch.setattr(groom, "_FORK_AT", 10)
    config = Config(cache_dir=cache, engine=EngineOptions(layout=engine))
    with PinnedDir.at(cache) as directory:
        core, invalid, _texts = groom.survey(directory, config.rules(), 1.8e9,
                                             reading=config.reading)  # fmt: skip
    if engine == "detect":
        assert len(core.index) == 0
        assert [b.why for b in invalid] == ["other_layout"] * 60
    else:
        assert len(core.index) == 60 and invalid == []


class TestFingerprints:
    """The nazerim/ds4 engine stamps its weights fingerprint on every file
    it writes (bytes 56..63) and loads a file whose fingerprint is 0 or its
    own. Its chain A with fingerprints set: the 2048-token file goes when
    the 4096-token one can serve everyone who loads it, at start-up and when
    the 4096 lands alike (tests/unit/test_fingerprints.py: the same cases
    through the pure core)."""

    F, G = 0x9E3779B97F4A7C15, 2**64 - 1
    # (fingerprint of the cold 1024, of the 2048 (O), of the 4096 (N)), does O go?
    CASES = (
        pytest.param((F, F, F), True, id="one-engine"),
        pytest.param((G, G, F), False, id="two-engines"),
        pytest.param((G, G, 0), True, id="N-loaded-by-every-engine"),
        pytest.param((0, 0, F), False, id="O-loaded-by-every-engine"),
    )
    MARKER = "080f61fce8c053f1eb2f1a78fe084c20ebe2b85f.kv"  # an evict file: never goes

    @classmethod
    def write(cls, cache: Path, name: str, fp: int) -> None:
        """The fixture as the engine whose fingerprint is `fp` stores it
        (written aside, then renamed into place)."""
        raw = bytearray((LAYOUTS / "nazerim-v2-72-byte-header" / name).read_bytes())
        raw[56:64] = fp.to_bytes(8, "little")
        temp = cache / f"{name}.tmp.4242"
        temp.write_bytes(bytes(raw))
        temp.rename(cache / name)

    @pytest.mark.parametrize(("fps", "gone"), CASES)
    def test_at_start_up(self, run_cli: Any, tmp_path: Path, fps: tuple[int, int, int],
                         gone: bool) -> None:  # fmt: skip
        """All files there before kvgroomd starts: ls and a groom pass agree."""
        cache = tmp_path / "kv"
        cache.mkdir()
        for name, fp in zip((COLD_1024, CONTINUED_2048, CONTINUED_4096), fps, strict=True):
            self.write(cache, name, fp)
        self.write(cache, self.MARKER, self.F)
        cfg = config(tmp_path / "c.yaml", cache, engine={"layout": "header-72"})
        rows = {r["name"]: r for r in json.loads(run_cli("ls", "--config", cfg,
                                                         "--json").stdout)["snapshots"]}  # fmt: skip
        assert rows[CONTINUED_2048]["superseded_by"] == (CONTINUED_4096[:40] if gone else None)
        # Why two files pair or not is visible: each one's fingerprint.
        assert [rows[n]["model_fp"] for n in (COLD_1024, CONTINUED_2048, CONTINUED_4096)] == [
            f"{fp:016x}" for fp in fps]
        assert set(unlinked(groom(run_cli, cfg))) == ({CONTINUED_2048} if gone else set())
        assert (cache / CONTINUED_2048).exists() is not gone

    @pytest.mark.parametrize(("fps", "gone"), CASES)
    def test_when_the_longer_file_lands(self, start_daemon: Any, tmp_path: Path,
                                        fps: tuple[int, int, int], gone: bool) -> None:  # fmt: skip
        """The daemon runs; the 4096 lands after the rest: the same verdict."""
        cache = tmp_path / "kv"
        cache.mkdir()
        self.write(cache, COLD_1024, fps[0])
        self.write(cache, CONTINUED_2048, fps[1])
        d = start_daemon(cache_dir=cache, protect_new=0, engine={"layout": "header-72"})
        assert d.events("daemon.ready")[0]["snapshots"] == 2
        self.write(cache, CONTINUED_4096, fps[2])
        d.wait_for("snapshot.added", sha=CONTINUED_4096[:40])
        # Events are handled in order: once the next file is in, the 4096's
        # landing has been carried out whole.
        self.write(cache, self.MARKER, self.F)
        d.wait_for("snapshot.added", sha=self.MARKER[:40])
        gone_now = {Path(r["path"]).name for r in d.events("snapshot.unlinked")}
        assert gone_now == ({CONTINUED_2048} if gone else set())
        if gone:
            assert d.events("snapshot.unlinked")[0]["superseded_by"] == CONTINUED_4096[:40]
        assert (cache / CONTINUED_2048).exists() is not gone

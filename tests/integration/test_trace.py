"""The activity trace beside the engine emulator: recorded by the real daemon
process over real files, replayed by `kvgroomd simulate --trace`.

The emulator (kvgroomd.testing) writes, touches, consumes and evicts the
snapshots of chats; the daemon records what it sees; the tests read the
trace files it wrote and replay them.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import replace
from pathlib import Path

import structlog

from kvgroomd.config import Config, TraceSettings
from kvgroomd.core.groomer import Note
from kvgroomd.daemon.groom import DiskGroomer
from kvgroomd.daemon.trace import FLUSH_BYTES, Recorder, open_trace
from kvgroomd.format.header import Reason
from kvgroomd.sim import trace as fmt
from kvgroomd.sim.tracecli import read_trace, trace_files
from kvgroomd.testing.chat import Conversation, system_prompt
from kvgroomd.testing.engine import Engine, MiB, conversation, populate
from kvgroomd.testing.traffic import PROTECT_NEW, chats

MARKER = b"SECRET-PROMPT-MARKER-4711"
# What the recording says against what the emulator served; a replay under
# the recorded config, and at twice the engine's budget against the emulator
# run there. bench/trace_fidelity.py measured 0.0 % for the first two on 6
# seeds of 120 requests (as here) and of 300, and -2.9 .. +2.9 % at twice
# the budget. This test, 15 runs on a loaded 2-core machine (its two
# emulator runs at once, beside other agents' suites): 0.0 % for the
# recording; the replay 0.0 % but once -6.3 % (the live daemon chose other
# victims than the replayed one at one store); at twice the budget -7.3 ..
# +1.5 % (the emulator's own run at 3200 MiB varied by 7 %).
RECORDED_TOLERANCE = 0.05
REPLAY_TOLERANCE = 0.10
BIGGER_TOLERANCE = 0.15


def _settle(cache_dir: Path, d, quiet: float = 1.0, timeout: float = 30.0) -> None:
    """Wait until the daemon's log has been quiet for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    seen = -1
    while time.monotonic() < deadline:
        n = len(d.records)
        if n == seen:
            return
        seen = n
        time.sleep(quiet)


def _windows(data: bytes, k: int) -> set[bytes]:
    return {data[i : i + k] for i in range(len(data) - k + 1)}


class TestRecording:
    def test_the_trace_holds_no_prompt_text(self, cache_dir, start_daemon, state_directory):
        """Texts full of a marker are stored, hit and consumed; no 12-byte piece of any
        text, no SHA-1 of one, and no file name is in any trace file."""
        d = start_daemon(cache_dir=cache_dir, trace="trace.jsonl", engine_budget=4096)
        engine = Engine(cache_dir, budget_bytes=4096 * MiB)
        texts = []
        for seed in range(4):
            conv = Conversation(seed, system=[MARKER, *system_prompt(seed)])
            conv.grow_to(3000 + 11000 * seed)
            for k in sorted({1500, len(conv) // 2, len(conv)}):
                text = conv.text(k)
                texts.append(text)
                path = engine.store(text, k, Reason.CONTINUED if k < len(conv) else Reason.EVICT)
            d.wait_for("snapshot.added", sha=path.name[:40], timeout=30)  # then a hit on it
            hit = engine.lookup(conv.text() + MARKER + b" more")  # a hit (consumed when long)
            assert hit is not None
            event = "snapshot.removed" if hit.consumed else "snapshot.updated"
            d.wait_for(event, sha=hit.name[:40], timeout=30)
        wait_for_trace(d)
        assert d.stop() == 0
        files = trace_files(state_directory / "trace.jsonl")
        assert files and not list(cache_dir.glob("trace*"))
        data = b"".join(p.read_bytes() for p in files)
        assert MARKER not in data
        trace_pieces = _windows(data, 12)
        for text in texts:
            assert not (_windows(text, 12) & trace_pieces)
            sha = hashlib.sha1(text).hexdigest().encode()
            assert sha not in data and sha[:16] not in data
        for p in cache_dir.iterdir():
            assert p.name[:16].encode() not in data
        trace = read_trace(state_directory / "trace.jsonl")
        assert {e.kind for e in trace.events} >= {fmt.ADDED, fmt.EXTENDS, fmt.DECIDED}
        assert any(e.kind == fmt.UPDATED and e.hits for e in trace.events)
        assert any(e.cause == fmt.CONSUMED for e in trace.events)

    def test_a_save_extends_the_sessions_last_save_even_once_gone(self, cache_dir, start_daemon,
                                                                  state_directory):
        """The core proves relations between files on disk together; the recorder
        also proves, when idle, which removed saves a new save extends (a
        session's next save extends its last one, evicted meanwhile)."""
        d = start_daemon(cache_dir=cache_dir, trace="gone.jsonl")
        engine = Engine(cache_dir, budget_bytes=None)
        conv = conversation(5, 3000)
        first = engine.store(conv.text(1500), 1500, Reason.EVICT)
        d.wait_for("snapshot.added", sha=first.name[:40])
        engine.files.delete(first.name, "evict", time.time())  # the engine evicts it
        d.wait_for("snapshot.removed", sha=first.name[:40])
        other = engine.store(conversation(6, 2000).text(2000), 2000, Reason.EVICT)
        second = engine.store(conv.text(3000), 3000, Reason.EVICT)
        d.wait_for("snapshot.added", sha=second.name[:40])
        wait_for_trace(d)
        assert d.stop() == 0
        ids = fmt.Ids((state_directory / "trace.key").read_bytes())
        trace = read_trace(state_directory / "gone.jsonl")
        pairs = {(n.split(":")[1], o.split(":")[1]) for n, o in trace.relations}
        assert (ids.of(second.name), ids.of(first.name)) in pairs
        assert (ids.of(other.name), ids.of(first.name)) not in pairs

    def test_a_consume_is_told_by_a_landing_kvgroomd_removes_at_once(self, tmp_path):
        """The engine consumes a long save (a hit that unlinks it); the live
        session's next store extends it and lands over kvgroomd's budget, so
        kvgroomd decides to remove it at once (out of the index): the recorder
        still reads its text, and records a consume (a hit), not an eviction."""
        groomer, recorder, engine = _in_process(tmp_path, budget=500 * MiB)
        conv = conversation(7, 42000)
        save = engine.store(conv.text(31000), 31000, Reason.EVICT)  # over cold_max_tokens
        groomer.landed(save.name, time.time())
        assert engine.lookup(conv.text(41000)).consumed
        groomer.gone(save.name)
        nxt = engine.store(conv.text(40960), 40960, Reason.CONTINUED)
        groomer.landed(nxt.name, time.time())
        assert not nxt.exists()  # kvgroomd removed it for its budget
        recorder.close()
        trace = read_trace(recorder.path)
        causes = {e.id.split(":")[1]: e.cause for e in trace.events if e.kind == fmt.ENGINE}
        assert causes == {recorder.ids.of(save.name): fmt.CONSUMED}

    def test_a_landing_extends_files_removed_before_it_whatever_their_reason(self, tmp_path):
        """A checkpoint the engine evicted, then a longer one of the session
        that kvgroomd removes at once: the trace knows the longer extends the
        evicted (the core proves relations only among files present)."""
        groomer, recorder, engine = _in_process(tmp_path, budget=300 * MiB)
        conv = conversation(8, 21000)
        first = engine.store(conv.text(10240), 10240, Reason.CONTINUED)
        groomer.landed(first.name, time.time())
        engine.files.delete(first.name, "evict", time.time())  # the engine evicts it
        groomer.gone(first.name)
        other = engine.store(conversation(9, 3000).text(3000), 3000, Reason.EVICT)
        groomer.landed(other.name, time.time())
        second = engine.store(conv.text(20480), 20480, Reason.CONTINUED)
        groomer.landed(second.name, time.time())
        assert not second.exists()  # kvgroomd removed it for its budget
        recorder.close()
        pairs = {(n.split(":")[1], o.split(":")[1]) for n, o in read_trace(recorder.path).relations}
        ids = recorder.ids
        assert (ids.of(second.name), ids.of(first.name)) in pairs
        assert (ids.of(other.name), ids.of(first.name)) not in pairs

    def test_a_file_the_deleter_puts_back_was_not_removed_by_the_engine(self, tmp_path):
        """kvgroomd decides to unlink a file the engine has just hit: its deleter
        renames it aside, finds the header changed and puts it back. The watcher
        then reports it gone and landed again: no engine removal, one hit."""
        groomer, recorder, engine = _in_process(tmp_path, budget=1 << 40)
        path = engine.store(conversation(3, 3000).text(3000), 3000, Reason.EVICT)
        groomer.landed(path.name, time.time())
        st = path.stat()
        engine.touch(path.name)  # a hit the daemon has not read yet, at the same mtime
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        groomer.core.reconfigure(replace(groomer.core.rules, budget=1))
        groomer.tick(time.time())  # decided, renamed aside, put back: changed
        assert path.exists()
        groomer.gone(path.name)  # what the watcher saw of the rename and the link back
        groomer.landed(path.name, time.time())
        recorder.close()
        events = sorted(read_trace(recorder.path).events, key=lambda e: e.t)
        assert any(e.kind == fmt.DECIDED and e.result == "changed" for e in events)
        assert not [e for e in events if e.kind == fmt.ENGINE]
        assert sum(fmt.hit_counts(events)[0]) == 1

    def test_a_trace_inside_the_cache_dir_is_refused(self, cache_dir, tmp_path, run_cli):
        """trace: <cache_dir>/x is a config error naming file, line and key (exit 3)."""
        cfg = tmp_path / "kvgroomd.yaml"
        cfg.write_text(f"cache_dir: {cache_dir}\nlog: {{format: json}}\n"
                       f"trace:\n  max_size: 64MiB\n  path: {cache_dir}/trace.jsonl\n")
        for command in (("check-config", cfg), ("run", "--config", cfg)):
            done = run_cli(*command)
            assert done.returncode == 3, done.stderr
            assert f"{cfg}:5: trace.path: {cache_dir}/trace.jsonl is inside cache_dir" in (
                done.stderr)
        assert list(cache_dir.iterdir()) == []


def _in_process(tmp_path: Path, *, budget: int) -> tuple[DiskGroomer, Recorder, Engine]:
    """The daemon's groomer and recorder in this process (events handed over
    by the test, in the order the daemon would see them) beside an emulator
    whose engine never evicts; kvgroomd's budget `budget`."""
    cache = tmp_path / "kv"
    cache.mkdir()
    config = Config(cache_dir=cache, budget=budget, protect_new=0.0,
                    trace=TraceSettings(tmp_path / "state" / "t.jsonl"))  # fmt: skip
    log = structlog.get_logger()
    recorder = open_trace(config, log)
    assert recorder is not None
    groomer = DiskGroomer(config, log, trace=recorder)
    groomer.reconcile(time.time(), startup=True)
    return groomer, recorder, Engine(cache, budget_bytes=None)


def wait_for_trace(d, timeout: float = 30.0) -> None:
    """Wait until the daemon has handled what the engine did (its log goes quiet)."""
    _settle(Path(), d, timeout=timeout)


class TestReplay:
    def test_replays_match_what_the_engine_served(self, tmp_path, start_daemon,
                                                  state_directory, run_cli):  # fmt: skip
        """Chat traffic beside the emulator and a recording daemon at an engine
        budget of 1600 MiB, and the same traffic at 3200 MiB. The trace holds
        what the emulator served; replayed under its own config it gives that
        again, and with the engine's budget set to 3200 MiB, what the emulator
        served at 3200 MiB (bench/trace_fidelity.py measures 6 seeds)."""
        served: dict[int, int] = {}
        daemons = {}
        for mib in (1600, 3200):
            (tmp_path / f"kv{mib}").mkdir()
            daemons[mib] = start_daemon(cache_dir=tmp_path / f"kv{mib}", engine_budget=mib,
                                        trace=f"replay{mib}.jsonl", protect_new=PROTECT_NEW)

        def serve(mib: int) -> None:
            served[mib] = chats(tmp_path / f"kv{mib}", seed=1, requests=120,
                                budget=mib * MiB).saved  # fmt: skip

        bigger_run = threading.Thread(target=serve, args=(3200,))  # at once: half the time
        bigger_run.start()
        serve(1600)
        bigger_run.join()
        for d in daemons.values():
            wait_for_trace(d)
            assert d.stop() == 0
        trace = state_directory / "replay1600.jsonl"
        done = run_cli("simulate", "--trace", trace, "--json", timeout=120)
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout)
        recorded = out["recorded"]["tokens_from_disk"]
        replayed = out["runs"][0]["tokens_from_disk"]
        done = run_cli("simulate", "--trace", trace, "--json", "--set", "engine_budget=3200MiB",
                       timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr
        bigger = json.loads(done.stdout)["runs"][0]
        print(json.dumps({"emulator": served, "recorded": recorded, "replayed": replayed,
                          "replayed_3200": bigger["tokens_from_disk"]}))  # fmt: skip
        assert served[1600] > 0 and out["runs"][0]["estimate"]["room"] == "same"
        assert abs(recorded - served[1600]) <= RECORDED_TOLERANCE * served[1600]
        assert abs(replayed - served[1600]) <= REPLAY_TOLERANCE * served[1600]
        assert bigger["estimate"]["room"] == "more"
        assert abs(bigger["tokens_from_disk"] - served[3200]) <= BIGGER_TOLERANCE * served[3200]

    def test_a_grid_of_settings_is_replayed_and_drawn(self, cache_dir, start_daemon,
                                                      state_directory, run_cli):  # fmt: skip
        """Every combination of the --set values, labelled by its settings, each
        saying how its estimate errs; and a plot."""
        d = start_daemon(cache_dir=cache_dir, trace="grid.jsonl", engine_budget=1600,
                         protect_new=PROTECT_NEW)  # fmt: skip
        chats(cache_dir, seed=2, requests=40)
        wait_for_trace(d)
        assert d.stop() == 0
        plot = state_directory / "sweep.png"
        done = run_cli("simulate", "--trace", state_directory / "grid.jsonl", "--json",
                       "--set", "budget=300MiB,900MiB", "--set", "policy=prefill,ds4",
                       "--plot", plot, timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr
        runs = json.loads(done.stdout)["runs"]
        assert [r["label"] for r in runs] == [
            "budget=300MiB policy=prefill", "budget=300MiB policy=ds4",
            "budget=900MiB policy=prefill", "budget=900MiB policy=ds4"]
        assert all(r["tokens_from_disk"] <= r["lookups"] * 49022 for r in runs)
        assert {r["estimate"]["room"] for r in runs} == {"less"}  # a cap the recording had not
        assert plot.stat().st_size > 10_000
        table = run_cli("simulate", "--trace", state_directory / "grid.jsonl", "--set",
                        "engine_budget=1200MiB,1600MiB,2400MiB", timeout=300)  # fmt: skip
        assert table.returncode == 0, table.stderr
        for tag in ("less room:", "as recorded", "more room:"):
            assert tag in table.stdout


class TestRotation:
    def test_rotated_files_stay_bounded_and_each_starts_with_the_state(self, tmp_path):
        """A small trace rotates through its files: never more than `segments`,
        none much over max_size / segments, each opening with a header and the
        directory's whole state, so the newest file alone replays."""
        cache = tmp_path / "kv"
        populate(cache, 300, seed=3)
        trace = tmp_path / "state" / "t.jsonl"
        config = Config(cache_dir=cache, trace=TraceSettings(trace, max_size=1 << 20, segments=3))
        log = structlog.get_logger()
        recorder = open_trace(config, log)
        assert recorder is not None
        groomer = DiskGroomer(config, log, trace=recorder)
        groomer.reconcile(time.time(), startup=True)
        names = [p.name for p in cache.iterdir()]
        for i in range(30000):  # touches: hits on the files present
            recorder.note(Note("snapshot.updated", "debug", {
                "name": names[i % len(names)], "hits": i, "last_used": i, "size": 4096}))
        recorder.close()
        files = trace_files(trace)
        assert len(files) == 3 and [p.name for p in files] == ["t.jsonl.2", "t.jsonl.1", "t.jsonl"]
        limit = (1 << 20) // 3
        for p in files[:-1]:
            assert limit <= p.stat().st_size <= limit + FLUSH_BYTES + 60_000
            assert p.read_text().startswith('{"format":"kvgroomd-trace","version":1,')
        newest = read_trace(trace)  # all three
        alone = fmt.read([("t.jsonl", trace.read_text().splitlines())])
        state = [e for e in alone.events if e.kind == fmt.PRESENT]
        assert len(state) == len(groomer.index) == next(e.size for e in alone.events
                                                       if e.kind == fmt.STATE)
        # The daemon start's header rotated away: rotated files' headers start no run.
        assert newest.runs == alone.runs == 0 and len(newest.events) > len(alone.events)

"""The activity trace's format (sim/trace.py): ids, lines, the reader, the
text family the replay builds from recorded prefix relations."""

from __future__ import annotations

import hashlib
import random

import pytest

from kvgroomd.config import ConfigError, parse_config, with_setting
from kvgroomd.sim import trace as fmt
from kvgroomd.sim.texts import is_prefix
from kvgroomd.sim.tracereplay import _Texts

KEY = bytes(range(32))
FACTS = [2, 10240, 165045862, 48303, 0, 2, 32768, 1796223851, 0, 1796223851]


def _lines(*records: object, start: bool = True) -> list[str]:
    return [fmt.header_line(1000.0, "abcd", start=start), *(fmt.line(*r) for r in records)]


class TestIds:
    def test_ids_are_keyed_hashes_of_the_name(self):
        """16 hex digits; the same name gives the same id under one key, another under
        another key; neither the name nor its SHA-1 can be read off it."""
        name = hashlib.sha1(b"a prompt").hexdigest() + ".kv"
        a, b = fmt.Ids(KEY), fmt.Ids(bytes(32))
        assert a.of(name) == a.of(name.upper().replace(".KV", ".kv")) != b.of(name)
        assert len(a.of(name)) == 16 and name[:16] not in a.of(name)
        assert a.key_id != b.key_id and len(a.key_id) == 8

    def test_an_odd_name_still_gets_an_id(self):
        """A name that is not 40 hex digits is hashed as text."""
        assert len(fmt.Ids(KEY).of("sysprompt.kv")) == 16


class TestReader:
    def test_records_read_back_as_events_in_absolute_time(self):
        """Times are t0 + ms; ids are namespaced by the header's key id."""
        t = fmt.read([("f", _lines(("P", 0, "aa", *FACTS), ("S", 1, 1), ("A", 1500, "bb", *FACTS),
                                   ("X", 1500, "bb", ["aa"]), ("U", 2000, "bb", 1, 5, 9),
                                   ("E", 2500, "aa", "consumed"),
                                   ("D", 3000, "bb", "budget", "unlinked", None)))])
        kinds = [(e.kind, e.t, e.id) for e in t.events]
        assert kinds == [("P", 1000.0, "abcd:aa"), ("S", 1000.001, ""), ("A", 1001.5, "abcd:bb"),
                         ("X", 1001.5, "abcd:bb"), ("U", 1002.0, "abcd:bb"),
                         ("E", 1002.5, "abcd:aa"), ("D", 1003.0, "abcd:bb")]
        assert t.relations == {("abcd:bb", "abcd:aa")}
        assert t.facts["abcd:bb"].tokens == 10240 and t.runs == 1

    def test_a_file_without_a_header_or_of_another_version_is_refused(self):
        """The error names the file and the line."""
        with pytest.raises(fmt.TraceError, match="f:1: no header"):
            fmt.read([("f", [fmt.line("S", 0, 0)])])
        bad = '{"format":"kvgroomd-trace","version":99,"t0":0}'
        with pytest.raises(fmt.TraceError, match="f:1: kvgroomd-trace version 99"):
            fmt.read([("f", [bad])])
        with pytest.raises(fmt.TraceError, match="f:2: malformed 'A' record"):
            fmt.read([("f", _lines(("A", 0, "x")))])

    def test_a_last_line_cut_short_by_a_crash_is_skipped(self):
        """A crash mid-write leaves a partial line: the rest reads."""
        lines = [*_lines(("S", 0, 0)), '["A",12,"bb",2,10']
        assert [e.kind for e in fmt.read([("f", lines)]).events] == ["S"]

    def test_rotated_opening_state_is_marked(self):
        """P/S after a header that is not a daemon start are a rotated file's state."""
        t = fmt.read([("f.1", _lines(("S", 0, 0))),
                      ("f", _lines(("P", 0, "aa", *FACTS), ("S", 0, 1), start=False))])
        assert [e.rotation for e in t.events] == [False, True, True] and t.runs == 1


class TestEngineCause:
    def test_what_tells_a_consume_from_an_eviction(self):
        """Replacement by name; a consume extended by the next landing; an eviction
        makes room for the next landing; otherwise a big file was consumed."""
        gib = 1 << 30
        kw = {"engine_budget": 4 * gib, "cold_max_tokens": 30000}
        assert fmt.engine_cause(1000, 0, 1, same_name=True, **kw) == "replaced"
        assert fmt.engine_cause(40000, 4 * gib, gib, extended=True, **kw) == "consumed"
        assert fmt.engine_cause(40000, 3 * gib, 2 * gib, **kw) == "evicted"
        assert fmt.engine_cause(40000, 3 * gib, 2 * gib, extended=True, consumable=False, **kw) == (
            "evicted")
        assert fmt.engine_cause(1000, 3 * gib, 2 * gib, **kw) == "evicted"
        assert fmt.engine_cause(40000, gib, gib, **kw) == "consumed"
        assert fmt.engine_cause(1000, gib, gib, **kw) == "other"
        assert fmt.engine_cause(40000, gib, None, engine_budget=None, cold_max_tokens=30000) == (
            "consumed")
        assert fmt.engine_cause(1000, gib, None, engine_budget=None, cold_max_tokens=30000) == (
            "evicted")


class TestFamily:
    def test_relations_merge_into_chains(self):
        """c extends a and b, d extends b: b's parent is a (both prefixes of c, a shorter)."""
        lengths = {"a": 10, "b": 20, "c": 30, "d": 25, "e": 5}
        parent, conflicts = fmt.family({("c", "a"), ("c", "b"), ("d", "b")}, lengths)
        assert parent == {"a": None, "b": "a", "c": "b", "d": "b", "e": None}
        assert conflicts == 0

    def test_two_texts_of_one_length_under_one_text_are_a_conflict(self):
        """Impossible for real texts: counted, not placed."""
        parent, conflicts = fmt.family({("c", "a"), ("c", "b")}, {"a": 10, "b": 10, "c": 30})
        assert conflicts == 1 and parent["c"] in ("a", "b")

    @pytest.mark.parametrize("seed", range(5))
    def test_synthetic_texts_have_exactly_the_recorded_relations(self, seed):
        """A random forest of real prefix relations, recorded partially (each
        relation only sometimes), rebuilt: every recorded relation holds in the
        synthetic texts, and no two texts are prefixes unless a chain of
        recorded relations and lengths says so."""
        rng = random.Random(seed)
        n = 60
        true_parent: dict[str, str | None] = {}
        length = {}
        for i in range(n):
            name = f"f{i}"
            p = rng.choice([None, *list(true_parent)]) if true_parent else None
            true_parent[name] = p
            length[name] = (length[p] if p else 0) + rng.randrange(1, 50)

        def ancestors(x):
            while (x := true_parent[x]) is not None:
                yield x

        recorded = {(x, a) for x in true_parent for a in ancestors(x) if rng.random() < 0.5}
        parent, conflicts = fmt.family(recorded, length)
        assert conflicts == 0
        texts = _Texts(parent)
        for x, a in recorded:
            assert is_prefix(texts.of(a).text, texts.of(x).text)
        true_pairs = {(x, a) for x in true_parent for a in ancestors(x)}
        for x in true_parent:
            for y in true_parent:
                if x != y and is_prefix(texts.of(y).text, texts.of(x).text):
                    assert (x, y) in true_pairs  # never a relation the texts do not have


class TestTraceConfig:
    def test_forms_of_the_trace_key(self):
        """A path, true, a block; off by default; check-config shows it."""
        base = "cache_dir: /srv/kv\n"
        assert parse_config(base).trace is None
        assert parse_config(base + "trace: t.jsonl\n").trace.path.name == "t.jsonl"
        assert str(parse_config(base + "trace: true\n").trace.path) == "trace.jsonl"
        c = parse_config(base + "trace:\n  path: /var/lib/kvgroomd/t\n  max_size: 64MiB\n"
                         "  segments: 3\n")
        assert (c.trace.max_size, c.trace.segments) == (64 << 20, 3)
        assert c.effective()["trace"] == {"path": "/var/lib/kvgroomd/t", "max_size": 64 << 20,
                                          "segments": 3}
        assert c.rules().prefixes and not parse_config(base).rules().prefixes

    @pytest.mark.parametrize(("text", "error"), [
        ("trace: /srv/kv/t.jsonl\n", "f:2: trace: /srv/kv/t.jsonl is inside cache_dir /srv/kv"),
        ("trace:\n  path: /srv/kv/sub/t\n", "f:3: trace.path: /srv/kv/sub/t is inside cache_dir"),
        ("trace:\n  max_size: 1G\n", "f:3: trace.path: required"),
        ("trace:\n  path: t\n  size: 1G\n", "f:4: trace.size: unknown key"),
        ("trace:\n  path: t\n  max_size: 10K\n", "f:4: trace.max_size: at least 1MiB"),
        ("trace:\n  path: t\n  segments: 1\n", "f:4: trace.segments: expected a whole number"),
        ("trace: 5\n", "f:2: trace: expected a path"),
    ])  # fmt: skip
    def test_bad_trace_settings_name_file_line_and_key(self, text, error):
        """Every mistake points at its line and key."""
        with pytest.raises(ConfigError) as e:
            parse_config("cache_dir: /srv/kv\n" + text, "f")
        assert error in str(e.value)


class TestWithSetting:
    def test_a_setting_changes_one_key_as_the_file_would(self):
        """Sizes, durations, policy parameters, engine flags."""
        c = parse_config("cache_dir: /srv/kv\n")
        assert with_setting(c, "budget", "2GiB").budget == 2 << 30
        assert with_setting(c, "engine_budget", "4096").engine_budget == 4096 << 20
        assert with_setting(c, "policy.idle_half_turnovers", "2").policy_params == {
            "idle_half_turnovers": 2.0}
        assert with_setting(c, "engine.cold_max_tokens", "20000").engine.cold_max_tokens == 20000
        assert with_setting(c, "policy", "ds4").policy == "ds4"
        assert with_setting(c, "protect_new", "5m").protect_new == 300.0

    @pytest.mark.parametrize(("key", "value", "error"), [
        ("budgt", "1G", "--set budgt=1G: not a key a replay can change"),
        ("policy.nope", "1h", "--set policy.nope=1h: not a parameter of 'prefill'"),
        ("budget", "lots", "--set budget=lots: expected a size"),
        ("cache_dir", "/x", "not a key a replay can change"),
    ])  # fmt: skip
    def test_a_bad_setting_names_it(self, key, value, error):
        """A ConfigError that quotes the --set."""
        with pytest.raises(ConfigError, match=error):
            with_setting(parse_config("cache_dir: /srv/kv\n"), key, value)

"""The index: snapshots by name in numpy rows, change kinds, drift."""

from __future__ import annotations

import dataclasses
import random

import pytest

from kvgroomd.decision import Fingerprint
from kvgroomd.index import HEAD_BYTES, SHORT_HEAD, Change, Drift, Index, Snapshot, drift, head_key
from kvgroomd.snapshot import Header, Reason
from tests.unit.builders import T0, chat_text, fingerprint, header, index_of, snapshot


def with_header(s: Snapshot, **changes: int) -> Snapshot:
    return dataclasses.replace(s, header=dataclasses.replace(s.header, **changes))


def with_seen(s: Snapshot, **changes: int) -> Snapshot:
    return dataclasses.replace(s, seen=dataclasses.replace(s.seen, **changes))


class TestPutGet:
    def test_get_returns_what_was_put(self) -> None:
        """A put snapshot comes back equal from get(), every field included."""
        s = snapshot(chat_text(700), reason=Reason.COLD, hits=3, quant_bits=4, model_id=1,
                     ext_flags=2, abi=0, ctx_size=65536, last_used=T0 - 5,
                     mtime_ns=123)  # fmt: skip
        index = Index()
        assert index.put(s) is Change.ADDED
        assert index.get(s.name) == s
        assert index.fingerprint(s.name) == s.seen

    def test_unknown_reason_code_survives_the_index(self) -> None:
        """A header with an unknown raw reason byte keeps it through the index."""
        raw = bytearray(header(reason=Reason.COLD).pack())
        raw[5] = 9
        h = Header.parse(bytes(raw))
        assert isinstance(h, Header)
        s = dataclasses.replace(snapshot(), header=h)
        index = index_of(s)
        got = index.get(s.name)
        assert got is not None
        assert got.header.reason is Reason.UNKNOWN
        assert got.header.pack()[5] == 9

    def test_sha_is_the_lowercased_name_hex(self) -> None:
        """A snapshot read back from its row has the lowercased hex of its name as sha."""
        s = snapshot(name="AB" * 20 + ".kv")
        got = index_of(s).get(s.name)
        assert got is not None
        assert got.sha == "ab" * 20

    def test_missing_names(self) -> None:
        """get, fingerprint, row_of and pop of an unknown name give None."""
        index = index_of(snapshot())
        assert index.get("nope.kv") is None
        assert index.fingerprint("nope.kv") is None
        assert index.row_of("nope.kv") is None
        assert index.pop("nope.kv") is None
        assert len(index) == 1

    def test_container_protocol(self) -> None:
        """len, in, iteration and names follow the puts and pops."""
        a, b, c = snapshot(), snapshot(), snapshot()
        index = index_of(a, b, c)
        assert len(index) == 3
        assert a.name in index and "x.kv" not in index
        assert sorted(index) == sorted([a.name, b.name, c.name])
        index.pop(a.name)
        assert a.name not in index
        assert sorted(index.names) == sorted([b.name, c.name])

    def test_iteration_survives_pops_during_it(self) -> None:
        """Iterating while popping sees every name that was there at the start."""
        snaps = [snapshot() for _ in range(10)]
        index = index_of(*snaps)
        seen = []
        for name in index:
            seen.append(name)
            index.pop(name)
        assert sorted(seen) == sorted(s.name for s in snaps)
        assert len(index) == 0

    def test_total_bytes_is_the_sum_of_sizes(self) -> None:
        """total_bytes sums st_size over the indexed snapshots."""
        index = index_of(snapshot(size=100), snapshot(size=250), snapshot(size=4000))
        assert index.total_bytes == 4350
        assert Index().total_bytes == 0

    def test_grows_past_its_capacity(self) -> None:
        """More puts than the initial capacity keep every row intact."""
        snaps = [snapshot(hits=i) for i in range(100)]
        index = index_of(*snaps, capacity=16)
        assert len(index) == 100
        assert all(index.get(s.name) == s for s in snaps)
        assert len(index.columns()) == 100

    def test_columns_rows_match_names(self) -> None:
        """columns()[i] is the row of names[i] and at(i) its snapshot."""
        snaps = [snapshot(hits=i, size=1000 + i) for i in range(5)]
        index = index_of(*snaps)
        cols = index.columns()
        for i, name in enumerate(index.names):
            s = next(x for x in snaps if x.name == name)
            assert int(cols[i]["hits"]) == s.header.hits
            assert int(cols[i]["size"]) == s.size
            assert index.at(i) == s
            assert index.row_of(name) == i


class TestChange:
    def test_same_snapshot_again_is_unchanged(self) -> None:
        """Putting an identical snapshot again reports UNCHANGED."""
        s = snapshot()
        index = index_of(s)
        assert index.put(s) is Change.UNCHANGED

    def test_header_rewritten_in_place_is_updated(self) -> None:
        """Same dev/ino with a new header (a hit) reports UPDATED and stores it."""
        s = snapshot(hits=0)
        index = index_of(s)
        hit = with_seen(with_header(s, hits=1, last_used=T0), mtime_ns=99)
        assert index.put(hit) is Change.UPDATED
        assert index.get(s.name) == hit

    def test_size_change_same_inode_is_updated(self) -> None:
        """Same inode with a new size (trailer rewrite) reports UPDATED."""
        s = snapshot(size=5000)
        index = index_of(s)
        assert index.put(with_seen(s, size=5400)) is Change.UPDATED
        assert index.total_bytes == 5400

    def test_other_inode_same_name_is_replaced(self) -> None:
        """Same name with another inode (engine rename) reports REPLACED."""
        s = snapshot(ino=1)
        index = index_of(s)
        again = with_seen(s, ino=2)
        assert index.put(again) is Change.REPLACED
        assert index.get(s.name) == again

    def test_other_device_same_name_is_replaced(self) -> None:
        """Same inode number on another device is another file: REPLACED."""
        s = snapshot(ino=5, dev=1)
        index = index_of(s)
        assert index.put(with_seen(s, dev=2)) is Change.REPLACED

    def test_replaced_with_identical_content_is_still_replaced(self) -> None:
        """A new inode is REPLACED even when every other field is the same."""
        s = snapshot(ino=10)
        index = index_of(s)
        assert (
            index.put(dataclasses.replace(s, seen=fingerprint(s.size, ino=11))) is Change.REPLACED
        )

    def test_covered_kept_on_updated(self) -> None:
        """The covered flag survives an in-place UPDATED of the same file."""
        s = snapshot()
        index = index_of(s)
        index.set_covered({s.name: True})
        assert index.put(with_header(s, hits=2)) is Change.UPDATED
        got = index.get(s.name)
        assert got is not None and got.covered is True

    def test_covered_only_difference_on_same_file_is_unchanged(self) -> None:
        """Re-putting a covered file unchanged (covered=False in hand) is UNCHANGED
        and leaves it covered."""
        s = snapshot()
        index = index_of(s)
        index.set_covered({s.name: True})
        assert index.put(s) is Change.UNCHANGED
        got = index.get(s.name)
        assert got is not None and got.covered is True

    def test_covered_reset_on_replaced(self) -> None:
        """A REPLACED file is another text: its covered flag starts over."""
        s = snapshot(ino=20)
        index = index_of(s)
        index.set_covered({s.name: True})
        assert index.put(with_seen(s, ino=21)) is Change.REPLACED
        got = index.get(s.name)
        assert got is not None and got.covered is False

    def test_set_covered_sets_and_clears_and_ignores_unknown(self) -> None:
        """set_covered writes the given flags and skips names not indexed."""
        a, b = snapshot(), snapshot()
        index = index_of(a, b)
        index.set_covered({a.name: True, b.name: True, "gone.kv": True})
        index.set_covered({b.name: False})
        assert [index.get(a.name).covered, index.get(b.name).covered] == [True, False]  # type: ignore[union-attr]
        assert "gone.kv" not in index


class TestPop:
    def test_pop_returns_the_snapshot(self) -> None:
        """pop() returns what was indexed and forgets it."""
        s = snapshot(hits=4)
        index = index_of(s)
        assert index.pop(s.name) == s
        assert s.name not in index
        assert index.pop(s.name) is None

    def test_pop_middle_moves_last_row_into_the_hole(self) -> None:
        """Popping a middle row moves the last row there with its name."""
        a, b, c = snapshot(hits=1), snapshot(hits=2), snapshot(hits=3)
        index = index_of(a, b, c)
        index.pop(a.name)
        assert index.names == [c.name, b.name]
        assert index.row_of(c.name) == 0
        assert index.get(c.name) == c
        assert index.get(b.name) == b

    def test_pop_last_row(self) -> None:
        """Popping the last row leaves the others in place."""
        a, b = snapshot(), snapshot()
        index = index_of(a, b)
        index.pop(b.name)
        assert index.names == [a.name]
        assert index.get(a.name) == a

    def test_pop_then_put_again_is_added(self) -> None:
        """A name put again after its pop is ADDED."""
        s = snapshot()
        index = index_of(s)
        index.pop(s.name)
        assert index.put(s) is Change.ADDED

    @pytest.mark.parametrize("seed", [1, 2, 3])
    def test_random_operations_agree_with_a_dict(self, seed: int) -> None:
        """Across a seeded random sequence of puts, updates, replaces, covered flags
        and pops the index holds exactly what a plain dict does, with a consistent
        name<->row map."""
        rng = random.Random(seed)
        names = [f"{i:040x}.kv" for i in range(60)]
        model: dict[str, Snapshot] = {}
        index = Index(16)
        for step in range(1500):
            name = rng.choice(names)
            op = rng.random()
            if op < 0.3:
                assert (
                    (index.pop(name) == model.pop(name))
                    if name in model
                    else index.pop(name) is None
                )
            elif op < 0.4:
                flag = rng.random() < 0.5
                index.set_covered({name: flag})
                if name in model:
                    model[name] = dataclasses.replace(model[name], covered=flag)
            else:
                old = model.get(name)
                if old is None:
                    new = snapshot(name=name, hits=rng.randrange(100), size=rng.randrange(1, 10**6))
                    expect = Change.ADDED
                elif op < 0.7:  # same file: keeps its covered flag
                    new = with_header(old, hits=old.header.hits + 1, last_used=T0 + step)
                    expect = Change.UPDATED
                else:  # another file under the name: not covered until proven
                    new = dataclasses.replace(old, seen=fingerprint(old.size + 1), covered=False)
                    expect = Change.REPLACED
                # a re-read from disk never knows the flag: the index must keep it
                assert index.put(dataclasses.replace(new, covered=False)) is expect
                model[name] = new
            assert len(index) == len(model)
            assert index.total_bytes == sum(s.size for s in model.values())
            assert len(set(index.names)) == len(index.names)
            for i, n in enumerate(index.names):
                assert index.row_of(n) == i
        assert set(index.names) == set(model)
        for n, s in model.items():
            assert index.get(n) == s
            assert index.at(index.row_of(n)) == s  # type: ignore[arg-type]


class TestDrift:
    def test_no_drift(self) -> None:
        """A scan equal to the index is no drift (falsy)."""
        a, b = snapshot(), snapshot()
        index = index_of(a, b)
        d = drift(index, {a.name: a.seen, b.name: b.seen})
        assert d == Drift((), (), ())
        assert not d

    def test_added_changed_gone(self) -> None:
        """Names only in the scan are added, only in the index gone, and names
        whose fingerprint differs changed."""
        a, b, c = snapshot(), snapshot(), snapshot()
        index = index_of(a, b, c)
        new_fp = Fingerprint(1, 999_999, 10, 0)
        scan = {a.name: a.seen, b.name: dataclasses.replace(b.seen, mtime_ns=5), "n.kv": new_fp}
        d = drift(index, scan)
        assert d.added == ("n.kv",)
        assert d.changed == (b.name,)
        assert d.gone == (c.name,)
        assert d

    @pytest.mark.parametrize("field", ["dev", "ino", "size", "mtime_ns"])
    def test_any_fingerprint_field_is_a_change(self, field: str) -> None:
        """A difference in dev, inode, size or mtime alone counts as changed."""
        s = snapshot()
        index = index_of(s)
        fp = dataclasses.replace(s.seen, **{field: getattr(s.seen, field) + 1})
        assert drift(index, {s.name: fp}).changed == (s.name,)

    def test_empty_scan_everything_gone(self) -> None:
        """An empty scan reports every indexed name gone."""
        a, b = snapshot(), snapshot()
        assert set(drift(index_of(a, b), {}).gone) == {a.name, b.name}


class TestHeadKey:
    def test_short_texts_share_the_short_bucket(self) -> None:
        """Texts shorter than HEAD_BYTES all get SHORT_HEAD."""
        assert head_key(b"x" * (HEAD_BYTES - 1), HEAD_BYTES - 1) == SHORT_HEAD
        assert head_key(b"", 0) == SHORT_HEAD

    def test_short_head_bytes_of_a_long_text_give_short_bucket(self) -> None:
        """Fewer than HEAD_BYTES head bytes given means the short bucket."""
        assert head_key(b"x" * 10, 5000) == SHORT_HEAD

    def test_same_first_64_bytes_same_bucket(self) -> None:
        """Texts sharing their first 64 bytes share a bucket, whatever follows."""
        t = chat_text(5000)
        assert head_key(t[:64], 64) == head_key(t[:64] + b"zzz", 5000) == head_key(t, 5000)
        assert head_key(t, 5000) != SHORT_HEAD

    def test_different_heads_different_buckets(self) -> None:
        """Texts differing within the first 64 bytes land in different buckets."""
        assert head_key(chat_text(100), 100) != head_key(chat_text(100, seed="U"), 100)

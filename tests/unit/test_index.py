"""The index: snapshots by name in numpy rows, change kinds, drift."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest

from kvgroomd.core.decision import Fingerprint
from kvgroomd.core.drift import Listing, drift
from kvgroomd.core.index import HEAD_BYTES, SHORT_HEAD, Change, Index, Snapshot, head_key
from kvgroomd.format.header import Header, Reason
from tests.unit.builders import T0, anon_name, chat_text, fingerprint, header, index_of, snapshot


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


def names_of(arr: object) -> list[str]:
    return [b.decode() for b in arr.tolist()]  # type: ignore[attr-defined]


class TestDrift:
    def test_no_drift(self) -> None:
        """A listing equal to the index is no drift (falsy)."""
        a, b = snapshot(), snapshot()
        index = index_of(a, b)
        d = drift(index, Listing.of({a.name: a.seen, b.name: b.seen}))
        assert (names_of(d.added), names_of(d.changed), d.gone) == ([], [], ())
        assert not d

    def test_added_changed_gone(self) -> None:
        """Names only in the listing are added, only in the index gone, and
        names whose fingerprint differs changed."""
        a, b, c = snapshot(), snapshot(), snapshot()
        index = index_of(a, b, c)
        new = anon_name()
        new_fp = Fingerprint(1, 999_999, 10, 0)
        d = drift(index, Listing.of({a.name: a.seen, b.name: dataclasses.replace(b.seen, mtime_ns=5),
                                     new: new_fp}))  # fmt: skip
        assert names_of(d.added) == [new]
        assert names_of(d.changed) == [b.name]
        assert d.gone == (c.name,)
        assert names_of(d.to_read) == [new, b.name]
        assert d

    @pytest.mark.parametrize("field", ["dev", "ino", "size", "mtime_ns"])
    def test_any_fingerprint_field_is_a_change(self, field: str) -> None:
        """A difference in dev, inode, size or mtime alone counts as changed."""
        s = snapshot()
        index = index_of(s)
        fp = dataclasses.replace(s.seen, **{field: getattr(s.seen, field) + 1})
        assert names_of(drift(index, Listing.of({s.name: fp})).changed) == [s.name]

    def test_empty_listing_everything_gone(self) -> None:
        """An empty listing reports every indexed name gone."""
        a, b = snapshot(), snapshot()
        assert set(drift(index_of(a, b), Listing.of({})).gone) == {a.name, b.name}


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


class TestCompactIndex:
    """The index keeps no Python object per entry: names come back from the
    SHA-1 in each row, through an open-addressing table of row numbers."""

    def test_put_many_equals_put(self) -> None:
        """Rows appended in bulk read back exactly like rows put one by one."""
        snaps = [snapshot(hits=i, size=1000 + i) for i in range(300)]
        one = index_of(*snaps, capacity=16)
        bulk = Index(capacity=16)
        bulk.put_many(one.columns().copy(), one.names)
        assert bulk.names == one.names
        assert bulk.total_bytes == one.total_bytes
        for s in snaps:
            assert bulk.get(s.name) == s
        # and it goes on working as an index: updates, pops, more puts
        assert bulk.put(with_header(snaps[0], hits=999)) is Change.UPDATED
        assert bulk.pop(snaps[1].name) == snaps[1]
        more = snapshot()
        assert bulk.put(more) is Change.ADDED
        assert bulk.get(more.name) == more
        assert len(bulk) == 300

    def test_names_differing_only_in_case_are_two_files(self) -> None:
        """`AB..AB.kv` and `ab..ab.kv` are two files (same SHA-1, same table key)."""
        upper = snapshot(name="AB" * 20 + ".kv", hits=1)
        lower = snapshot(name="ab" * 20 + ".kv", hits=2)
        index = index_of(upper, lower)
        assert index.get(upper.name) == upper
        assert index.get(lower.name) == lower
        assert sorted(index.names) == sorted([upper.name, lower.name])
        assert index.name_at(index.row_of(upper.name)) == upper.name  # type: ignore[arg-type]
        assert index.pop(lower.name) == lower
        assert index.get(upper.name) == upper
        assert index.names == [upper.name]
        assert lower.name not in index

    def test_many_names_with_one_table_key(self) -> None:
        """Names sharing their first 16 hex digits collide in the table: long
        probe runs, deletions shifting entries back; every lookup still right."""
        rng = random.Random(5)
        names = [f"{'0' * 16}{i:024x}.kv" for i in range(200)]
        model = {}
        index = Index(capacity=16)
        for step in range(2000):
            name = rng.choice(names)
            if name in model and rng.random() < 0.5:
                assert index.pop(name) == model.pop(name)
            elif name not in model:
                model[name] = snapshot(name=name, hits=step)
                assert index.put(model[name]) is Change.ADDED
            for n in rng.sample(names, 5):
                assert index.get(n) == model.get(n)
        assert sorted(index.names) == sorted(model)
        rows = index.rows_of(names)
        for n, r in zip(names, rows, strict=True):
            assert (r == -1) if n not in model else index.name_at(int(r)) == n

    def test_rows_of(self) -> None:
        """rows_of gives each name's row, -1 for absent or malformed names."""
        a, b = snapshot(), snapshot(name="CD" * 20 + ".kv")
        index = index_of(a, b)
        got = index.rows_of([b.name, "nope.kv", a.name, "ab" * 20 + ".kv", "zz" * 20 + ".kv"])
        assert got.tolist() == [index.row_of(b.name), -1, index.row_of(a.name), -1, -1]
        assert index.rows_of([]).tolist() == []

    def test_names_at(self) -> None:
        """names_at(rows) is [names[r] for r in rows]."""
        index = index_of(*(snapshot() for _ in range(20)), snapshot(name="EF" * 20 + ".kv"))
        rows = np.array([20, 3, 3, 0], dtype=np.intp)
        assert index.names_at(rows) == [index.names[r] for r in rows]

    def test_malformed_names_are_refused_and_never_found(self) -> None:
        """Only `<40 hex>.kv` names can be indexed; others are simply absent."""
        index = index_of(snapshot())
        for bad in ("x.kv", "g" * 40 + ".kv", "ab" * 20 + ".kvx", "a b" + "c" * 38 + ".kv"):
            assert bad not in index
            assert index.get(bad) is None
            assert index.pop(bad) is None
        with pytest.raises(ValueError):
            index.put(snapshot(name="x.kv"))

    def test_generation_counts_structural_changes(self) -> None:
        """Adds, replaces and removals bump the generation; in-place updates do not."""
        s = snapshot()
        index = index_of(s)
        g = index.generation
        index.put(with_header(s, hits=5))
        assert index.generation == g
        index.put(with_seen(s, ino=123456))
        assert index.generation == g + 1
        index.pop(s.name)
        assert index.generation == g + 2

"""Directory entry names (spec §1): snapshot, temp file, or someone else's."""

from __future__ import annotations

import pytest

from kvgroomd.format.header import sha1_hex
from kvgroomd.format.names import ForeignName, SnapshotName, TempName, classify, is_snapshot_name

SHA = sha1_hex(b"hello ds4")  # 40 lowercase hex digits
MIXED = "".join(c.upper() if i % 2 else c for i, c in enumerate(SHA))


class TestSnapshotNames:
    def test_lowercase_hex(self) -> None:
        """`<40 lowercase hex>.kv` is a snapshot whose sha is the hex."""
        assert classify(f"{SHA}.kv") == SnapshotName(f"{SHA}.kv", SHA)
        assert is_snapshot_name(f"{SHA}.kv")

    @pytest.mark.parametrize("hexpart", [SHA.upper(), MIXED], ids=["upper", "mixed"])
    def test_upper_and_mixed_case_hex_are_accepted_and_lowered(self, hexpart: str) -> None:
        """Hex in any case is a snapshot (the engine accepts it); sha is lowercased,
        the name is kept as it is on disk."""
        got = classify(f"{hexpart}.kv")
        assert got == SnapshotName(f"{hexpart}.kv", SHA)
        assert is_snapshot_name(f"{hexpart}.kv")

    @pytest.mark.parametrize("n", [0, 1, 39, 41, 64])
    def test_wrong_hex_length_is_foreign(self, n: int) -> None:
        """Only exactly 40 hex digits make a snapshot name."""
        name = ("ab" * 40)[:n] + ".kv"
        assert classify(name) == ForeignName(name)
        assert not is_snapshot_name(name)

    @pytest.mark.parametrize("bad", ["g", "z", "-", " ", "é", "٣"])
    def test_non_hex_character_is_foreign(self, bad: str) -> None:
        """One non-hex character among the 40 (even a Unicode digit) makes it foreign."""
        name = SHA[:20] + bad + SHA[21:] + ".kv"
        assert isinstance(classify(name), ForeignName)
        assert not is_snapshot_name(name)

    @pytest.mark.parametrize(
        "suffix",
        [".KV", ".Kv", ".kv.", ".kv ", " .kv", ".kvx", ".kv.bak", ".kv~", "kv", ".kv\n",
         "", ".k", "..kv", ".kv.tmp", ".kv.tmp.", ".kv.tmp.x1", ".kv.tmp.-1", ".kv.TMP.1"],
    )  # fmt: skip
    def test_suffix_variants_are_foreign(self, suffix: str) -> None:
        """Anything but exactly `.kv` (or `.kv.tmp.<digits>`) after the hex is foreign."""
        name = SHA + suffix
        assert classify(name) == ForeignName(name)
        assert not is_snapshot_name(name)

    @pytest.mark.parametrize(
        "name",
        [f"sub/{SHA}.kv", f"/abs/{SHA}.kv", f"{SHA}.kv/", f"./{SHA}.kv", f"..\\{SHA}.kv",
         f"{SHA[:20]}/{SHA[20:]}.kv", f"sub/{SHA}.kv.tmp.42"],
    )  # fmt: skip
    def test_path_separators_make_it_foreign(self, name: str) -> None:
        """A name with a path separator is not a bare directory entry: foreign."""
        assert classify(name) == ForeignName(name)
        assert not is_snapshot_name(name)

    def test_sysprompt_is_foreign(self) -> None:
        """The agent's fixed-name checkpoint `sysprompt.kv` is foreign."""
        assert classify("sysprompt.kv") == ForeignName("sysprompt.kv")
        assert not is_snapshot_name("sysprompt.kv")


class TestTempNames:
    def test_temp_name_gives_sha_and_pid(self) -> None:
        """`<sha>.kv.tmp.<pid>` is a temp file of that pid."""
        assert classify(f"{SHA}.kv.tmp.12345") == TempName(f"{SHA}.kv.tmp.12345", SHA, 12345)

    def test_temp_name_hex_is_lowercased(self) -> None:
        """A temp name's sha is lowercased like a snapshot's."""
        got = classify(f"{SHA.upper()}.kv.tmp.7")
        assert isinstance(got, TempName)
        assert (got.sha, got.pid) == (SHA, 7)

    def test_pid_with_leading_zeros(self) -> None:
        """Leading zeros in the pid are read as a decimal number."""
        got = classify(f"{SHA}.kv.tmp.000123")
        assert isinstance(got, TempName)
        assert got.pid == 123

    def test_temp_names_are_not_snapshot_names(self) -> None:
        """is_snapshot_name is False for temp files: they are never unlinked as snapshots."""
        assert not is_snapshot_name(f"{SHA}.kv.tmp.1")

    @pytest.mark.parametrize("name", [f"{SHA[:39]}.kv.tmp.1", f"{SHA}0.kv.tmp.1", f"{SHA}.tmp.1",
                                      f"{SHA}.kv.tmp.1.kv", f"{SHA}.kv.tmp.1 "])  # fmt: skip
    def test_malformed_temp_names_are_foreign(self, name: str) -> None:
        """A temp-like name with a wrong hex length or extra text is foreign."""
        assert classify(name) == ForeignName(name)

"""The fstab parser and writer: libmount's rules, OpenBSD's variant, byte-exact round trips."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fstab_tools.fstab import Entry, Fstab, FstabError, mangle, parse_line, split_options, unmangle

DATA = Path(__file__).parent / "data" / "fstab"
CORPUS = sorted(DATA.glob("*.fstab"))


def load(name: str) -> Fstab:
    return Fstab.load(DATA / name)


# --- round trips -------------------------------------------------------------------------------

@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_every_corpus_file_renders_back_byte_for_byte(path: Path) -> None:
    assert Fstab.load(path).render().encode("utf-8", "surrogateescape") == path.read_bytes()


line_text = st.text(alphabet=st.sampled_from(list("ab/#=\\0127 \t\r,\"x")), max_size=40)


@settings(max_examples=300, deadline=None)
@given(st.lists(line_text, max_size=12), st.booleans())
def test_any_text_renders_back_unchanged_even_when_malformed(lines: list[str], final_nl: bool) -> None:
    text = "\n".join(lines) + ("\n" if final_nl and lines else "")
    assert Fstab.parse(text).render() == text


field_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=20
)
option = st.text(alphabet=st.sampled_from(list("abcxyz_=.-/ \t\\")), min_size=1, max_size=10)


@settings(max_examples=300, deadline=None)
@given(
    field_text, field_text, field_text, st.lists(option, min_size=1, max_size=4),
    st.integers(0, 9), st.integers(0, 9),
)
def test_written_entries_parse_back_to_the_same_fields(src, tgt, fstype, opts, freq, passno) -> None:
    entry = Entry(src, tgt, fstype, tuple(opts), freq, passno)
    fstab = Fstab.parse("# header\n")
    fstab.append(entry)
    again = Fstab.parse(fstab.render())
    assert [e for _, e in again.entries] == [entry]
    assert again.errors == []


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=30))
def test_mangle_then_unmangle_is_identity_on_any_bytes(raw: bytes) -> None:
    value = raw.decode("utf-8", "surrogateescape")
    assert unmangle(mangle(value)) == value
    assert not any(ch in mangle(value) for ch in " \t\n")


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(CORPUS), st.data(), st.integers(0, 9),
    st.lists(st.sampled_from(["rw", "nofail", "_netdev", "x y", "a\\b"]), min_size=1, max_size=3),
)
def test_any_edit_changes_only_its_own_line(path: Path, data, passno: int, opts: list[str]) -> None:
    fstab = Fstab.load(path)
    lines = [ln for ln, _ in fstab.entries]
    line = data.draw(st.sampled_from(lines))
    before = [ln.raw for ln in fstab.lines]
    new = line.entry.replace(passno=passno, options=opts)
    fstab.update(line, new)
    after = Fstab.parse(fstab.render())
    assert [ln.raw for ln in after.lines if ln.lineno != line.lineno] == [
        raw for i, raw in enumerate(before, start=1) if i != line.lineno
    ]
    assert after.lines[line.lineno - 1].entry == new


def test_editing_one_field_keeps_layout_and_other_lines() -> None:
    path = DATA / "debian.fstab"
    fstab = Fstab.load(path)
    line = fstab.find("/boot/efi")
    assert line is not None and line.entry is not None
    fstab.update(line, line.entry.replace(options=["umask=0077", "nofail"]))
    before = path.read_text().splitlines()
    after = fstab.render().splitlines()
    changed = [(a, b) for a, b in zip(before, after) if a != b]
    assert changed == [
        ("UUID=8A1B-2C3D  /boot/efi       vfat    umask=0077      0       1",
         "UUID=8A1B-2C3D  /boot/efi       vfat    umask=0077,nofail      0       1"),
    ]


def test_editing_a_four_field_line_adds_passno_with_its_separator() -> None:
    fstab = Fstab.parse("/dev/vdb /srv ext4 defaults\n")
    line = fstab.find("/srv")
    fstab.update(line, line.entry.replace(passno=2))
    assert fstab.render() == "/dev/vdb /srv ext4 defaults 0 2\n"


def test_unchanged_escaped_field_keeps_its_original_spelling() -> None:
    fstab = Fstab.parse("LABEL=My\\040Disk /mnt/x ext4 defaults 0 2\n")
    line = fstab.find("/mnt/x")
    fstab.update(line, line.entry.replace(target="/mnt/a b"))
    assert fstab.render() == "LABEL=My\\040Disk /mnt/a\\040b ext4 defaults 0 2\n"


def test_removing_and_appending_entries() -> None:
    fstab = load("tabs.fstab")
    fstab.remove(fstab.find("/home"))
    fstab.append(Entry("/dev/sdb1", "/backup", "ext4", ("defaults",), 0, 2))
    text = fstab.render()
    assert "/home" not in text and text.endswith("/dev/sdb1\t/backup\text4\tdefaults\t0\t2\n")
    assert [ln.lineno for ln in fstab.lines] == list(range(1, len(fstab.lines) + 1))


# --- libmount rules ----------------------------------------------------------------------------

def test_four_field_lines_default_freq_and_passno_to_zero() -> None:
    entries = [e for _, e in load("four_field.fstab").entries]
    assert [(e.target, e.freq, e.passno) for e in entries] == [
        ("/proc", 0, 0), ("/run/shm", 0, 0), ("/data", 0, 0), ("/srv", 0, 0)
    ]
    assert entries[3].options == ()


def test_tabs_leading_blanks_and_trailing_blanks_are_separators() -> None:
    fstab = load("tabs.fstab")
    assert [(e.source, e.target, e.options) for _, e in fstab.entries] == [
        ("/dev/sda1", "/", ("defaults",)),
        ("/dev/sda2", "/home", ("nodev", "nosuid")),
        ("/dev/sda3", "/var", ("defaults",)),
    ]
    assert fstab.errors == []


def test_octal_escapes_decode_and_other_backslashes_stay() -> None:
    entries = {e.target: e for _, e in load("escapes.fstab").entries}
    assert entries["/mnt/my disk"].source == "LABEL=My Disk"
    assert entries["/mnt/my disk"].tag == ("LABEL", "My Disk")
    assert "/mnt/tab\there" in entries
    assert entries["/mnt/back\\slash"].source == "//server/share name"
    assert "/mnt/not\\escaped" in entries


def test_quoted_commas_stay_inside_one_option() -> None:
    entries = {e.target: e for _, e in load("escapes.fstab").entries}
    assert entries["/mnt/not\\escaped"].options == (
        'context="system_u:object_r:tmp_t:s0:c127,c456"', "noexec"
    )
    assert split_options("a,,b") == ["a", "", "b"]


def test_crlf_line_endings_are_tolerated_and_kept() -> None:
    text = "/dev/sda1 / ext4 defaults 0 1\r\n"
    fstab = Fstab.parse(text)
    assert [e.passno for _, e in fstab.entries] == [1]
    assert fstab.render() == text


def test_fields_after_passno_are_ignored_like_libmount() -> None:
    line = parse_line("/dev/sda1 / ext4 defaults 0 1 extra", 1)
    assert line.error is None and line.entry.passno == 1


@pytest.mark.parametrize(
    "text, message",
    [
        ("/dev/sda1", "missing target field"),
        ("/dev/sda1 /mnt", "missing fstype field"),
        ("/dev/sda1 /mnt ext4 defaults zero 1", "freq must be a number, got 'zero'"),
        ("/dev/sda1 /mnt ext4 defaults 0 x1", "passno must be a number, got 'x1'"),
        ("/dev/sda1 /mnt ext4 defaults 0 -1", "passno out of range: -1"),
        ("/dev/sda1 /mnt ext4 defaults 0 99999999999", "passno out of range: 99999999999"),
    ],
)
def test_malformed_lines_are_reported_with_file_and_line_and_skipped(text: str, message: str) -> None:
    fstab = Fstab.parse(f"# c\n{text}\n/dev/sdb1 /ok ext4 defaults 0 2\n", "/etc/fstab.test")
    assert len(fstab.errors) == 1
    assert str(fstab.errors[0]).startswith(f"/etc/fstab.test:2: {message}")
    assert [e.target for _, e in fstab.entries] == ["/ok"]


def test_comment_and_blank_lines_are_not_entries() -> None:
    fstab = Fstab.parse("  # indented comment\n\n\t\n#/dev/sda1 / ext4 defaults 0 1\n")
    assert fstab.entries == [] and fstab.errors == []
    assert sum(ln.is_comment for ln in fstab.lines) == 2


def test_a_source_starting_with_hash_is_escaped_so_it_is_not_a_comment() -> None:
    fstab = Fstab.parse("")
    fstab.append(Entry("#odd", "/mnt", "ext4", ("defaults",)))
    assert fstab.render().startswith("\\043odd")
    assert [e.source for _, e in Fstab.parse(fstab.render()).entries] == ["#odd"]


# --- OpenBSD's variant -------------------------------------------------------------------------

def test_openbsd_duids_and_fs_types_are_understood() -> None:
    entries = {e.target: e for _, e in load("openbsd.fstab").entries}
    assert entries["/"].is_duid and entries["/"].bsd_type == "rw"
    assert entries["none"].is_swap and entries["none"].bsd_type == "sw"
    assert entries["/usr/obj"].ignored
    assert entries["/var"].bsd_type == "rq"
    assert entries["/srv/iscsi"].has_option("net")
    assert entries["/home"].source == "3eb7f9da875cb9ee.l"


def test_options_match_whole_words_not_prefixes() -> None:
    e = Entry("/dev/sda1", "/x", "ext4", ("netdev", "_netdevice", "x-systemd.requires=a.service"))
    assert not e.has_option("_netdev") and not e.has_option("net")
    assert e.has_option("x-systemd.requires")
    assert e.option_value("x-systemd.requires") == "a.service"


def test_missing_or_huge_fstab_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FstabError, match="No such file"):
        Fstab.load(tmp_path / "nope")
    big = tmp_path / "big"
    big.write_bytes(b"#" * (5 * 1024 * 1024))
    with pytest.raises(FstabError, match="refusing"):
        Fstab.load(big)


def test_non_utf8_bytes_survive_a_round_trip(tmp_path: Path) -> None:
    raw = b"/dev/sda1 /mnt/caf\xe9 ext4 defaults 0 2\n"
    (tmp_path / "f").write_bytes(raw)
    fstab = Fstab.load(tmp_path / "f")
    out = tmp_path / "g"
    fstab.save(out)
    assert out.read_bytes() == raw
    assert [e.target.encode("utf-8", "surrogateescape") for _, e in fstab.entries] == [b"/mnt/caf\xe9"]

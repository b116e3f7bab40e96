"""A pair's own row says what happened to each of its members: a caption or json member skipped unread
(a link, over ``max_member_bytes``, cut short) is named in ``caption_problem`` / ``meta_error``, an image
member whose extension is never parsed in ``decode_error``; NUL bytes removed from a caption, and a json
caption the .txt overrode, are recorded in ``caption_problem``. Nothing is taken or dropped in silence."""

import json
import tarfile

import pandas as pd
import pytest

from curation_pipeline.decisions.policy import DecisionPolicy, image_drop_reasons
from curation_pipeline.shards.reader import IMAGE_EXTS, ReaderLimits, ShardReader
from curation_pipeline_tests.faults import builders
from curation_pipeline_tests.shards import faults

pytestmark = pytest.mark.faults

LIMITS = ReaderLimits(max_member_bytes=4096)
JPG = faults.jpeg((32, 24))
CUT = b"A caption cut short by the end of the transfer, long enough to be cut inside its data."


def records(path, decode=True, limits=ReaderLimits()):
    reader = ShardReader(str(path), "s", limits, decode=decode)
    return reader, {s.key: s.record for s in reader}


def unread_caption_shard(path):
    """Caption and json members skipped unread, after and before the members read of their sample."""
    blocks = [
        builders.regular("k.jpg", JPG), builders.regular("k.json", b'{"caption": "JSON caption"}'),
        builders.special("k.txt", tarfile.SYMTYPE, "other.txt"),  # the json's caption is used instead
        builders.regular("m.jpg", JPG), builders.regular("m.txt", b"x" * 5000),  # over the member limit
        builders.regular("n.jpg", JPG), builders.regular("n.txt", b"A caption beside a json too large."),
        builders.regular("n.json", b'{"caption": "' + b"y" * 4987 + b'"}'),
        builders.special("p.txt", tarfile.LNKTYPE, "m.txt"),  # unread before any member of p is read
        builders.special("p.json", tarfile.SYMTYPE, "k.json"),
        builders.regular("p.jpg", JPG),
        builders.special("q.json", tarfile.SYMTYPE, "k.json"),  # no member of q read: no pair, one skip
        builders.regular("u.jpg", JPG),
    ]
    data = b"".join(blocks) + builders.regular("u.txt", CUT)
    path.write_bytes(data[:len(b"".join(blocks)) + 512 + len(CUT) // 2])  # cut inside u.txt's data
    return path


@pytest.mark.parametrize("decode", [True, False])
def test_a_caption_or_json_member_not_read_is_said_on_its_pair(tmp_path, decode):
    reader, rows = records(unread_caption_shard(tmp_path / "s.tar"), decode, LIMITS)
    assert list(rows) == ["k", "m", "n", "p", "u"]
    k, m, n, p, u = (rows[key] for key in "kmnpu")
    assert (k["caption"], k["caption_source"]) == ("JSON caption", "json")
    assert k["caption_problem"] == "k.txt is a symlink -> other.txt, not a regular file, not read; json caption used"
    assert m["caption"] is None
    assert m["caption_problem"] == "m.txt declares 5,000 bytes, over the 4,096-byte member limit, not read"
    assert n["caption"] == "A caption beside a json too large." and n["caption_problem"] is None
    assert n["meta_error"] == "n.json declares 5,002 bytes, over the 4,096-byte member limit; not read"
    assert p["caption"] is None
    assert p["caption_problem"] == "p.txt is a hard link -> m.txt, not a regular file, not read"
    assert p["meta_error"] == "p.json is a symlink -> k.json, not a regular file; not read"
    assert u["caption"] is None and u["caption_problem"].startswith("u.txt: its data could not be read (")
    assert k["meta_error"] is None and m["meta_error"] is None
    # each member skipped is counted once, as before; the images are all read
    assert sorted((s.reason, s.member) for s in reader.skips) == [
        ("member_too_large", "m.txt"), ("member_too_large", "n.json"), ("not_a_file", "k.txt"),
        ("not_a_file", "p.json"), ("not_a_file", "p.txt"), ("not_a_file", "q.json"), ("truncated_tar", None),
        ("unreadable_member", "u.txt")]
    if decode:
        assert {row["decode_status"] for row in rows.values()} == {"ok"}
    # the ingest metadata counts the notes by kind, not by the member each names
    notes = [part for row in rows.values() if row["caption_problem"] for part in row["caption_problem"].split("; ")]
    assert sorted(map(ShardReader.problem_kind, notes)) == ["caption member not read"] * 4 + ["json caption used"]


def test_an_image_whose_extension_is_never_parsed_is_named_in_decode_error(tmp_path):
    path = builders.write_members(tmp_path / "s.tar", [
        ("x.heic", b"\0\0\0\x18ftypheic"), ("x.txt", b"A photo saved as HEIC."),
        ("pk.pyd", b"payload"), ("pk.pickle", b"payload"), ("pk.txt", b"A caption beside two unparsed members."),
        ("w.txt", b"A caption that never had an image."),
        ("a.jpg", JPG), ("a.xyz", b"unknown"), ("a.txt", b"A sample whose image was read."),
    ])
    reader, rows = records(path)
    images = ", ".join(f".{ext}" for ext in IMAGE_EXTS)
    assert rows["x"]["decode_status"] == "missing" and rows["x"]["image_ext"] is None
    assert rows["x"]["decode_error"] == (f"no image member in sample; x.heic not read: .heic is never parsed; "
                                         f"image members are {images}")
    assert rows["pk"]["decode_error"].startswith(
        "no image member in sample; pk.pyd not read: .pyd is never parsed (and 1 more unsupported member); ")
    assert rows["w"]["decode_error"] == "no image member in sample"
    assert (rows["a"]["decode_status"], rows["a"]["decode_error"]) == ("ok", None)
    assert {(s.reason, s.member) for s in reader.skips} == {
        ("unsupported_member", m) for m in ("x.heic", "pk.pyd", "pk.pickle", "a.xyz")}
    # nor was a caption under an extension never parsed: its pair says why it has none
    assert [rows[k]["caption_problem"] for k in ("x", "pk", "a", "w")] == [None, None, None, None]
    reasons = image_drop_reasons(pd.DataFrame(list(rows.values())), DecisionPolicy())
    assert dict(zip(rows, reasons))["x"] == "image_missing"
    # without a decode (the Ray engine decodes elsewhere) the record carries why
    carried = {s.key: s.record for s in ShardReader(str(path), "s", decode=False)}["x"]
    assert carried["decode_error"] == rows["x"]["decode_error"]


def test_jfif_and_jpe_are_jpegs_read_and_published(tmp_path):
    """JPEG's other extensions are images end to end: decoded, written to the curated tar under the member's
    extension, accepted by verify_curated and decoded by webdataset."""
    import webdataset as wds

    from curation_pipeline.shards.writer import verify_curated, write_curated

    path = builders.write_members(tmp_path / "s.tar", [
        ("x.jfif", JPG), ("x.txt", b"A JPEG saved as .jfif."), ("y.jpe", JPG), ("y.txt", b"A JPEG saved as .jpe.")])
    reader = ShardReader(str(path), "s")
    samples = list(reader)
    assert reader.skips == []
    assert [(s.record["image_ext"], s.record["decode_status"], s.record["image_format"]) for s in samples] == [
        ("jfif", "ok", "JPEG"), ("jpe", "ok", "JPEG")]
    curated = tmp_path / "curated.tar"
    with open(curated, "wb") as handle:
        write_curated(handle, [(s.key, s.record["image_ext"], s.image_data, {"key": s.key, "caption": s.caption})
                               for s in samples])
    assert verify_curated(str(curated), ["x", "y"]) == 2
    got = {s["__key__"]: s for s in wds.WebDataset(f"file:{curated}", shardshuffle=False).decode("pil")}
    assert got["x"]["jfif"].size == got["y"]["jpe"].size == (32, 24)
    assert got["x"]["txt"] == "A JPEG saved as .jfif."


def test_nul_bytes_removed_from_a_caption_are_recorded(tmp_path):
    path = builders.write_members(tmp_path / "s.tar", [
        ("a.jpg", JPG), ("a.txt", b"A dog\x00 runs in a park."),
        ("b.jpg", JPG), ("b.json", json.dumps({"caption": "A cat\x00 on a mat."}).encode()),
        ("c.jpg", JPG), ("c.txt", b"\x00" + b"z" * 30),
        ("d.jpg", JPG), ("d.txt", b"Nothing wrong here."),
    ])
    _, rows = records(path, "header", ReaderLimits(max_caption_chars=20))
    assert (rows["a"]["caption"], rows["a"]["caption_problem"]) == ("A dog runs in a park", "NUL bytes removed; "
                                                                    "truncated from 21 chars")
    assert (rows["b"]["caption"], rows["b"]["caption_problem"]) == ("A cat on a mat.", "NUL bytes removed")
    assert rows["c"]["caption_problem"] == "NUL bytes removed; truncated from 30 chars"
    assert rows["d"]["caption_problem"] is None


def test_a_json_caption_the_caption_file_overrides_is_noted(tmp_path):
    path = builders.write_members(tmp_path / "s.tar", [
        ("a.jpg", JPG), ("a.json", json.dumps({"caption": "A red bus."}).encode()), ("a.txt", b"A dog on a lawn."),
        ("b.jpg", JPG), ("b.json", json.dumps({"caption": "A dog on a lawn."}).encode()),
        ("b.txt", b"\xef\xbb\xbfA dog on a lawn.\r\n"),  # the same once saved-as is dropped: no note
        ("c.jpg", JPG), ("c.caption", b"A dog on a lawn."), ("c.json", json.dumps({"caption": "A red bus."}).encode()),
        ("d.jpg", JPG), ("d.txt", b"A dog\x00 on a lawn."),
        ("d.json", json.dumps({"caption": "A dog on a lawn."}).encode()),
    ])
    _, rows = records(path, "header")
    assert (rows["a"]["caption"], rows["a"]["caption_source"]) == ("A dog on a lawn.", "txt")
    assert rows["a"]["caption_problem"] == "json caption differs (.txt used)"
    assert rows["b"]["caption_problem"] is None
    assert rows["c"]["caption_problem"] == "json caption differs (.caption used)"
    assert rows["d"]["caption_problem"] == "NUL bytes removed"  # the same caption once the NUL is gone


def test_an_empty_caption_file_gives_way_to_the_json_caption(tmp_path):
    """An empty (or blank) .txt beside a json caption took precedence: the pair had caption '' and was dropped
    for want of one, though its json said what the image shows."""
    path = builders.write_members(tmp_path / "s.tar", [
        ("a.jpg", JPG), ("a.txt", b""), ("a.json", json.dumps({"caption": "A real caption from json"}).encode()),
        ("b.jpg", JPG), ("b.txt", b" \r\n"), ("b.json", json.dumps({"caption": "A dog\u0000 on a lawn."}).encode()),
        ("c.jpg", JPG), ("c.txt", b""), ("c.json", json.dumps({"caption": "  "}).encode()),
    ])
    reader, rows = records(path, "header")
    assert (rows["a"]["caption"], rows["a"]["caption_source"]) == ("A real caption from json", "json")
    assert rows["a"]["caption_problem"] == "json caption used (.txt empty)"
    assert (rows["b"]["caption"], rows["b"]["caption_problem"]) == (
        "A dog on a lawn.", "json caption used (.txt empty); NUL bytes removed")
    assert (rows["c"]["caption"], rows["c"]["caption_source"]) == ("", "txt")  # neither says anything
    assert reader.problem_kind(rows["a"]["caption_problem"]) == "json caption used"



def test_a_caption_whose_extension_is_never_parsed_is_named_in_caption_problem(tmp_path):
    path = builders.write_members(tmp_path / "s.tar", [
        ("y.jpg", JPG), ("y.text", b"A caption saved as .text."),
        ("z.jpg", JPG), ("z.text", b"One."), ("z.md", b"Two."),
        ("j.jpg", JPG), ("j.text", b"Unread."), ("j.json", b'{"caption": "From the json."}'),
        ("n.jpg", JPG),
    ])
    reader, rows = records(path)
    assert rows["y"]["caption"] is None and rows["y"]["caption_problem"] == (
        "no caption member in sample (y.text not read: .text is never parsed), caption members are .txt, .caption")
    assert rows["z"]["caption_problem"].startswith(
        "no caption member in sample (z.text not read: .text is never parsed, and 1 more unsupported member), ")
    assert (rows["j"]["caption"], rows["j"]["caption_problem"]) == ("From the json.", None)  # a caption was read
    assert rows["n"]["caption_problem"] is None  # nothing unread: simply no caption
    notes = [row["caption_problem"] for row in rows.values() if row["caption_problem"]]
    assert [ShardReader.problem_kind(n) for n in notes] == ["no caption member"] * 2  # one kind, one part each
    assert all("; " not in n for n in notes)

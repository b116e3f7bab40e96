"""The reader on hostile shards: every bad member is a row with a status or a counted skip."""

import pickle

import pytest

from curation_pipeline.shards.reader import ReaderLimits, ShardReader, cut_caption, iter_pair_batches
from curation_pipeline_tests.conftest import RAW_SAMPLES
from curation_pipeline_tests.faults import builders
from curation_pipeline_tests.shards import faults

pytestmark = pytest.mark.faults


def read(path, **kwargs):
    reader = ShardReader(str(path), "s", **kwargs)
    samples = {s.key: s for s in reader}
    return reader, samples


def test_good_and_broken_members_in_one_shard(tmp_path):
    path = builders.write_members(tmp_path / "s.tar", [
        ("a.jpg", faults.jpeg()), ("a.txt", b"A red square on a table."),
        ("b.jpg", faults.jpeg()[:200]), ("b.txt", b"truncated jpeg"),
        ("c.jpg", b""), ("c.txt", b"zero bytes"),
        ("d.txt", b"caption without image"),
        ("e.jpg", faults.jpeg()),
        ("f.jpg", faults.jpeg()), ("f.txt", b"caf\xe9 latte \xff"),
        ("g.jpg", faults.jpeg()), ("g.txt", b"x" * 1_000_000),
        ("h.png", faults.bomb_png()), ("h.txt", b"bomb"),
        ("i.jpg", faults.cmyk_jpeg()), ("i.txt", b"cmyk"),
        ("j.png", faults.png16()), ("j.txt", b"sixteen bit"),
        ("k.png", faults.palette_alpha_png()), ("k.txt", b"palette with transparency"),
        ("l.gif", faults.animated_gif()), ("l.txt", b"animated"),
        ("m.pyd", pickle.dumps({"boom": 1})), ("m.pickle", pickle.dumps(1)), ("m.pth", b"\x80\x04"),
        ("m.jpg", faults.jpeg()), ("m.txt", b"with pickle-like neighbours"),
        ("n.xyz", b"unknown"), ("n.jpg", faults.jpeg()), ("n.txt", b"unknown extension beside"),
        ("a.jpg", faults.jpeg()), ("a.txt", b"duplicate key later in the shard"),
    ])
    reader, samples = read(path)
    status = {k: s.record["decode_status"] for k, s in samples.items()}
    assert status == {"a": "ok", "b": "corrupt", "c": "empty", "d": "missing", "e": "ok", "f": "ok", "g": "ok",
                      "h": "too_large", "i": "ok", "j": "ok", "k": "ok", "l": "ok", "m": "ok", "n": "ok"}
    assert samples["a"].caption == "A red square on a table."
    assert samples["e"].caption is None
    assert samples["f"].caption == "caf\ufffd latte \ufffd" and samples["f"].record["caption_problem"] == "invalid utf-8 replaced"
    assert len(samples["g"].caption) == ReaderLimits().max_caption_chars
    assert samples["g"].record["caption_problem"] == "truncated from 1000000 chars"
    for key in "ijkl":
        assert samples[key].image.mode == "RGB" and samples[key].image.size == (300, 300)
    assert samples["l"].record["n_frames"] == 3
    assert samples["b"].record["decode_error"]
    reasons = sorted((s.reason, s.member) for s in reader.skips)
    assert reasons == [("duplicate_key", "a.jpg"), ("duplicate_key", "a.txt"), ("unsupported_member", "m.pickle"),
                       ("unsupported_member", "m.pth"), ("unsupported_member", "m.pyd"),
                       ("unsupported_member", "n.xyz")]


def test_pickle_members_are_never_unpickled(tmp_path, monkeypatch):
    called = []
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: called.append(a))
    path = builders.write_members(tmp_path / "s.tar", [("x.pyd", pickle.dumps(1)), ("x.jpg", faults.jpeg()),
                                                 ("x.txt", b"ok")])
    _, samples = read(path)
    assert samples["x"].record["decode_status"] == "ok" and called == []


def test_truncated_tar_keeps_the_samples_before_the_cut(tmp_path):
    members = [(f"{i:03d}.{ext}", data) for i in range(6)
               for ext, data in (("jpg", faults.jpeg()), ("txt", f"caption {i}".encode()))]
    path = builders.write_members(tmp_path / "full.tar", members)
    cut = tmp_path / "cut.tar"
    cut.write_bytes(path.read_bytes()[: int(path.stat().st_size * 0.6)])
    reader, samples = read(cut)
    assert 2 <= len(samples) < 6
    reasons = [s.reason for s in reader.skips]
    assert reasons[-1] == "truncated_tar" and set(reasons) <= {"unreadable_member", "truncated_tar"}
    assert all(s.caption.startswith("caption") for s in samples.values())



def test_a_sample_cut_short_by_the_tars_damage_says_what_it_may_have_lost(tmp_path):
    """An img2dataset tar cut at the header of a sample's json: that sample's image was read whole, so it looked
    complete; its row says its caption and json may have been lost there, not that it never had them. A tar cut
    inside its end-of-archive marker lost nothing: its last sample says nothing."""
    import json
    import tarfile

    members = [(f"{i:03d}.{ext}", data) for i in range(3) for ext, data in (
        ("jpg", faults.jpeg()), ("json", json.dumps({"caption": f"caption {i}"}).encode()),
        ("txt", f"caption {i}".encode()))]
    path = builders.write_members(tmp_path / "full.tar", members)
    with tarfile.open(path) as tar:
        offset = next(m.offset for m in tar if m.name == "002.json")
    cut = tmp_path / "cut.tar"
    cut.write_bytes(path.read_bytes()[:offset])
    reader, samples = read(cut)
    assert [s.reason for s in reader.skips] == ["truncated_tar"]
    lost = "no {} member read before the tar's damage right after this sample: it may have been lost there"
    last = samples["002"].record
    assert last["caption"] is None and last["caption_problem"] == lost.format("caption")
    assert last["meta_error"] == lost.format("meta") and last["decode_status"] == "ok"
    assert ShardReader.problem_kind(last["caption_problem"]) == "no caption member"
    assert all(samples[k].record["caption_problem"] is None for k in ("000", "001"))
    # cut inside the data of its caption instead: the json's caption is used, and the row says why
    cut.write_bytes(path.read_bytes()[:offset + 600])
    last = read(cut)[1]["002"].record
    assert last["caption"] == "caption 2" and last["caption_problem"] == lost.format("caption") + "; json caption used"
    # samples with no json, cut inside the first member of the next sample: the one before had ended
    plain = builders.write_members(tmp_path / "plain.tar", [m for m in members if not m[0].endswith(".json")])
    with tarfile.open(plain) as tar:
        offset = next(m.offset_data for m in tar if m.name == "002.jpg")
    cut.write_bytes(plain.read_bytes()[:offset + 100])
    reader, samples = read(cut)
    assert [s.reason for s in reader.skips] == ["unreadable_member", "truncated_tar"]
    assert list(samples) == ["000", "001"]
    assert samples["001"].record["caption_problem"] is None and samples["001"].record["meta_error"] is None
    # cut inside the end-of-archive marker: every member was read
    end = -(-len(path.read_bytes().rstrip(b"\0")) // 512) * 512  # the last member's data padded to its block
    cut.write_bytes(path.read_bytes()[:end + 512])
    reader, samples = read(cut)
    assert [s.reason for s in reader.skips] == ["truncated_tar"]
    assert samples["002"].record["caption_problem"] is None and samples["002"].record["meta_error"] is None


def test_every_member_of_a_repeated_key_is_a_skip_and_the_members_add_up(tmp_path):
    """The pairs' metadata counts skipped members: a repeated sample of three members is three skips."""
    jpg = faults.jpeg()
    path = builders.write_members(tmp_path / "d.tar", [("a.jpg", jpg), ("a.txt", b"A"), ("a.json", b"{}"),
                                                       ("b.jpg", jpg), ("a.jpg", jpg), ("a.txt", b"B"),
                                                       ("a.json", b"{}")])
    reader, samples = read(path)
    assert samples["a"].caption == "A"  # the first sample wins
    assert [(s.reason, s.member) for s in reader.skips] == [
        ("duplicate_key", "a.jpg"), ("duplicate_key", "a.txt"), ("duplicate_key", "a.json")]
    assert 4 + len(reader.skips) == 7  # the first a's three members and b's image are read: the rest are skips


def test_odd_tars_and_captions_say_what_they_are(tmp_path):
    """A UTF-16 caption file (PowerShell 5's ``>``) is read as what it says; a dot file and two tars joined with
    ``cat`` are skips that name what they are."""
    jpg = faults.jpeg()
    path = builders.write_members(tmp_path / "u.tar", [
        (".DS_Store", b"x"), ("README", b"y"),
        ("a.jpg", jpg), ("a.txt", "Ein Hund läuft über die Straße\r\n".encode("utf-16")),
        ("b.jpg", jpg), ("b.txt", "Straße".encode("utf-16")[:-1])])
    reader, samples = read(path)
    assert samples["a"].caption == "Ein Hund läuft über die Straße"
    assert samples["a"].record["caption_problem"] == "utf-16 decoded"
    assert samples["b"].record["caption_problem"] == "utf-16 decoded, invalid parts replaced"
    assert ShardReader.problem_kind("utf-16 decoded") == "utf-16 decoded"
    assert [(s.reason, s.member, s.detail.split(",")[0]) for s in reader.skips] == [
        ("no_extension", ".DS_Store", "the name starts with a dot"), ("no_extension", "README", "no '.' in the name: "
                                                                      "members are <key>.<ext>")]
    first = builders.write_members(tmp_path / "p1.tar", [("a.jpg", jpg), ("a.txt", b"A")])
    second = builders.write_members(tmp_path / "p2.tar", [("b.jpg", jpg), ("b.txt", b"B")])
    joined = tmp_path / "joined.tar"
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    reader, samples = read(joined)
    assert list(samples) == ["a"] and samples["a"].record["caption_problem"] is None
    (skip,) = reader.skips
    end = -(-len(first.read_bytes().rstrip(b"\0")) // 512) * 512  # the last member's data padded to its block
    assert skip.reason == "corrupt_tar" and skip.detail.startswith(
        f"after 2 members: an end-of-archive marker at tar offset {end}, then more data (tars joined with `cat`?")
    # compressed: the streams read on as one (as gzip and bzip2 read them), so the first archive's end marker is
    # met with more data after it, as for plain tars (before: the second archive waited unread, and nothing said so)
    import bz2
    import gzip
    import lzma

    for kind, compress in (("gzip", gzip.compress), ("bzip2", bz2.compress), ("xz", lzma.compress)):
        joined.write_bytes(compress(first.read_bytes()) + compress(second.read_bytes()))
        reader, samples = read(joined)
        assert list(samples) == ["a"]
        (skip,) = reader.skips
        assert skip.reason == "corrupt_tar" and skip.detail.startswith(
            f"after 2 members: an end-of-archive marker at tar offset {end}, then more data (tars joined with `cat`?"
        ), kind
        joined.write_bytes(compress(first.read_bytes()) + bytes(512))  # one, zero-padded: read whole, nothing said
        reader, samples = read(joined)
        assert list(samples) == ["a"] and reader.skips == [], kind
    joined.write_bytes(gzip.compress(first.read_bytes()) + b"X")  # gzip reads on past junk; said, not as an archive
    assert [s.detail for s in read(joined)[0].skips] == [
        "after 2 members: the gzip stream ended, then bytes that are no archive; not read"]


def test_empty_and_non_tar_files(tmp_path):
    empty = tmp_path / "empty.tar"
    empty.write_bytes(b"")
    reader, samples = read(empty)
    assert samples == {} and [s.reason for s in reader.skips] == ["unreadable_tar"]
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"not a tar at all" * 100)
    reader, samples = read(garbage)
    assert samples == {} and [s.reason for s in reader.skips] == ["unreadable_tar"]


def test_missing_shard_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        read(tmp_path / "nope.tar")


def test_batches_bound_memory_and_cover_the_shard():
    sizes = [len(b) for b, _ in iter_pair_batches(str(RAW_SAMPLES / "sample-000000.tar"), "sample-000000", 16)]
    assert sizes == [16, 16, 8]


def test_header_only_inventory_reads_what_a_full_decode_reads_but_the_pixels():
    """pairs reads headers (format, size, mode, frames) and leaves the one full decode to scoring."""
    path = str(RAW_SAMPLES / "sample-000001.tar")  # has a truncated JPEG behind a valid header
    full = [s.record for s in ShardReader(path, "s")]
    header = list(ShardReader(path, "s", decode="header"))
    assert all(s.image is None for s in header) and len(header) == len(full)
    same = ("image_format", "image_mode", "width", "height", "n_frames")
    differs = []
    for a, b in zip(full, (s.record for s in header)):
        assert {k: a[k] for k in same} == {k: b[k] for k in same}
        if a["decode_status"] != b["decode_status"]:
            differs.append((a["decode_status"], b["decode_status"]))
    assert differs and set(differs) == {("corrupt", "ok")}  # only the truncated body escapes a header read


def _rotated_jpeg() -> bytes:
    import io

    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown portrait
    out = io.BytesIO()
    Image.new("RGB", (320, 200), (10, 120, 200)).save(out, "JPEG", exif=exif.tobytes())
    return out.getvalue()


def test_verify_decode_gives_a_full_decodes_statuses_and_errors(tmp_path):
    """Scorers that read only sizes get a reduced-scale decode: every status and error as a full decode."""
    good = faults.jpeg(size=(640, 480))
    members = [("a.jpg", good), ("b.jpg", good[:300]), ("c.jpg", good[:-40]), ("d.jpg", b""),
               ("e.jpg", good[:len(good) // 2] + b"\x00" * 64 + good[len(good) // 2:]),
               ("f.png", faults.bomb_png()), ("g.jpg", faults.cmyk_jpeg()), ("h.png", faults.png16()),
               ("i.png", faults.palette_alpha_png()), ("j.gif", faults.animated_gif()), ("k.jpg", _rotated_jpeg()),
               ("l.jpg", b"\xff\xd8\xff\xe0 not really a jpeg")]
    members += [(f"{name.split('.')[0]}.txt", b"a caption") for name, _ in members]
    path = builders.write_members(tmp_path / "s.tar", sorted(members))
    _, full = read(path)
    _, verify = read(path, decode="verify")
    assert [s.record for s in verify.values()] == [s.record for s in full.values()]
    statuses = {k: s.record["decode_status"] for k, s in full.items()}
    assert statuses["b"] == statuses["c"] == "corrupt" and statuses["f"] == "too_large" and statuses["a"] == "ok"
    for key, sample in verify.items():
        if sample.image is None:
            assert full[key].image is None
        else:  # the stored size (rules on it are symmetric), unloaded until someone reads pixels
            assert sorted(sample.image.size) == sorted(full[key].image.size)
    assert verify["k"].image.size == (320, 200) and full["k"].image.size == (200, 320)


def test_text_profile_scores_are_the_same_with_the_cheaper_decode(tmp_path):
    from curation_pipeline.scoring.profiles import caption_scorers
    from curation_pipeline.scoring.run import reads_pixels, score_stream

    scorers = caption_scorers()
    assert not reads_pixels(scorers)
    path = str(RAW_SAMPLES / "sample-000001.tar")  # a truncated JPEG, tiny and odd-sized images
    full = score_stream(scorers, iter_pair_batches(path, "s", 16))
    verify = score_stream(scorers, iter_pair_batches(path, "s", 16, decode="verify"))
    assert full.equals(verify)
    assert full["decode_status"].eq("corrupt").any() and full["datacomp_min_side_ge200"].isna().any()


def test_the_accepted_image_formats_decode_without_importing_every_pillow_plugin():
    """``Image.init()`` (all ~50 plugins) costs a run's first shard 30-70 ms: each extension the reader
    accepts is decoded by a plugin it registered itself, and a format outside them is refused."""
    import subprocess
    import sys

    code = """
import io
from PIL import Image
from curation_pipeline.shards.reader import IMAGE_EXTS, NOT_AN_IMAGE, decode_image
saved = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP", "bmp": "BMP", "gif": "GIF", "tif": "TIFF"}
assert {e for e in IMAGE_EXTS if e not in ("jpeg", "jfif", "jpe", "tiff")} == set(saved), IMAGE_EXTS
for fmt in saved.values():
    out = io.BytesIO()
    Image.new("RGB", (8, 6), (200, 10, 10)).save(out, format=fmt)
    image, info = decode_image(out.getvalue())
    assert info["decode_status"] == "ok" and info["image_format"] == fmt and image.size == (8, 6), info
assert Image._initialized == 1, Image._initialized
out = io.BytesIO()
Image.new("RGB", (8, 6)).save(out, format="TGA")
image, info = decode_image(out.getvalue())
assert image is None and info["decode_error"] == NOT_AN_IMAGE, info  # (saving TGA imported every plugin)
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_a_tar_not_in_name_order_is_said_to_split_its_samples(tmp_path):
    """`tar -cf x.tar .` writes a folder in directory order: a sample's caption comes after another sample's
    image, and webdataset's grouping (consecutive members) reads every sample as half. Each later half is a
    duplicate_key skip that says why, not only that the key came twice."""
    jpg = faults.jpeg()
    path = builders.write_members(tmp_path / "u.tar", [("a.jpg", jpg), ("b.jpg", jpg), ("a.txt", b"a dog"),
                                                       ("b.txt", b"a cat"), ("c.jpg", jpg), ("c.txt", b"x"),
                                                       ("d.jpg", jpg), ("d.txt", b"y"), ("c.jpg", jpg)])
    reader = ShardReader(str(path), "u")
    assert [(s.key, s.caption) for s in reader] == [("a", None), ("b", None), ("c", "x"), ("d", "y")]
    details = {s.key: s.detail for s in reader.skips if s.reason == "duplicate_key"}
    split = ("key already read earlier in shard, without its caption: the sample's members are not next to each "
             "other (webdataset reads a sample from consecutive members; write the tar in name order, e.g. "
             "`tar --sort=name`)")
    assert details == {"a": split, "b": split, "c": "key already read earlier in shard"}  # c: a true duplicate


def test_a_caption_kept_under_another_json_key_is_named_not_read(tmp_path):
    """{"TEXT": ...} (LAION's parquet column) and no .txt: the pair has no caption, and its caption_problem says
    which keys its json has instead, rather than nothing."""
    import json

    jpg = faults.jpeg()
    path = builders.write_members(tmp_path / "j.tar", [
        ("a.jpg", jpg), ("a.json", json.dumps({"TEXT": "a dog", "alt": "", "url": "http://x"}).encode()),
        ("b.jpg", jpg), ("b.json", json.dumps({"url": "http://x", "text": 3}).encode())])
    rows = {s.key: s for s in ShardReader(str(path), "j")}
    assert rows["a"].caption is None and rows["a"].record["caption_problem"] == (
        "no caption member in sample, and no 'caption' in its json (which has 'TEXT': only 'caption' is read)")
    assert ShardReader.problem_kind(rows["a"].record["caption_problem"]) == "no caption member"
    assert rows["b"].caption is None and rows["b"].record["caption_problem"] is None  # nothing text-like to name


def test_a_caption_cut_at_the_limit_never_ends_in_part_of_a_word(tmp_path):
    """A 100,000-character caption cut at 10,000: "... coffee coff" gave scorers and the cleaner a new word
    ("coff") that was never written; the cut goes back to the space before it. Punctuation after a whole word,
    or a script without spaces, is cut at the limit."""
    jpg = faults.jpeg()
    path = builders.write_members(tmp_path / "c.tar", [
        ("a.jpg", jpg), ("a.txt", b"coffee " * 20), ("b.jpg", jpg), ("b.txt", b"A dog runs in a park. More."),
        ("c.jpg", jpg), ("c.txt", ("\u732b" * 40).encode())])
    rows = {s.key: s for s in ShardReader(str(path), "c", limits=ReaderLimits(max_caption_chars=60))}
    assert rows["a"].caption == " ".join(["coffee"] * 8)  # not "... coffee coff"
    assert rows["a"].record["caption_problem"] == "truncated from 140 chars"
    cut = {s.key: s for s in ShardReader(str(path), "c", limits=ReaderLimits(max_caption_chars=20))}
    assert cut["b"].caption == "A dog runs in a park"  # whole words: cut at the limit
    assert cut["c"].caption == "\u732b" * 20
    assert cut_caption("coffee", 6) == "coffee" and cut_caption("", 6) == ""  # within the limit: as it is

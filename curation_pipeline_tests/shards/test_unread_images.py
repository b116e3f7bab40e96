"""An image member the reader skips unread (over the size limit, not a regular file, cut short) is its
sample's image status, not "no image member": the pair's decode status says why, and so does its drop reason."""

import tarfile

import pandas as pd
import pytest

from curation_pipeline.decisions.policy import DecisionPolicy, image_drop_reasons
from curation_pipeline.shards.reader import ShardReader, decode_image
from curation_pipeline_tests.faults import builders
from curation_pipeline_tests.shards import faults

pytestmark = pytest.mark.faults

CUT = b"A caption whose image was cut short by the end of the transfer."


def unread_shard(path):
    """Samples whose image is skipped unread, around ones that show the grouping is webdataset's."""
    jpg = faults.jpeg()
    blocks = [
        builders.regular("a.jpg", jpg),
        builders.special("z.jpg", tarfile.SYMTYPE, "a.jpg"),  # between a's members: a stays one sample
        builders.regular("a.txt", b"A red square on a wooden table."),
        builders.sparse_member("t.jpg", 2 * builders.GB),
        builders.regular("t.txt", b"A caption whose image declares two gigabytes."),
        builders.special("s.jpg", tarfile.SYMTYPE, "a.jpg"),
        builders.regular("s.json", b'{"caption": "A caption whose image is a symlink."}'),
        builders.sparse_member("v.jpg", 2 * builders.GB),
        builders.regular("v.jpeg", jpg),  # an image read for the same sample is its image
        builders.regular("v.txt", b"A sample with one image too large and one read."),
        builders.special("y.jpg", tarfile.SYMTYPE, "a.jpg"),  # a key with no member read: a skip, no sample
        builders.regular("w.txt", b"A caption that never had an image."),
        builders.regular("u.txt", CUT),
    ]
    data = b"".join(blocks) + builders.regular("u.jpg", jpg)
    path.write_bytes(data[:len(b"".join(blocks)) + 512 + len(jpg) // 2])  # cut inside u.jpg's data
    return path


UNREAD = {"t": ("too_large", "t.jpg declares 2,147,483,648 bytes (sparse), over the 67,108,864-byte member limit; "
                         "not read"),
          "s": ("missing", "s.jpg is a symlink -> a.jpg, not a regular file; not read")}


@pytest.mark.parametrize("decode", [True, "header", "verify"])
def test_a_skipped_image_gives_its_pair_the_status_of_why(tmp_path, decode):
    reader = ShardReader(str(unread_shard(tmp_path / "s.tar")), "s", decode=decode)
    records = {s.key: s.record for s in reader}
    assert list(records) == ["a", "t", "s", "v", "w", "u"]
    status = {k: (r["decode_status"], r["image_ext"]) for k, r in records.items()}
    assert status == {"a": ("ok", "jpg"), "t": ("too_large", "jpg"), "s": ("missing", "jpg"),
                      "v": ("ok", "jpeg"), "w": ("missing", None), "u": ("corrupt", "jpg")}
    for key, (_, error) in UNREAD.items():
        assert records[key]["decode_error"] == error
    assert records["u"]["decode_error"].startswith("u.jpg: its data could not be read (")
    assert records["w"]["decode_error"] == "no image member in sample"
    assert records["u"]["caption"] == CUT.decode() and records["t"]["image_bytes"] is None
    # each skipped member is counted once, as before; no sample is split or made a duplicate
    assert sorted((s.reason, s.member) for s in reader.skips) == [
        ("member_too_large", "t.jpg"), ("member_too_large", "v.jpg"), ("not_a_file", "s.jpg"),
        ("not_a_file", "y.jpg"), ("not_a_file", "z.jpg"), ("truncated_tar", None), ("unreadable_member", "u.jpg")]
    reasons = image_drop_reasons(pd.DataFrame(list(records.values())), DecisionPolicy())
    assert {k: r for k, r in zip(records, reasons) if isinstance(r, str)} == {
        "t": "image_too_large", "s": "image_missing", "w": "image_missing", "u": "image_corrupt"}


def test_without_a_decode_the_record_carries_why_for_a_decode_elsewhere(tmp_path):
    """The Ray engine reads undecoded (``decode=False``) and decodes on its workers: the record says why."""
    records = {s.key: s.record for s in ShardReader(str(unread_shard(tmp_path / "s.tar")), "s", decode=False)}
    carried = {k: (r["decode_status"], r["decode_error"]) for k, r in records.items() if "decode_status" in r}
    assert {k: v for k, v in carried.items() if k != "u"} == UNREAD and carried["u"][0] == "corrupt"
    for key, absent in carried.items():
        assert decode_image(None, absent=absent)[1]["decode_status"] == absent[0]

"""A dot in a sample's key (``img.v1.jpg``): the key ends at the first dot, as webdataset splits names, so the
extension is ``v1.jpg`` and the member is never parsed. Nothing is lost unsaid: each such member is a counted
skip saying so, a pair with other members read says why it has no image (or caption, or json), and a key none
of whose members was read is no pair."""

import pandas as pd
import pytest

from curation_pipeline.decisions.policy import DecisionPolicy, image_drop_reasons
from curation_pipeline.shards.reader import ShardReader
from curation_pipeline_tests.faults import builders
from curation_pipeline_tests.shards import faults

pytestmark = pytest.mark.faults


def dotted_shard(path):
    jpg = faults.jpeg()
    return builders.write_members(path, [
        ("img.v1.jpg", jpg), ("img.v1.txt", b"A caption nobody reads."),  # nothing of key img is read
        ("b.v2.jpg", jpg), ("b.txt", b"A caption whose image has a dot in its key."),
        ("c.jpg", jpg), ("c.v1.txt", b"An image whose caption has a dot in its key."), ("c.v1.json", b"{}"),
        ("img.jpg", jpg), ("img.txt", b"A later sample of key img."),  # not a duplicate of no sample
    ])


@pytest.mark.parametrize("decode", [True, "header", False])
def test_members_with_a_dot_in_the_key_are_counted_skips_and_their_pair_says_why(tmp_path, decode):
    reader = ShardReader(str(dotted_shard(tmp_path / "s.tar")), "s", decode=decode)
    records = {s.key: s.record for s in reader}
    assert list(records) == ["b", "c", "img"]
    b, c = records["b"], records["c"]
    assert (b["decode_status"], b["image_ext"]) == ("missing", "v2.jpg")
    assert b["decode_error"].startswith("b.v2.jpg not read: .v2.jpg is never parsed: a key ends at the first dot")
    assert "key is 'b'" in b["decode_error"] and b["caption"] == "A caption whose image has a dot in its key."
    assert c["caption"] is None and c["caption_problem"].startswith("c.v1.txt not read: .v1.txt is never parsed")
    assert c["meta_error"].startswith("c.v1.json not read: .v1.json is never parsed")
    assert records["img"]["caption"] == "A later sample of key img." and records["img"]["image_bytes"]
    skips = sorted((s.reason, s.member, s.detail.split(":")[0]) for s in reader.skips)
    assert skips == [("unsupported_member", m, f".{m.split('.', 1)[1]} is never parsed")
                     for m in ("b.v2.jpg", "c.v1.json", "c.v1.txt", "img.v1.jpg", "img.v1.txt")]
    if decode is True:
        reasons = image_drop_reasons(pd.DataFrame(list(records.values())), DecisionPolicy())
        assert dict(zip(records, reasons))["b"] == "image_missing"

"""One ``curate run`` of two shards that share photos, where one shard fails a blocking check when it is
decided: that shard publishes nothing, so the other must publish the copies the pool index first kept in
it. The run settles again after deciding (as the settle sensor would), and the report holds a pool whose
blocked shards moved since its index to be unsettled, as the sensor does, instead of calling it settled."""

from __future__ import annotations

import tarfile

import pytest
from click.testing import CliRunner

from curation_pipeline.checks import quality
from curation_pipeline.cli import EXIT_FAILED, main
from curation_pipeline.reporting.report import unsettled_shards
from curation_pipeline.storage.provenance import FAILED_CHECKS_KEY
from curation_pipeline.storage.warehouse import Warehouse
from curation_pipeline_tests.faults import builders
from curation_pipeline_tests.faults.test_dedup_order import shard_members

pytestmark = pytest.mark.faults

PADDING = " photographed in great detail with a wide angle lens on a bright sunny afternoon near the river"


def drifting(shard: str, monkeypatch) -> None:
    """The drift check as it is, shown ``shard``'s final captions bloated (as a rewriter gone wrong would write
    them): that shard's final_captions fail it, the other's pass."""
    real = quality.caption_length_drift

    def check(final, policy):
        if final["shard"].eq(shard).all():
            final = final.assign(final_caption=final["final_caption"] + PADDING)
        return real(final, policy)

    monkeypatch.setattr(quality, "caption_length_drift", check)


def pool(tmp_path, monkeypatch) -> list[str]:
    """dup-a and dup-b in a raw folder, a Dagster home for them; the command line of a run into tmp_path/wh."""
    raw = tmp_path / "raw"
    raw.mkdir()
    for shard, members in shard_members().items():
        builders.write_members(raw / f"{shard}.tar", members)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CURATE_FORKSERVER", "off")  # the shards run in this process, with its drift check
    return ["run", "--raw", str(raw), "--warehouse", str(tmp_path / "wh")]


def test_a_shard_failing_its_decision_leaves_its_copies_published_elsewhere(tmp_path, monkeypatch):
    run = pool(tmp_path, monkeypatch)
    drifting("dup-a", monkeypatch)
    wh = tmp_path / "wh"
    result = CliRunner().invoke(main, run)
    assert result.exit_code == EXIT_FAILED and "FAILED: dup-a" in result.output, result.output
    assert "caption_length_drift" in result.output
    assert not (wh / "curated" / "dup-a.tar").exists()
    # the ten photos both shards hold alike went to dup-a by name, then dup-a published nothing: dup-b's
    # copies of them are published (and its originals of dup-a's thumbnails, and its own unique pairs)
    with tarfile.open(wh / "curated" / "dup-b.tar") as tar:
        published = sorted({member.name.split(".")[0] for member in tar.getmembers()})
    assert published == sorted([f"t{i:03d}" for i in range(5, 20)] + [f"v{i:03d}" for i in range(10)])
    final = Warehouse(str(wh)).read_table("final_captions", "dup-b")
    assert not final["reason"].astype(str).str.startswith("duplicate").any(), final["reason"].value_counts()
    assert unsettled_shards(Warehouse(str(wh))) == {}

    # a mark that appears since the index was built (here dup-b's final_captions failing a check) is another
    # pool: which copies survive is not known until the index is rebuilt, and the report says so
    Warehouse(str(wh)).update_table_metadata("final_captions", "dup-b", {FAILED_CHECKS_KEY: "caption_length_drift"})
    unsettled = unsettled_shards(Warehouse(str(wh)))
    assert "a blocking check failed, or passed again, since on: dup-b" in unsettled.get("dup-b", ""), unsettled


def test_a_shard_of_an_earlier_run_failing_when_re_selected_is_settled_again(tmp_path, monkeypatch):
    """dup-b, curated by an earlier run, is re-selected by a run of dup-a and fails its blocking check there: its
    earlier tar stays published, so dup-a must give way to it again, or ten photos are published twice."""
    import hashlib

    run, wh = pool(tmp_path, monkeypatch), tmp_path / "wh"
    first = CliRunner().invoke(main, [*run, "--shard", "dup-b"])
    assert first.exit_code == 0, first.output
    drifting("dup-b", monkeypatch)
    second = CliRunner().invoke(main, [*run, "--shard", "dup-a"])
    assert second.exit_code == EXIT_FAILED and "FAILED: dup-b" in second.output, second.output
    hashes = []
    for shard in ("dup-a", "dup-b"):
        with tarfile.open(wh / "curated" / f"{shard}.tar") as tar:
            hashes += [hashlib.sha256(tar.extractfile(m).read()).hexdigest() for m in tar.getmembers()
                       if m.name.endswith(".jpg")]
    assert len(hashes) == len(set(hashes)), len(hashes) - len(set(hashes))  # no photo published twice
    assert unsettled_shards(Warehouse(str(wh))) == {}

"""A write that fails part-way leaves nothing behind: no partial file under the target's name, no temp file."""

import numpy as np
import pytest

from curation_pipeline.shards.uids import write_subset
from curation_pipeline.shards.writer import write_tar


def test_a_tar_whose_members_fail_part_way_leaves_no_file(tmp_path):
    def members():
        yield "a.txt", b"a caption"
        raise OSError("source went away")

    with pytest.raises(OSError, match="source went away"):
        write_tar(tmp_path / "shard.tar", members())
    assert list(tmp_path.iterdir()) == []
    assert write_tar(tmp_path / "shard.tar", [("a.txt", b"a caption")]).stat().st_size > 0
    assert [p.name for p in tmp_path.iterdir()] == ["shard.tar"]


def test_a_subset_that_cannot_be_saved_leaves_no_temp_file(tmp_path, monkeypatch):
    uid = "0123456789abcdef0123456789abcdef"

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_subset(tmp_path / "kept.npy", [uid])
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    assert len(write_subset(tmp_path / "kept.npy", [uid])) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["kept.npy"]

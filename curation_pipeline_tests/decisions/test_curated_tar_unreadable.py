"""A held shard's curated tar that does not read is a clear error, not an empty publish set: which pairs
it publishes is unknown, and guessing "none" would let their copies elsewhere out twice."""

from pathlib import Path

import pytest

from curation_pipeline.decisions.dedup import curated_keys, curated_pairs
from curation_pipeline.storage.warehouse import Warehouse


@pytest.mark.parametrize("read", [curated_keys, curated_pairs], ids=["keys", "pairs"])
def test_an_unreadable_curated_tar_says_what_to_do(tmp_path, read):
    wh = Warehouse(str(tmp_path))
    path = Path(wh.curated_path("s1"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00not a tar" * 100)
    with pytest.raises(ValueError, match=r"curated tar of frozen shard 's1' .* does not read .* Restore it"):
        read(wh, "s1")

"""A batch ends early once its images declare ``max_batch_pixels``: one sample's ``max_pixels`` bounds an image, not
a batch of them (a 219 KB PNG declares 100 MP; 32 of them decoded held 24 GB). The local engine and Ray's read task
cut at the same samples, so their batches, and the rows scored from them, stay alike."""

import json

import pytest

from curation_pipeline.shards.reader import ReaderLimits, iter_pair_batches
from curation_pipeline_tests.faults import builders
from curation_pipeline_tests.shards import faults

pytestmark = pytest.mark.faults  # cited in docs/faults.md: runs with -m faults


def test_large_images_end_a_batch_early_alike_locally_and_on_ray(tmp_path):
    from curation_pipeline.compute.ray_data import read_shard_batches

    big, small = faults.jpeg((200, 100)), faults.jpeg((20, 10))  # 20,000 and 200 pixels
    images = [big, small, big, b"not an image", small, faults.bomb_png(), big, big, None, small, big]
    members = [(f"s{i:02d}.{ext}", data) for i, image in enumerate(images)
               for ext, data in (("jpg", image), ("txt", f"caption {i}".encode())) if data is not None]
    path = str(builders.write_members(tmp_path / "b.tar", members))
    limits = ReaderLimits(max_pixels=1_000_000, max_batch_pixels=40_000)
    local = [batch.keys for batch, _ in iter_pair_batches(path, "b", batch_size=4, limits=limits)]
    assert local == [["s00", "s01", "s02"],  # 40,200 pixels: ended at 3
                     ["s03", "s04", "s05", "s06"],  # garbage, 200, the bomb (over max_pixels: never decoded), 20,000
                     ["s07", "s08", "s09", "s10"]]  # 4 samples before 40,000: ended by batch_size
    verified = [batch.keys for batch, _ in iter_pair_batches(path, "b", batch_size=4, limits=limits, decode="verify")]
    ray = [[json.loads(r)["key"] for r in row["records"]] for table in read_shard_batches(path, "b", 4, limits=limits)
           for row in table.to_pylist()]
    assert verified == local and ray == local
    assert [batch.keys for batch, _ in iter_pair_batches(path, "b", batch_size=4)] == [  # the default: 400 MP
        [f"s{i:02d}" for i in range(j, min(j + 4, 11))] for j in range(0, 11, 4)]


"""A rewrite's targets go to the model in full batches, and only their images are decoded: batched as the
shard was scored, a VLM with a batch size of 16 ran on the 3 targets of each batch at a 20% rewrite rate."""

import pandas as pd
import pytest

from curation_pipeline.shards import reader
from curation_pipeline.shards.reader import iter_pair_batches
from curation_pipeline_tests.conftest import RAW_SAMPLES

SHARD = "sample-000001"
URL = str(RAW_SAMPLES / f"{SHARD}.tar")


@pytest.fixture()
def decoded(monkeypatch):
    """The sizes of the images decoded in full."""
    seen, real = [], reader.decode_image

    def decode(data, *args, **kwargs):
        image, info = real(data, *args, **kwargs)
        if image is not None:
            seen.append(image.size)
        return image, info

    monkeypatch.setattr(reader, "decode_image", decode)
    return seen


@pytest.mark.parametrize("batch_size", [4, 16])
def test_targets_fill_their_batches_and_only_their_images_are_decoded(decoded, batch_size):
    from curation_pipeline.rewriting.targets import target_batches

    every = [(batch.keys, batch.captions, batch.images) for batch, _ in iter_pair_batches(URL, SHARD, 64)]
    keys = [k for ks, _, _ in every for k in ks]
    captions = dict(zip(keys, (c for _, cs, _ in every for c in cs)))
    sizes = dict(zip(keys, (im.size if im is not None else None for _, _, ims in every for im in ims)))
    chosen = keys[1::5]  # a 20% rewrite rate
    targets = pd.DataFrame({"key": chosen[::-1], "caption": [captions[k] for k in chosen[::-1]]})
    decoded.clear()

    batches = list(target_batches(targets, URL, SHARD, True, batch_size))

    assert [len(b.keys) for b in batches[:-1]] == [batch_size] * (len(batches) - 1)
    assert 0 < len(batches[-1].keys) <= batch_size
    assert [k for b in batches for k in b.keys] == chosen  # shard order, each target once
    assert [c for b in batches for c in b.captions] == [captions[k] for k in chosen]
    assert [im.size if im is not None else None for b in batches for im in b.images] == [sizes[k] for k in chosen]
    assert sorted(decoded) == sorted(s for s in (sizes[k] for k in chosen) if s is not None)

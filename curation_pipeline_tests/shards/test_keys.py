import pytest

from curation_pipeline.shards.keys import InvalidShardName, shard_key, validate_key


@pytest.mark.parametrize("name,key", [("data/raw/sample-000001.tar", "sample-000001"),
                                      ("s3://bucket/x/shard_01.tar", "shard_01")])
def test_key_is_the_stem(name, key):
    assert shard_key(name) == key


@pytest.mark.parametrize("name", ["bad name.tar", "über.tar", "a.b.tar", "../../e t c.tar", ".tar", "x.tar.gz"])
def test_other_characters_are_rejected_with_a_suggestion(name):
    with pytest.raises(InvalidShardName) as info:
        shard_key(name)
    assert name.split("/")[-1] in str(info.value)


@pytest.mark.parametrize("key", ["../x", "a/b", "", "a" * 129])
def test_keys_never_become_paths(key):
    with pytest.raises(InvalidShardName):
        validate_key(key)

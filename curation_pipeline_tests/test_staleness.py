"""The prefetching staleness resolver answers as Dagster's own does, from a number of queries that does not
grow with the shards."""

import dagster as dg
import pytest
from dagster._core.definitions.data_version import DATA_VERSION_TAG, CachingStaleStatusResolver, StaleStatus
from dagster._core.definitions.events import AssetKeyPartitionKey

from curation_pipeline.automation import RAW, SHARD_KEYS, not_made_here_in_order
from curation_pipeline.definitions import defs
from curation_pipeline.partitions import shard_partitions
from curation_pipeline.staleness import PrefetchedStaleStatusResolver, asset_graph_view
from curation_pipeline_tests.provenance import GRAPH, Home

REPOSITORY = defs.get_repository_def()


# what a run's materialization carries besides its tags: the resolver leaves it out, and must answer the same
METADATA = {"dagster/column_schema": dg.TableSchema(columns=[dg.TableColumn("key", "string")]),
            "dagster/row_count": 40, "chart": dg.MetadataValue.md("![chart](data:image/png;base64,AAAA)")}


@pytest.fixture
def home(shipped_home):
    with dg.DagsterInstance.get() as instance:
        yield Home(instance, METADATA)


def _resolvers(instance):
    view = asset_graph_view(instance, GRAPH)
    return (CachingStaleStatusResolver(instance=instance, asset_graph=GRAPH, loading_context=view),
            PrefetchedStaleStatusResolver(instance, GRAPH, view, [RAW, *SHARD_KEYS]))


def _answers(resolver, shards):
    return {(key.to_user_string(), shard): (resolver.get_status(key, shard),
                                            sorted(map(repr, resolver.get_stale_causes(key, shard))),
                                            sorted(map(repr, resolver.get_stale_root_causes(key, shard))),
                                            resolver.get_current_data_version(key, shard))
            for key in [RAW, *SHARD_KEYS] for shard in shards}


def test_every_status_and_cause_is_dagsters(home, monkeypatch):
    for shard in ("fresh", "new-raw", "same-raw", "old-code", "pairs-again", "scores-again"):
        home.shard(shard)
    home.instance.add_dynamic_partitions(shard_partitions.name, ["registered-only", "observed-only", "half"])
    home.observe("half", "r-half")
    for key in SHARD_KEYS[:2]:  # a run stopped after the scores
        home.materialize(key, "half")
    home.observe("new-raw", "r-new-raw-2")  # new content: stale from pairs on
    home.observe("same-raw", "r-same-raw")  # observed again, same content: fresh
    home.materialize(SHARD_KEYS[-1], "old-code", code="0")  # made by older code
    home.materialize(SHARD_KEYS[0], "pairs-again")  # its downstream tables read the older pairs
    home.materialize(SHARD_KEYS[1], "scores-again")
    home.observe("observed-only", "r-o")
    shards = ["fresh", "new-raw", "same-raw", "old-code", "pairs-again", "half", "scores-again", "registered-only",
              "observed-only", "not-registered"]
    plain, prefetched = _resolvers(home.instance)
    expected = _answers(plain, shards)
    assert _answers(prefetched, shards) == expected
    ids, records = prefetched.latest_materializations(SHARD_KEYS[0])
    assert records and not any(r.asset_materialization.metadata for r in records.values())  # left out
    assert plain._get_latest_data_version_record(key=AssetKeyPartitionKey(SHARD_KEYS[0], "fresh")) \
        .asset_materialization.metadata["dagster/row_count"].value == 40
    # the shards Dagster calls fresh: what refresh_plan looks at next, from the same records
    root = str(home.instance.root_directory)
    unsettled = not_made_here_in_order(home.instance, REPOSITORY, root, shards)
    monkeypatch.setattr(type(home.instance), "fetch_materializations", None)  # read once, not again
    assert not_made_here_in_order(home.instance, REPOSITORY, root, shards, prefetched) == unsettled
    for key in SHARD_KEYS:  # each shard asset's inputs, in Dagster's order
        for shard in shards:
            asked = AssetKeyPartitionKey(key, shard)
            assert prefetched._get_partition_dependencies(key=asked) == plain._get_partition_dependencies(key=asked)
    # the states are the ones meant: not all alike
    statuses = {shard: {expected[(k.to_user_string(), shard)][0] for k in SHARD_KEYS} for shard in shards}
    assert statuses["fresh"] == statuses["same-raw"] == {StaleStatus.FRESH}
    assert statuses["registered-only"] == statuses["observed-only"] == {StaleStatus.MISSING}
    assert StaleStatus.STALE in statuses["new-raw"] and StaleStatus.STALE in statuses["old-code"]
    assert StaleStatus.STALE in statuses["pairs-again"] and StaleStatus.STALE in statuses["scores-again"]
    assert statuses["half"] == {StaleStatus.FRESH, StaleStatus.MISSING}


def test_a_raw_file_materialized_and_wiped_assets_as_dagster_reads_them(home):
    """Cases the prefetch leaves to Dagster or must read as it does: an observable asset's partition that was
    also materialized (the later of the two counts), a partition only materialized, wiped assets."""
    for shard in "abcdeg":
        home.shard(shard)
    home.instance.add_dynamic_partitions(shard_partitions.name, ["f"])
    for shard, version in (("a", "m-a"), ("b", "r-b"), ("c", "m-c"), ("f", "m-f")):
        home.instance.report_runless_asset_event(dg.AssetMaterialization(RAW, partition=shard,
                                                                         tags={DATA_VERSION_TAG: version}))
    home.observe("c", "r-c-2")  # observed again after its materialization, with new content
    shards = list("abcdefg")
    plain, prefetched = _resolvers(home.instance)
    assert _answers(prefetched, shards) == _answers(plain, shards)
    home.instance.wipe_assets([SHARD_KEYS[0]])
    home.materialize(SHARD_KEYS[0], "d")  # made again after the wipe
    plain, prefetched = _resolvers(home.instance)
    assert _answers(prefetched, shards) == _answers(plain, shards)
    assert plain.get_status(SHARD_KEYS[0], "e") == StaleStatus.MISSING  # the wipe is read
    home.instance.wipe_assets([RAW])
    home.observe("g", "r-g")
    plain, prefetched = _resolvers(home.instance)
    assert _answers(prefetched, shards) == _answers(plain, shards)


def test_queries_do_not_grow_with_the_shards(home, monkeypatch):
    calls = []
    for name in ("fetch_materializations", "fetch_observations", "get_latest_data_version_record"):
        original = getattr(type(home.instance), name)
        monkeypatch.setattr(type(home.instance), name,
                            lambda self, *a, _name=name, _f=original, **k: calls.append(_name) or _f(self, *a, **k))

    def queries(shards):
        calls.clear()
        _, prefetched = _resolvers(home.instance)
        for shard in shards:
            for key in SHARD_KEYS:
                prefetched.get_status(key, shard)
        return len(calls)

    for i in range(12):  # curated, and only registered (a new shard)
        home.shard(f"s{i}")
    home.instance.add_dynamic_partitions(shard_partitions.name, [f"m{i}" for i in range(12)])
    few = queries([f"{kind}{i}" for kind in "sm" for i in range(3)])
    many = queries([f"{kind}{i}" for kind in "sm" for i in range(12)])
    assert few == many
    plain, _ = _resolvers(home.instance)
    calls.clear()
    for shard in [f"s{i}" for i in range(12)]:
        for key in SHARD_KEYS:
            plain.get_status(key, shard)
    assert len(calls) > 12 * len(SHARD_KEYS)  # what it saves: Dagster's asks per shard and asset


def test_collection_resumes_after_the_plan_whatever_happens():
    import gc

    from curation_pipeline.staleness import paused_gc

    assert gc.isenabled()
    with pytest.raises(RuntimeError), paused_gc():
        assert not gc.isenabled()
        raise RuntimeError("a failed query")
    assert gc.isenabled()
    gc.disable()  # a caller that had paused it keeps it paused
    try:
        with paused_gc():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_record_that_does_not_decode_is_read_as_dagster_reads_it(home):
    """Dagster skips an event row it cannot parse (with a warning); the prefetch must not fail the plan."""
    from dagster._core.storage.event_log.schema import SqlEventLogStorageTable

    for shard in ("a", "b"):
        home.shard(shard)
    broken = home.latest[(SHARD_KEYS[0], "a")][0]
    table = SqlEventLogStorageTable
    with home.instance.event_log_storage.index_connection() as conn:
        text = conn.execute(table.select().with_only_columns(table.c.event).where(table.c.id == broken)).scalar()
        conn.execute(table.update().where(table.c.id == broken).values(event=text[:100]))
    plain, prefetched = _resolvers(home.instance)
    expected = _answers(plain, ["a", "b"])
    assert expected[(SHARD_KEYS[0].to_user_string(), "a")][0] == StaleStatus.MISSING  # what Dagster makes of it
    assert _answers(prefetched, ["a", "b"]) == expected


def test_pairs_made_outside_its_shards_run_reads_fresh_until_its_raw_file_changes(shipped_home, tmp_path):
    """The UI's Materialize and asset backfills run pairs without observing the shard first: Dagster pointed its
    raw_shards input at the latest observation of any shard, so the next observation of the very file it read
    marked the shard stale (the schedule ran it again whole), and a file replaced and made before being observed
    read stale the same way. pairs points the input at the shard's own observation of what it read."""
    import shutil

    from dagster._core.definitions.data_version import get_input_data_version_tag
    from dagster._core.definitions.observe import observe as observe_assets

    from curation_pipeline.assets.ingest import pairs, raw_shards
    from curation_pipeline.definitions import build_resources
    from curation_pipeline.shards.fingerprint import hash_file
    from curation_pipeline_tests.conftest import QUIET, RAW_SAMPLES

    raw = tmp_path / "raw"
    raw.mkdir()
    for shard in ("sample-000001", "sample-000002"):
        shutil.copy(RAW_SAMPLES / "sample-000001.tar", raw / f"{shard}.tar")
    resources = build_resources(str(raw), str(tmp_path / "wh"))
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions(shard_partitions.name, ["sample-000001", "sample-000002"])

        def observe(shard):
            assert observe_assets([raw_shards], partition_key=shard, resources=resources, instance=instance,
                              run_config=QUIET).success

        def make(shard):  # the asset path: no observation in the run
            made = dg.materialize([raw_shards, pairs], selection=[pairs.key], partition_key=shard,
                                  resources=resources, instance=instance, run_config=QUIET)
            assert made.success
            return made.asset_materializations_for_node("pairs")[0]

        def status(shard):
            view = asset_graph_view(instance, GRAPH)
            return CachingStaleStatusResolver(instance=instance, asset_graph=GRAPH, loading_context=view) \
                .get_status(dg.AssetKey("pairs"), shard)

        observe("sample-000001")  # the latest observation of the asset: another shard's
        made = make("sample-000002")  # its partition added by hand: never observed
        sha = hash_file(str(raw / "sample-000002.tar"))[1]
        assert made.tags[get_input_data_version_tag(RAW)] == sha  # was the hash of no version at all
        observe("sample-000002")  # the file it read
        assert status("sample-000002") == StaleStatus.FRESH
        shutil.copy(RAW_SAMPLES / "sample-000002.tar", raw / "sample-000002.tar")  # replaced, made before observed
        observe("sample-000001")
        make("sample-000002")
        observe("sample-000002")
        assert status("sample-000002") == StaleStatus.FRESH
        shutil.copy(RAW_SAMPLES / "sample-000000.tar", raw / "sample-000002.tar")  # replaced after: stale
        observe("sample-000002")
        assert status("sample-000002") == StaleStatus.STALE

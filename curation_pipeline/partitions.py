"""One dynamic partition per raw shard; the sensor adds them as files appear."""

import dagster as dg

shard_partitions = dg.DynamicPartitionsDefinition(name="shards")


def add_shards(instance: dg.DagsterInstance, shards: list[str], attempts: int = 3) -> list[str]:
    """Register the shards not registered yet; returns those this call added. Dagster's check-then-insert is not
    atomic: another process (`curate run`, the UI's register_shards, the sensor) adding the same key in between
    makes the insert fail on the table's unique key, so the keys still missing are looked up and added again."""
    from sqlalchemy.exc import IntegrityError

    for attempt in range(attempts):
        new = [shard for shard in dict.fromkeys(shards) if not instance.has_dynamic_partition(shard_partitions.name,
                                                                                             shard)]
        try:
            if new:
                instance.add_dynamic_partitions(shard_partitions.name, new)
            return new
        except IntegrityError:
            if attempt == attempts - 1:
                raise
    return []

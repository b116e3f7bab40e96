"""One dynamic partition per raw shard; the sensor adds them as files appear."""

import dagster as dg

shard_partitions = dg.DynamicPartitionsDefinition(name="shards")

"""Where an asset's heavy work runs: in the Dagster step's own process, or on a Ray cluster.

Dagster stays the control plane (partitions, checks, lineage, the UI). With the ``compute``
resource set to ``engine: ray`` (``curation_pipeline.resources.ComputeResource``, a
dagster-ray ``RayResource`` that connects to the cluster it names), ``quality_scores`` and
``rewritten_captions`` run their decoding, scoring and rewriting as Ray Data streaming over
the shard's samples:

    read (one task per shard, streams the tar: members in, raw sample rows out)
      -> decode (Ray Data tasks: the reader's own ``decode_image``)
      -> score / rewrite (Ray Data actor pool: models load once per actor, GPUs per actor)
      -> the Dagster step (rows back in shard order, one Parquet file written as before)

Each batch of the local engine is one batch here too (same members, same order), and the
actors call the same functions the local engine calls, so both engines write the same
Parquet rows and the same curated tar bytes. ``options.RayOptions`` holds the knobs;
``ray_data`` the pipelines; ``cluster`` starts a private local cluster for tests and the
benchmark. Nothing here imports Ray until a Ray pipeline runs.
"""

from curation_pipeline.compute.options import RayOptions, RayStats

__all__ = ["RayOptions", "RayStats"]

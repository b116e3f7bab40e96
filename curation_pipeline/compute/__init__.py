"""Where an asset's heavy work runs: in the Dagster step's own process, or on a Ray cluster.

Dagster stays the control plane. With the ``compute`` resource set to ``engine: ray``
(``resources.ComputeResource``), decoding, scoring and rewriting run as Ray Data streaming over the
shard's samples (``ray_data``), batch for batch as the local engine runs them and with the same
functions, so both engines write the same Parquet rows and curated tar bytes. ``options.RayOptions``
holds the knobs; ``cluster`` starts a private local cluster for tests and the benchmark. Nothing
here imports Ray until a Ray pipeline runs.
"""

from curation_pipeline.compute.options import RayOptions, RayStats

__all__ = ["RayOptions", "RayStats"]

"""The IO manager for per-shard tables: assets return DataFrames and name their inputs, so the
asset graph shows what reads what, while every table stays one atomic Parquet file per shard.

Every table after ``pairs`` records the SHA-256 of the raw file its inputs came from, and every input
read must come from the raw file ``pairs`` records now: a shard whose raw file was replaced and whose
``pairs`` was made again cannot feed old scores or captions into a step (say, ``curated_shards`` run
alone would publish the new images with the old captions). The record is what the step read, not what
``pairs`` says when the step ends: a step still running when another run makes ``pairs`` again from a
new raw file fails instead of passing its old rows off as the new file's. A table that failed a blocking check when
it was made is read by no step, in any later run either (Dagster's blocking holds in its own run)."""

import dagster as dg
import pandas as pd
from pydantic import PrivateAttr

from curation_pipeline.assets.metadata import table_metadata
from curation_pipeline.resources import WarehouseResource
from curation_pipeline.storage.provenance import (FAILED_CHECKS_KEY, FILE_METADATA, FINGERPRINT_KEY,  # noqa: F401
                                                  RAW_SHA_KEY, raw_sha)
from curation_pipeline.storage.warehouse import FileChanged, Warehouse


def current_raw_sha(wh: Warehouse, shard: str) -> str | None:
    """The raw file the shard's stored pairs read (None without pairs, or pairs of an older version)."""
    try:
        return raw_sha(wh.table_metadata("pairs", shard))
    except FileNotFoundError:
        return None


LOADED = "loaded"  # a ``versioned`` input's attrs: {"version": the file version read, "metadata": its own metadata}


def versioned() -> dg.AssetIn:
    """An input whose frame says which write of the file it was read from, and that file's own metadata
    (``attrs[LOADED]``): a step that publishes from it can require that version still be there without
    reading the table again."""
    return dg.AssetIn(metadata={"versioned": True})


def columns(*names: str, optional: tuple[str, ...] = ()) -> dg.AssetIn:
    """An input that reads only these columns of the upstream table, and those of ``optional`` it has
    (columns that only some scoring profiles make)."""
    return dg.AssetIn(metadata={"columns": list(names), **({"optional_columns": list(optional)} if optional else {})})


class WarehouseIOManager(dg.ConfigurableIOManager):
    """Writes an asset's DataFrame to ``<warehouse>/<asset>/<shard>.parquet`` (temp file + rename, so a
    re-run replaces the partition whole) and reads the same partition back for downstream assets."""

    warehouse: dg.ResourceDependency[WarehouseResource]
    # (run, step, shard) -> the raw files (sha256) its loaded inputs came from, as checked when loaded
    _read_from: dict[tuple, set[str]] = PrivateAttr(default_factory=dict)
    # (run, step, shard) -> the shard's tables it loaded: path -> the version read, required at its commit
    _read_versions: dict[tuple, dict[str, str]] = PrivateAttr(default_factory=dict)

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame) -> None:
        name, shard = context.asset_key.path[-1], context.asset_partition_key
        wh = self.warehouse.warehouse()
        metadata = dict(obj.attrs.get(FILE_METADATA) or {})
        if name != "pairs" and FINGERPRINT_KEY not in metadata:
            self._stamp(context, wh, name, shard, metadata)
        # the schema as its footer stores it, which DuckDB and readers see: from the write, not read back. Only
        # while every table the step loaded is still the one it read: another run that made one of them again
        # meanwhile (two runs deciding one shard) would otherwise leave this table made from the old one
        read = self._read_versions.get(_step(context, shard))
        try:
            stored = wh.store_table(name, shard, obj, metadata=metadata or None, requires=read)
        except FileChanged as exc:
            raise dg.Failure(description=(
                f"{name} of shard {shard!r} was not written: a table this step read was made again by another run "
                f"(or its checks run again) while it ran ({exc}). The other run's tables stand; run the shard again "
                "if they are not the ones wanted."), metadata={"shard": shard, "table": name}) from exc
        context.add_output_metadata({**table_metadata(name, stored.schema, stored.rows),
                                     "path": dg.MetadataValue.path(wh.local_path(stored.path))})

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        meta = context.definition_metadata or {}
        name, shard = context.asset_key.path[-1], context.asset_partition_key
        wh = self.warehouse.warehouse()
        df, stored, version = wh.read_table_versioned(name, shard, columns=meta.get("columns"),
                                                      optional=meta.get("optional_columns"))
        if version is not None:
            self._read_versions.setdefault(_step(context, shard), {})[wh.table_path(name, shard)] = version
        failed = stored.get(FAILED_CHECKS_KEY)
        if failed:
            raise dg.Failure(description=(
                f"{name} of shard {shard!r} failed its blocking check(s) {failed.replace(',', ', ')} when it was "
                f"made, so no step reads it (nothing of it is published). Look at the check in the UI, fix the "
                f"cause (or the policy's limits), then run its checks again (a pass clears this) or materialize "
                f"{name} again."),
                metadata={"shard": shard, "table": name, "failed_blocking_checks": failed})
        made_from = raw_sha(stored)
        now = made_from if name == "pairs" else current_raw_sha(wh, shard)
        if now:
            self._read_from.setdefault(_step(context, shard), set()).add(now)
        if made_from and now and made_from != now:
            raise dg.Failure(description=(
                f"{name} of shard {shard!r} was made from another raw file (sha256 {made_from[:16]}) than the one "
                f"its pairs read now ({now[:16]}): the raw shard was replaced and pairs made again, but not "
                f"{name}. Materialize the shard's assets from {name} on (or the whole shard) first."),
                metadata={"shard": shard, "table": name, "table_raw_sha256": made_from, "pairs_raw_sha256": now})
        # pyarrow restores the attrs the frame was written with (the file's metadata, checked above): pandas
        # deep-copies a frame's attrs into every Series and frame made from it, a cost in each operation
        # of the step, and a step's output sets its own (FILE_METADATA)
        df.attrs = {LOADED: {"version": version, "metadata": stored}} if meta.get("versioned") else {}
        return df

    def _stamp(self, context: dg.OutputContext, wh: Warehouse, name: str, shard: str, metadata: dict) -> None:
        """Record the raw file the step read (its inputs, or ``RAW_SHA_KEY`` set by a step that streamed the
        raw file itself); refuse the table when ``pairs`` has been made from another raw file since."""
        read = set(self._read_from.get(_step(context, shard), ()))
        if metadata.get(RAW_SHA_KEY):
            read.add(metadata[RAW_SHA_KEY])
        now = current_raw_sha(wh, shard)
        if now and read and read != {now}:
            raise dg.Failure(description=(
                f"{name} of shard {shard!r} was made from another raw file (sha256 "
                f"{', '.join(sorted(r[:16] for r in read - {now}))}) than the one its pairs read now ({now[:16]}): "
                f"pairs was made again from a replaced raw shard while this step ran. {name} was not written; "
                f"materialize the shard's assets from {name} on again."),
                metadata={"shard": shard, "table": name, "read_raw_sha256": ",".join(sorted(read)),
                          "pairs_raw_sha256": now})
        sha = next(iter(read), None) or now
        if sha:
            metadata[RAW_SHA_KEY] = sha


@dg.io_manager(required_resource_keys={"warehouse"}, description=WarehouseIOManager.__doc__)
def warehouse_io_manager(context: dg.InitResourceContext) -> WarehouseIOManager:
    """The IO manager on the run's own ``warehouse`` resource, run config (the launchpad's) included: one
    nested as an instance would be the warehouse fixed when the definitions loaded, and a run given another
    root would read and write its tables in two warehouses."""
    return WarehouseIOManager(warehouse=context.resources.warehouse)


def _step(context: dg.InputContext | dg.OutputContext, shard: str) -> tuple:
    """Whose inputs: a run's step (a context built without one, as in a unit test, is one step)."""
    try:
        step = context.step_context
    except dg.DagsterInvariantViolationError:
        return (None, None, shard)
    return (step.run_id, step.step.key, shard)

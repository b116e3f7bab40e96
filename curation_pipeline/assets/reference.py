"""Stage 1, ingest: the pinned caption-length reference each shard's ``pairs`` is checked against
(``caption_length_vs_reference``); built over the whole pool or chosen shards, so not partitioned."""


import dagster as dg
from pydantic import Field

from curation_pipeline.assets.ingest import pairs
from curation_pipeline.assets.metadata import OWNERS, numbers
from curation_pipeline.reporting.markdown import markdown_table
from curation_pipeline.resources import PolicyResource, WarehouseResource
from curation_pipeline.validation.reference import (REFERENCE_ASSET, ReferenceUnavailable, build_reference,
                                                    write_reference)


class ReferenceConfig(dg.Config):
    shards: list[str] = Field(default_factory=list, description=(
        "Shards whose stored pairs set the standard (say, a source's first, hand-checked shards); "
        "empty: every shard with stored pairs."))


@dg.asset(
    name=REFERENCE_ASSET, group_name="ingest", owners=OWNERS, tags={"stage": "ingest"},
    code_version="3",  # bump when the same inputs give different output (2: words count half-width kana and Han
    # of Extension B and later, and punctuation against a character of a script without spaces is part of its word;
    # 3: a Thai, Lao, Myanmar or Khmer combining mark is part of the character before it, not a word)
    deps=[dg.AssetDep(pairs, partition_mapping=dg.AllPartitionMapping())],
    kinds={"json"},
    description="The caption-length distribution new shards are held to: exact counts per length (words or "
    "characters, as policy.drift.length_unit says) of the original captions in the stored pairs of the chosen "
    "shards (config `shards`; default all). Pinned until materialized again: later shards are compared with it "
    "by the non-blocking check caption_length_vs_reference on pairs. Fewer than policy.drift.min_rows captions "
    "fails: such a reference would let every shard pass uncompared. No model runs.",
)
def caption_length_reference(context: dg.AssetExecutionContext, config: ReferenceConfig,
                             warehouse: WarehouseResource, policy: PolicyResource) -> dg.MaterializeResult:
    thresholds = policy.drift_thresholds()
    wh = warehouse.warehouse()
    try:
        reference = build_reference(wh, thresholds.length_unit, config.shards or None, run_id=context.run_id,
                                    min_rows=thresholds.min_rows)
    except ReferenceUnavailable as exc:
        raise dg.Failure(description=str(exc)) from exc
    path = write_reference(wh, reference)
    counts = reference.counts
    quantiles = counts.quantiles(thresholds.quantiles)
    unit = counts.unit
    context.log.info(f"{REFERENCE_ASSET}: {counts.n} captions of {len(reference.shards)} shards, "
                     f"mean {counts.mean():.2f} {unit}")
    return dg.MaterializeResult(metadata={
        **numbers({"pairs": counts.n, "shards": len(reference.shards), f"mean_{unit}": counts.mean(),
                   **{f"p{q * 100:g}_{unit}": v for q, v in quantiles.items()}}),
        "length_unit": dg.MetadataValue.text(unit),
        "reference_shards": dg.MetadataValue.text(", ".join(reference.shards[:50])
                                                  + (f" … ({len(reference.shards)} in all)"
                                                     if len(reference.shards) > 50 else "")),
        "lengths": dg.MetadataValue.md(markdown_table(
            [f"length ({unit})", "captions"],
            [(str(length), str(n)) for length, n in zip(counts.lengths[:60], counts.counts[:60])])
            + ("" if len(counts.lengths) <= 60 else f"\n\n_{len(counts.lengths) - 60} longer lengths not shown_")),
        "path": dg.MetadataValue.path(wh.local_path(path)),
    })

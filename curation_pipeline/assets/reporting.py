"""Stage 6, reporting: the DuckDB quality report over all shards (not partitioned)."""


import dagster as dg
import pandas as pd

from curation_pipeline.assets.curation import curated_shards
from curation_pipeline.assets.failures import shard_failures
from curation_pipeline.assets.metadata import OWNERS, numbers, shown, table
from curation_pipeline.reporting.charts import histogram_png, markdown_image
from curation_pipeline.reporting.report import (SETTLE_HINT, build_report, overall_values, pooled_drop_reasons,
                                                report_markdown)
from curation_pipeline.resources import WarehouseResource


# Dagster's eager() less its ~any_deps_missing() (one registered shard not curated yet, held or failing, stopped every
# later refresh, and the report is where failed shards are listed) and its newly_missing() (with no shard curated,
# a report has nothing to read and fails)
AFTER_CURATED_SHARDS_CHANGE = (
    dg.AutomationCondition.any_deps_updated().since_last_handled() & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()).with_label("after curated shards change")


@dg.asset(
    group_name="reporting", owners=OWNERS, tags={"stage": "reporting"},
    code_version="8",  # bump when the same inputs give different output (3: the unsettled status; 4: decoded = full
    # decodes; 5: failed = the last run in this warehouse failed, not one in another warehouse of the same home;
    # 6: word counts count half-width kana and Han of Extension B and later, and glued punctuation is no word;
    # 7: the unpublished status, a curated tar missing or not made from the current final_captions; 8: a Thai, Lao,
    # Myanmar or Khmer combining mark is part of its character's word)
    # what it reads: a shard's tables are stored (stamped) when their blocking check fails, and no tar is made
    deps=["quality_scores", "rewritten_captions", "final_captions", curated_shards],
    kinds={"duckdb"},
    automation_condition=AFTER_CURATED_SHARDS_CHANGE,
    description="quality.duckdb in the warehouse: views over every per-shard table (pairs, quality_scores, "
    "caption_decisions, rewritten_captions, final_captions, skips) and report tables (shard_summary, drop_reasons, "
    "score_distribution, caption_lengths, rewriter_summary, overall). Each shard has a status (ok, failed, "
    "stale, blocked, incomplete, undecided, unpublished: its curated tar missing or not made from the current "
    "final_captions, unsettled: decided against an older dedup_index or keep_fraction cut, as after a backfill "
    "with dedup_settle_sensor off): figures pooled over shards count the ok ones only. The "
    "only writer of that file.",
)
def quality_report(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    # shards whose last run in this warehouse failed are listed with their error (other warehouses share the
    # home); this run with no warehouse in its run config has the code location's own, where untagged runs wrote
    configured = "warehouse" in (context.run.run_config.get("resources") or {})
    failures = shard_failures(context.instance, warehouse.root, None if configured else warehouse.root)
    wh = warehouse.warehouse()
    # a write clears its own file's orphans; those of files not written again (a shard never re-run, a crash on
    # a full disk) go here, where the whole warehouse is read anyway: a shard's step never lists it
    for orphan in wh.clean_temp_files():
        context.log.warning(f"removed orphaned temp file {orphan}")
    report = build_report(wh, failures=failures)
    context.log.info(f"report written to {report.db_path}")
    unsettled = report.shards[report.shards["status"].eq("unsettled")]
    if len(unsettled):
        context.log.warning(f"{len(unsettled)} shards decided against an older pool, left out of the pooled "
                            f"figures ({', '.join(unsettled['shard'][:10])}). To {SETTLE_HINT}.")
    charts = "\n\n".join(quality_charts(report.quality))
    return dg.MaterializeResult(metadata={
        **numbers(overall_values(report)),
        "summary": dg.MetadataValue.md(report_markdown(report) + ("\n\n" + charts if charts else "")),
        "shards": table(attention_first(report.shards), limit=SHARDS_SHOWN),
        "shards_shown": shown(report.shards, SHARDS_SHOWN, "shards (those not ok first)",
                              "shard_summary in the report database (curate report)"),
        "drop_reasons": table(pooled_drop_reasons(report)),
        "rewriters": table(report.rewriters),
        "db_path": dg.MetadataValue.path(report.db_path),
    })


SHARDS_SHOWN = 200  # rows of the UI's shards table; the report database holds every shard


def attention_first(shards: pd.DataFrame) -> pd.DataFrame:
    """The shards not ok (failed, unsettled, ...) before the ok ones, each part in its own order: what a cut
    table must not leave out."""
    return pd.concat([shards[shards["status"].ne("ok")], shards[shards["status"].eq("ok")]])


def quality_charts(quality: pd.DataFrame) -> list[str]:
    """One before / after histogram per quality column (shards decided on different scores are never pooled
    on one axis), of the ok shards' pairs."""
    charts = []
    for column, pairs in quality.groupby(quality["quality_column"].fillna("quality score"), sort=True):
        kept = pairs[pairs["outcome"].ne("dropped")]
        charts.append(markdown_image(histogram_png(
            {"original (all pairs)": pairs["quality_before"].to_numpy(dtype=float),
             "final (kept pairs)": kept["quality_final"].to_numpy(dtype=float)},
            f"caption quality ({column}), all shards", column), f"{column} before and after"))
    return charts

"""Stage 6, reporting: the DuckDB quality report over all shards (not partitioned)."""


import dagster as dg

from curation_pipeline.assets.curation import curated_shards
from curation_pipeline.assets.failures import shard_failures
from curation_pipeline.assets.metadata import OWNERS, numbers, table
from curation_pipeline.reporting.charts import histogram_png, markdown_image
from curation_pipeline.reporting.report import build_report, overall_values, report_markdown
from curation_pipeline.resources import WarehouseResource


@dg.asset(
    group_name="reporting", owners=OWNERS, tags={"stage": "reporting"},
    code_version="1",  # bump when the same inputs give different output
    deps=[curated_shards],
    kinds={"duckdb"},
    automation_condition=dg.AutomationCondition.eager(),
    description="quality.duckdb in the warehouse: views over every per-shard table (pairs, quality_scores, "
    "caption_decisions, rewritten_captions, final_captions, skips) and report tables (shard_summary, drop_reasons, "
    "score_distribution, caption_lengths, rewriter_summary, overall). The only writer of that file.",
)
def quality_report(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    failures = shard_failures(context.instance)  # shards whose last run failed are listed with their error
    report = build_report(warehouse.warehouse(), failures=failures)
    context.log.info(f"report written to {report.db_path}")
    kept = report.quality[report.quality["outcome"].ne("dropped")]
    chart = markdown_image(histogram_png(
        {"original (all pairs)": report.quality["quality_before"].to_numpy(dtype=float),
         "final (kept pairs)": kept["quality_final"].to_numpy(dtype=float)},
        "caption quality, all shards", "quality score"), "quality before and after")
    return dg.MaterializeResult(metadata={
        **numbers(overall_values(report)),
        "summary": dg.MetadataValue.md(report_markdown(report) + "\n\n" + chart),
        "shards": table(report.shards),
        "drop_reasons": table(report.drop_reasons.groupby("reason", as_index=False)["pairs"].sum()
                              .sort_values("pairs", ascending=False)),
        "rewriters": table(report.rewriters),
        "db_path": dg.MetadataValue.path(report.db_path),
    })

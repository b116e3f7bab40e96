"""Evaluation, in the UI: agreement of a score with human judgments, and curation against labels.

Thin wrappers of what `curate evaluate` runs: the report goes to ``<warehouse>/evaluation/`` and its
figures to metadata. Neither runs by itself: materialize one with its config (the judgment or truth file).
"""


import dagster as dg
import pandas as pd
from pydantic import Field

from curation_pipeline.assets.metadata import OWNERS, numbers, table
from curation_pipeline.assets.rewriting import final_captions
from curation_pipeline.assets.scoring import quality_scores
from curation_pipeline.resources import WarehouseResource


class AgreementConfig(dg.Config):
    judgments: str = Field(default="", description="Judgment file: Flickr8k ExpertAnnotations.txt, "
                           "CrowdFlowerAnnotations.txt, or a CSV / JSON lines file of image, caption, score.")
    format: str = Field(default="auto", description="auto | expert | crowdflower | generic")
    captions: str = Field(default="", description="Flickr8k.token.txt (caption text and references for the "
                          "Flickr8k formats).")
    score_column: str = Field(default="text_quality", description="A quality_scores column (clip_score, mlm_itm, "
                              "...) or ref_minilm (the reference-caption baseline, no warehouse needed).")
    bootstrap: int = Field(default=1000, description="Bootstrap resamples for the 95% intervals.")
    keep_reference_candidates: bool = Field(default=False, description="Expert: keep candidates that are their "
                                            "image's own reference (CLIPScore and SPICE leave them out).")


class LabelsConfig(dg.Config):
    truth: str = Field(default="", description="Truth file (JSON lines: key, label, caption, clean), e.g. from "
                       "curation_pipeline.evaluation.noise.")
    from_captions: bool = Field(default=False, description="Run the caption path in process over the truth file's "
                                "captions instead of reading the warehouse's final_captions.")


def _known(mapping: dict) -> dict:
    return {k: v for k, v in mapping.items() if v is not None and v == v}  # NaN is not a number to plot


def _results_table(report: dict) -> pd.DataFrame:
    from curation_pipeline.evaluation.agreement import undefined_interval

    rows = []
    for r in report["results"]:
        row = {"protocol": r["label"], "rows": r["n"], "pairs": r["n_groups"]}
        for name in ("kendall_tau_c", "kendall_tau_b", "spearman", "pearson"):
            row[name] = r[name]["value"]
            row[f"{name}_ci"] = f"[{r[name]['ci_low']:.3f}, {r[name]['ci_high']:.3f}]"
        row["no_interval"] = undefined_interval(r) or ""
        rows.append(row)
    return pd.DataFrame(rows)


@dg.asset(
    group_name="evaluation", owners=OWNERS, tags={"stage": "evaluation"},
    code_version="7",  # bump when the same inputs give different output (3: a constant side fails, not NaN;
    # 4: in any row, e.g. Expert's mean per pair; 5: a generic file's pair rated in several rows is drawn whole by
    # the bootstrap and counted once; a blank key cell names no key; 6: judged_pairs and matched_pairs count pairs,
    # judged_rows and matched_rows the rows; 7: no interval where over 1% of the resamples had no value)
    deps=[dg.AssetDep(quality_scores, partition_mapping=dg.AllPartitionMapping())],
    kinds={"json"},
    description="Agreement of a score column with human judgments (Flickr8k-Expert, Flickr8k-CrowdFlower or a "
    "generic file): Kendall tau-c and tau-b, Spearman, Pearson, each with a bootstrap 95% interval. Same as "
    "`curate evaluate --judgments FILE --score COLUMN`. Set the judgment file in the launchpad.",
)
def human_agreement(context: dg.AssetExecutionContext, config: AgreementConfig,
                    warehouse: WarehouseResource) -> dg.MaterializeResult:
    from curation_pipeline.evaluation.judgments import agreement_report, format_agreement, headline, undefined_cause
    from curation_pipeline.evaluation.reports import save_report

    if not config.judgments:
        raise dg.Failure(description="set config.judgments (the judgment file) in the launchpad")
    try:
        report = agreement_report(config.judgments, config.score_column, fmt=config.format,
                                  captions_file=config.captions or None, warehouse_root=warehouse.root,
                                  n_boot=config.bootstrap, skip_references=not config.keep_reference_candidates)
    except (ValueError, OSError) as exc:  # a missing file, a folder given as the file, no permission
        raise dg.Failure(description=str(exc)) from exc
    cause = undefined_cause(report, config.score_column, "score_column")
    if cause:  # a row of NaN coefficients: a materialization with it would look like a result
        raise dg.Failure(description=cause)
    head = headline(report)  # Expert: each expert score a row, the protocol of the published figures
    path = save_report(report, warehouse_root=warehouse.root,
                       name=f"agreement-{report['format']}-{config.score_column}.json")
    context.log.info("\n" + format_agreement(report))
    return dg.MaterializeResult(metadata={
        "score_column": config.score_column,
        "format": report["format"],
        "protocol": head["label"],  # the row the coefficients below come from; "results" has every row
        **numbers(_known({"judged_pairs": report["judged_pairs"], "matched_pairs": report["matched_pairs"],
                          "judged_rows": report["judged_rows"], "matched_rows": report["matched_rows"],
                          "kendall_tau_c": head["kendall_tau_c"]["value"],
                          "kendall_tau_b": head["kendall_tau_b"]["value"],
                          "spearman": head["spearman"]["value"], "pearson": head["pearson"]["value"]})),
        "results": table(_results_table(report)),
        "path": dg.MetadataValue.path(path),
    })


@dg.asset(
    group_name="evaluation", owners=OWNERS, tags={"stage": "evaluation"},
    code_version="7",  # bump when the same inputs give different output (2: edit ratios count half-width kana
    # and Han of Extension B and later as the drift check's words; 3: captions checked against original_caption;
    # 4: a Thai, Lao, Myanmar or Khmer combining mark is part of its character's word; 5: a sample dropped for its
    # image is left out of the caption figures, and one whose noise ingest removed counts as clean; 6: a truth
    # caption over the reader's limit is cut as ingest cuts it, back to a space; 7: from_captions saves its own
    # file, labels-from-captions.json)
    deps=[dg.AssetDep(final_captions, partition_mapping=dg.AllPartitionMapping())],
    kinds={"json"},
    description="Curation decisions scored against per-sample labels (clean / noisy / junk / mismatched): kept, "
    "rewritten and dropped share per label, noisy caught and exactly-clean shares, edit-ratio quantiles against the "
    "clean source (edit ratio: 0 = same words, 1 = no word in common), false changes to clean captions. Same as "
    "`curate evaluate --labels FILE`. Set the truth file in the launchpad.",
)
def curation_vs_labels(context: dg.AssetExecutionContext, config: LabelsConfig,
                       warehouse: WarehouseResource) -> dg.MaterializeResult:
    from curation_pipeline.evaluation.labels import format_labels_report, labels_report, report_name
    from curation_pipeline.evaluation.reports import save_report

    if not config.truth:
        raise dg.Failure(description="set config.truth (the truth file) in the launchpad")
    try:
        report = labels_report(config.truth, warehouse_root=warehouse.root, from_captions=config.from_captions)
    except (ValueError, OSError) as exc:  # a missing file, a folder given as the file, no permission
        raise dg.Failure(description=str(exc)) from exc
    path = save_report(report, warehouse_root=warehouse.root, name=report_name(config.from_captions))
    context.log.info("\n" + format_labels_report(report))
    per_label = pd.DataFrame([{"label": k, **v} for k, v in report["labels"].items()])
    clean = report["clean"]
    return dg.MaterializeResult(metadata={
        "source": report["source"],  # the warehouse's curation, or the caption path run over the truth's captions
        **numbers(_known({"samples": report["samples"], "unmatched": report["unmatched"],
                          "caption_mismatches": report["caption_mismatches"],
                          # left out of the caption figures (they judge captions): none of them may read as perfect
                          "dropped_for_image": report.get("dropped_for_image", 0), **report["summary"],
                          "noisy_edit_ratio_p50": report["noisy"]["edit_ratio"]["p50"],
                          "clean_judged": clean["n"],
                          "clean_false_changes": clean["false_changes"]})),  # None where none was judged
        "per_label": table(per_label),
        "false_changes": table(pd.DataFrame(report["clean"]["false_change_examples"])),
        "path": dg.MetadataValue.path(path),
    })


EVALUATION_ASSETS = [human_agreement, curation_vs_labels]

"""Stage 4, rewriting: weak captions of usable images are rewritten, verified, and resolved."""


import dataclasses
import functools

import dagster as dg
import pandas as pd

from curation_pipeline.assets.decisions import policy_record, require_decided_policy
from curation_pipeline.assets.integrity import raw_fingerprint
from curation_pipeline.assets.io import FILE_METADATA, LOADED, columns, versioned
from curation_pipeline.assets.made_of import output_provenance, rewriter_made_of
from curation_pipeline.assets.metadata import PREVIEW_ROWS, numbers, shown, table
from curation_pipeline.checks.quality import (FINAL_CAPTION_CHECKS, REWRITE_CHECKS, checked_table,
                                             final_captions_checks, rewrites_checks, table_out)
from curation_pipeline.decisions.dedup import DECIDED_BY_KEY
from curation_pipeline.decisions.outcome import ATTEMPT_RUNS_KEY, DECISIONS_RUN_KEY, attempt_runs, resolve_outcomes
from curation_pipeline.partitions import shard_partitions
from curation_pipeline.reporting.charts import histogram_png, markdown_image
from curation_pipeline.reporting.lineage import lineage_preview
from curation_pipeline.reporting.markdown import counts_markdown
from curation_pipeline.reporting.report import reason_signals
from curation_pipeline.resources import (ComputeResource, PolicyResource, RewriterResource, ScoringResource,
                                         WarehouseResource)
from curation_pipeline.rewriting.attempts import empty_lineage, rewrite_batches
from curation_pipeline.rewriting.targets import (blind_judge_warning, judged_blind, known_embeddings, needed_columns,
                                                 rescored_columns, rewrite_needs_images, rewrite_needs_of,
                                                 rewrite_targets, target_batches)
from curation_pipeline.scoring.run import score_batch
from curation_pipeline.scoring.signals.duplicates import CAPTION_EMBEDDING
from curation_pipeline.shards.writer import ROWS_DIGEST_KEY, rows_digest
from curation_pipeline.validation.drift import drift_pairs
from curation_pipeline.validation.lengths import caption_lengths


@dg.multi_asset(
    name="rewritten_captions", partitions_def=shard_partitions, can_subset=True, check_specs=REWRITE_CHECKS,
    ins={"caption_decisions": versioned(),
         "quality_scores": columns("key", "caption", optional=(CAPTION_EMBEDDING,))},
    outs={"rewritten_captions": table_out(
        "rewriting", "15",
        # code version: bump when the same inputs give different output (2: a rewrite must reach drop_threshold; 3: edit
        # and length ratios count the drift check's words; 4: the edit ratio ignores case and edge punctuation, a
        # placeholder-only caption is fresh, a cut tail and markup are judged anew; 5: full-width brackets and
        # separators are checked as ASCII ones, punctuation glued to a word of a script without spaces is no edit, and
        # the edit ratio is one exact division, so a ratio equal to max_edit_ratio passes; 6: words count half-width
        # kana and Han of Extension B and later, and glued punctuation is part of its word: length ratios; 7: a Thai,
        # Lao, Myanmar or Khmer combining mark is part of its character's word; the edit ratio compares words in NFC
        # with Turkish İ/ı as i, a Hebrew gershayim or geresh typed as '"' or "'" is no quote mark, the well-formedness
        # check reads original and candidate in NFC, counts a tail's words as the drift check does, and knows 〖〗〘〙, an
        # opening 〝 and the Arabic comma and semicolon as separators; 8: the original again is no rewrite, a margin of 0
        # asks for a gain, a gain equal to the margin passes in floating point, a model's refusal or report of its edit
        # is malformed, a lead-in may carry a parenthesis, a quote mark left alone at the end is dangling and a cut
        # before a quoted word ends on its article, a last segment of only label words the original went on after is a
        # dangling label; 9: keep_facts where judged blind; 10: a candidate still hitting a weak-caption bound, not
        # English or too few words, is rejected; 11: keep_facts reads a figure of several number words ("twenty-three",
        # "a hundred", "two hundred and five") as one; 12: a candidate ending on a verb whose object was cut
        # ("displaying", "offering") or on "vs" where the original went on is dangling; 13: a model's reply that it saw
        # no image or that the caption needs no edit, a generic "Answer:" label and a "(Removed ...)" note are
        # malformed; a period after No., Vol., Fig. (and pp, approx, ca, etc, inc, ltd, co, corp, dept, est) ends no
        # sentence, and a link the original held whole is no link debris; 14: a rewrite under its pair's rewrite_needs,
        # what publishes a pair outside the keep_fraction cut or failing keep_expression, is rejected; 15: keep_facts
        # reads a figure moved to another word (counts swapped, a unit changed), digits of any script and Chinese
        # and Japanese numerals)
        "Lineage of every rewrite attempt: original and candidate caption, rewriter and version, prompt hash, "
        "score before/after, edit ratio, length ratio, semantic similarity, accepted or not and why, run id and "
        "time. Only pairs decided `rewrite` are attempted.")},
)
def rewritten_captions(context: dg.AssetExecutionContext, warehouse: WarehouseResource, scoring: ScoringResource,
                       rewriter: RewriterResource, policy: PolicyResource, compute: ComputeResource,
                       caption_decisions: pd.DataFrame, quality_scores: pd.DataFrame):
    # its check alone reads the stored lineage: no model runs
    yield from checked_table(
        context, warehouse, "rewritten_captions",
        lambda: _rewrite(context, warehouse, scoring, rewriter, policy, compute, caption_decisions, quality_scores),
        lambda lineage: rewrites_checks(lineage, policy),
        # the rewriter this run's config picked, where it is not the code location's
        lambda: output_provenance(context, rewriter_made_of(rewriter), "rewriter"))


def _rewrite(context: dg.AssetExecutionContext, warehouse: WarehouseResource, scoring: ScoringResource,
             rewriter: RewriterResource, policy: PolicyResource, compute: ComputeResource,
             caption_decisions: pd.DataFrame, quality_scores: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    shard = context.partition_key
    expected = raw_fingerprint(warehouse, shard)  # the raw file must still be the one pairs read
    # targets and acceptance are the decisions' own rules: not another run's policy
    require_decided_policy(warehouse.warehouse(), shard, policy, "rewritten_captions")
    # the run whose decisions these attempts are for: final_captions refuses to resolve other decisions with them
    decided_by = caption_decisions.attrs.pop(LOADED, {}).get("metadata", {}).get(DECIDED_BY_KEY)
    decisions, scores = caption_decisions, quality_scores
    targets = rewrite_targets(decisions, scores)
    needed = needed_columns(policy.quality_column)
    rules = policy.acceptance_rules()
    if judged_blind(rewriter.kind, needed, scoring.profile):  # a made-up count scores like a corrected one
        rules = dataclasses.replace(rules, keep_facts=True)
    blind = blind_judge_warning(rewriter.kind, needed, scoring.profile, rules)
    if blind and len(targets):
        context.log.warning(blind)
    from curation_pipeline.rewriting.reuse import (REPLY_COLUMN, SCORES_TABLE, STORED_COLUMNS, ReplyReuse,
                                                   reuse_stored_replies)

    ray_stats, reuse = {}, None  # reuse: AITQE's candidates taken from the replies its scorer stored

    def stored():  # read only where that is the very call the rewriter makes (rewriting.reuse)
        return warehouse.warehouse().read_table_and_metadata(SCORES_TABLE, shard, columns=list(STORED_COLUMNS),
                                                             optional=[REPLY_COLUMN])

    if targets.empty:
        lineage = empty_lineage()
    elif compute.uses_ray:  # rewrite + re-score as Ray Data streaming on the cluster; the same rows as below
        from curation_pipeline.compute.ray_data import rewrite_shard

        lineage, stats, reuse = rewrite_shard(
            warehouse.raw_url(shard), shard, targets, with_images=rewrite_needs_images(rewriter.kind, needed, scoring.profile),
            rewriter=rewriter.model_dump(), profile=scoring.as_profile(), needed=needed,
            quality_column=policy.quality_column, rules=rules, run_id=context.run_id,
            options=compute.options("rewrite", rewriter.batch_size), expected=expected, stored=stored,
            raw_file=expected.sha256, warn=context.log.warning)
        ray_stats = stats.metadata()
    else:
        from curation_pipeline.scoring.signals.embedding import caption_similarity

        model = reuse_stored_replies(rewriter.rewriter(), stored, expected.sha256)
        reuse = model.reuse if isinstance(model, ReplyReuse) else None
        rescorers = [s for s in scoring.scorers() if rescored_columns(needed, rules) & set(s.columns)]
        # the judge's scorers only: the weak-caption rules' columns are the caption's (rescored_columns)
        with_images = model.needs_images or any(s.needs_images for s in rescorers if needed & set(s.columns))
        lineage = rewrite_batches(
            target_batches(targets, warehouse.raw_url(shard), shard, with_images, rewriter.batch_size, expected),
            shard=shard, rewriter=model, rescore=lambda b: score_batch(rescorers, b),
            quality_column=policy.quality_column,
            scores_before=dict(zip(targets["key"], targets["quality_before"].astype(float))),
            rules=rules, run_id=context.run_id, needs=rewrite_needs_of(targets),
            similarity=functools.partial(caption_similarity, known=known_embeddings(targets)))
    # the rules its rewrites were accepted under: a run of this step alone may tune them (curate run --only-missing
    # compares them with its own)
    lineage.attrs[FILE_METADATA] = {**policy_record(policy), **({DECISIONS_RUN_KEY: decided_by} if decided_by else {})}
    accepted = int(lineage["accepted"].sum()) if len(lineage) else 0
    gain = (lineage.loc[lineage["accepted"].astype(bool), "quality_after"].astype(float)
            - lineage.loc[lineage["accepted"].astype(bool), "quality_before"].astype(float))
    preview = lineage_preview(lineage, decisions, PREVIEW_ROWS)
    return lineage, {
        **numbers({"attempts": len(lineage), "accepted": accepted, "rejected": len(lineage) - accepted,
                   "acceptance_rate": accepted / len(lineage) if len(lineage) else None,  # no attempts: empty, not 0
                   "mean_score_gain": float(gain.mean()) if len(gain) else None}),
        **numbers(ray_stats),
        **({"reused_from_quality_scores": dg.MetadataValue.int(len(reuse.reused)),  # AITQE's stored replies
            "aitqe_replies": dg.MetadataValue.text(reuse.summary(len(lineage)))} if reuse else {}),
        "compute_settings": dg.MetadataValue.json(compute.resolved("rewrite", rewriter.batch_size)),
        "lineage": table(preview),
        "lineage_shown": dg.MetadataValue.text(f"first {len(preview)} of {len(lineage)} attempts (accepted first); "
                                               "all rows: curate lineage, or the rewritten_captions table"),
    }


@dg.multi_asset(
    name="final_captions", partitions_def=shard_partitions, can_subset=True, check_specs=FINAL_CAPTION_CHECKS,
    ins={"caption_decisions": versioned(), "pairs": columns("key", "caption"), "rewritten_captions": versioned()},
    outs={"final_captions": table_out(
        "rewriting", "9",  # code version: bump when the same inputs give different output (2: outside the
        # keep_fraction cut only an accepted rewrite publishes; no fallback to the original. 3: the drift check's
        # words (as rewritten_captions 6), a mean on its ratio limit passes, a table row says GX's verdict, and
        # unchanged captions have KL 0. 4: the drift check's words, as rewritten_captions 7. 5: nor for a pair
        # failing keep_expression; an original with no words is never kept as is, whatever drop_threshold says,
        # and the drift check in characters leaves it out, as in words. 6: a kept original's reason starts with
        # why it was up for a rewrite, its decision's reason: "not_english; rewrite rejected (...); kept original".
        # 7: a dropped one's says why its original was not kept: "(...; fallback: drop)" or "(...; original 60.0 <
        # drop_threshold 65)"; caption_length_drift under min_rows holds the mean. 8: a score in a reason never
        # rounds onto drop_threshold, and reads to its thousandths under a threshold below 10. 9: a rewrite of a pair
        # outside the filters publishes only at its rewrite_needs: inside the cut, meeting the expression)
        "The final caption of every pair: kept as is, rewritten (the accepted attempt) or dropped, with the "
        "reason. The blocking caption-length drift check runs on this before anything is published.")},
)
def final_captions(context: dg.AssetExecutionContext, warehouse: WarehouseResource, policy: PolicyResource,
                   caption_decisions: pd.DataFrame, pairs: pd.DataFrame, rewritten_captions: pd.DataFrame):
    yield from checked_table(
        context, warehouse, "final_captions",
        lambda: _resolve(context, warehouse, policy, caption_decisions, pairs, rewritten_captions),
        lambda final: final_captions_checks(final, len(pairs), policy))


def require_attempts_for(decisions: pd.DataFrame, decided_by: str | None, lineage: pd.DataFrame,
                         attempted_for: str | None, shard: str) -> None:
    """The rewrite attempts must be those made for these decisions: after caption_decisions alone was made again
    (the UI selects assets freely) the stored attempts are another decision's, and resolving with them would drop
    a newly marked pair as "rewrite rejected (not attempted)", unseen. Unrecorded (older tables) is taken as
    current, yet every pair marked ``rewrite`` must have an attempt."""
    again = (f"materialize rewritten_captions, final_captions and curated_shards of shard {shard!r} (or the whole "
             "shard) together")
    if decided_by and attempted_for and decided_by != attempted_for:
        raise dg.Failure(description=(
            f"rewritten_captions of shard {shard!r} were made for the decisions of run {attempted_for[:8]}, but the "
            f"stored caption_decisions are run {decided_by[:8]}'s: the shard was decided again without rewriting; "
            + again), metadata={"shard": shard, "decisions_run": decided_by, "attempts_for_run": attempted_for})
    marked = decisions.loc[decisions["action"].eq("rewrite"), "key"]
    missing = marked[~marked.isin(lineage["key"])]
    if len(missing):
        raise dg.Failure(description=(
            f"{len(missing)} of the {len(marked)} pairs of shard {shard!r} decided 'rewrite' have no rewrite attempt "
            f"in rewritten_captions (first: {missing.iloc[0]!r}): its attempts were made for other decisions; "
            + again),
            metadata={"shard": shard, "unattempted": len(missing)})


def _resolve(context: dg.AssetExecutionContext, warehouse: WarehouseResource, policy: PolicyResource,
             caption_decisions: pd.DataFrame, pairs: pd.DataFrame,
             rewritten_captions: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    shard = context.partition_key
    raw_fingerprint(warehouse, shard)  # the raw file must still be the one pairs read
    # outcomes resolve the decisions under their own rules (a duplicate group's kept copy stays published)
    require_decided_policy(warehouse.warehouse(), shard, policy, "final_captions")
    # the run that made these decisions, then no attrs: pandas would deep-copy them into every frame made from it
    decided_by = caption_decisions.attrs.pop(LOADED, {}).get("metadata", {}).get(DECIDED_BY_KEY)
    attempted_for = rewritten_captions.attrs.pop(LOADED, {}).get("metadata", {}).get(DECISIONS_RUN_KEY)
    require_attempts_for(caption_decisions, decided_by, rewritten_captions, attempted_for, shard)
    final = resolve_outcomes(caption_decisions, pairs.set_index("key")["caption"], rewritten_captions,
                             policy.decision_policy())
    # which rewritten_captions and caption_decisions this resolved: lineage flags the shard when either is made
    # again alone
    runs = rewritten_captions["run_id"] if "run_id" in rewritten_captions else ()
    # and a digest of these rows: the curated tar made from them records it (a killed run's stale tar is told)
    final.attrs[FILE_METADATA] = {ATTEMPT_RUNS_KEY: attempt_runs(runs), ROWS_DIGEST_KEY: rows_digest(final),
                                  **({DECISIONS_RUN_KEY: decided_by} if decided_by else {})}
    outcomes = final["outcome"].value_counts()
    n = len(final)  # an empty shard has no rates: left empty, not 0
    kept = final[final["outcome"].ne("dropped")]
    unit = policy.drift_thresholds().length_unit
    compared = drift_pairs(final, unit)  # the drift check's pairs
    chart = markdown_image(histogram_png(
        {"original (kept)": caption_lengths(compared["original_caption"], unit),
         "final (kept)": caption_lengths(compared["final_caption"], unit)},
        f"caption length — {shard}", unit), "caption length") if len(final) else "_no pairs_"
    return final, {
        **numbers({"pairs": len(final), "kept_as_is": int(outcomes.get("kept", 0)),
                   "rewritten": int(outcomes.get("rewritten", 0)), "dropped": int(outcomes.get("dropped", 0)),
                   "rewrite_rate": outcomes.get("rewritten", 0) / n if n else None,
                   "drop_rate": outcomes.get("dropped", 0) / n if n else None,
                   "mean_quality_final": (float(pd.to_numeric(kept["quality_final"], errors="coerce").mean())
                                          if len(kept) else None)}),
        "caption_length_histogram": dg.MetadataValue.md(chart),
        # every pair dropped, at whichever stage (caption_decisions' counts only those decided 'drop' there), counted
        # by signal as the report's drop_reasons counts them
        "drop_reasons": dg.MetadataValue.md(counts_markdown(
            final.loc[final["outcome"].eq("dropped"), "reason"].map(reason_signals).explode().value_counts(),
            "Drop reasons (all dropped pairs)")),
        # by which model each was rewritten (its version: the model's revision and settings), beside from what and why
        "rewritten_preview": table(final.loc[final["rewritten"], ["key", "original_caption", "final_caption",
                                                                   "quality_before", "quality_final", "rewriter",
                                                                   "rewriter_version", "reason"]]),
        "rewritten_shown": shown(final.loc[final["rewritten"]], PREVIEW_ROWS, "rewritten pairs",
                                 f"curate lineage --shard {shard} --rewritten-only"),
    }

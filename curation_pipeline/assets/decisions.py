"""Stage 3, decisions: keep / rewrite / drop per pair, re-selected cheaply from stored scores."""


import json

import dagster as dg
import pandas as pd

from curation_pipeline.assets.dedup import dedup_index, policy_change, policy_config
from curation_pipeline.assets.integrity import raw_fingerprint
from curation_pipeline.assets.io import FILE_METADATA
from curation_pipeline.assets.metadata import OWNERS, PREVIEW_ROWS, numbers, shown, table
from curation_pipeline.assets.selection import selection_cut
from curation_pipeline.decisions.cut_store import CUT_KEY, CutUnavailable, cut_for_shard
from curation_pipeline.decisions.dedup import DECIDED_BY_KEY, DIGEST_KEY, POLICY_KEY, mark_duplicates, policy_digest
from curation_pipeline.decisions.policy import IN_CUT, IN_EXPRESSION, decide, unjudged_bounds
from curation_pipeline.partitions import shard_partitions
from curation_pipeline.reporting.markdown import counts_markdown
from curation_pipeline.reporting.report import reason_signals
from curation_pipeline.resources import POLICY_SETTINGS, PolicyResource, WarehouseResource
from curation_pipeline.storage.warehouse import Warehouse


NOT_DEDUPLICATED = ("drop_duplicates is on, but these quality_scores hold no duplicate fingerprints (their profile, "
                    "e.g. text, runs no duplicate scorer): duplicate pairs are published as they are; score with a "
                    "profile that reads images (offline, clip, mlm, full) to drop them")
# in caption_decisions' Parquet metadata, beside its digest (POLICY_KEY): the policy config itself (JSON), so a
# later step of the shard run under another policy can say which settings differ
POLICY_CONFIG_KEY = "policy_config"
ACCEPTANCE = "acceptance"  # the policy's rewrite acceptance settings (PolicyResource.acceptance)


def policy_record(policy: PolicyResource) -> dict[str, str]:
    """What caption_decisions records of the policy it decided under: its digest and its config."""
    config = policy_config(policy)
    return {POLICY_KEY: policy_digest(config), POLICY_CONFIG_KEY: json.dumps(config, sort_keys=True)}


def decided_under_other_policy(metadata: dict[str, str], policy: PolicyResource) -> list[str]:
    """The settings (those ``policy_digest`` covers) in which the policy caption_decisions recorded in its file
    ``metadata`` differs from ``policy``, each as ``key=recorded (this run: ours)``; [] where they match, or
    where the decisions record no policy (made before they did: nothing to compare). Decisions that record only
    the digest give one entry naming the digests."""
    ours = policy_config(policy)
    recorded = _recorded_policy(metadata)
    if recorded is not None:
        # acceptance is the rewrite step's own rule, tuned by re-running rewritten_captions: it changes which
        # rewrites are accepted, never which copy of a duplicate group is kept (a survivor is kept as it is, or
        # rewritten with a fallback that keeps its original), so it may differ from the decisions' own
        return [d for d in policy_change(recorded, ours) if not d.startswith(f"{ACCEPTANCE}.")]
    digest = metadata.get(POLICY_KEY)
    if digest and digest not in {policy_digest(ours), policy_digest(ours, full=True)}:
        return [f"policy_digest={digest!r} (this run: {policy_digest(ours)!r}; those decisions did not record "
                "their settings)"]
    return []


def accepted_under_other_rules(decisions: dict[str, str], rewrites: dict[str, str] | None,
                               policy: PolicyResource) -> list[str]:
    """The acceptance settings a shard's rewrites were judged under that differ from ``policy``'s: as its
    rewritten_captions recorded them (file ``rewrites`` metadata), or, from before that table recorded them
    (or without it), as its caption_decisions did, whose run rewrote under its own; [] where neither records."""
    recorded = _recorded_policy(rewrites or {})
    recorded = _recorded_policy(decisions) if recorded is None else recorded
    if recorded is None:
        return []
    return [d for d in policy_change(recorded, policy_config(policy)) if d.startswith(f"{ACCEPTANCE}.")]


def _recorded_policy(metadata: dict[str, str]) -> dict | None:
    """The policy config a table's file metadata records (``policy_record``), or None."""
    try:
        recorded = json.loads(metadata.get(POLICY_CONFIG_KEY) or "null")
    except ValueError:
        return None
    return recorded if isinstance(recorded, dict) else None


def require_decided_policy(wh: Warehouse, shard: str, policy: PolicyResource, step: str) -> None:
    """Refuse to run ``step`` of a shard under other decision rules than its stored caption_decisions were
    decided under: which pairs are rewritten, and which copy of each duplicate group is kept (other shards'
    copies dropped for it), hold only under those rules; resolved under others, a group can lose every copy."""
    differs = decided_under_other_policy(wh.table_metadata("caption_decisions", shard), policy)
    if differs:
        raise dg.Failure(description=(
            f"{step} of shard {shard!r} would run under another policy than its caption_decisions were decided "
            f"under: {'; '.join(differs)}. Materialize caption_decisions (or the whole shard, or run "
            f"reselect_shards) with this policy, or run {step} with theirs: which pairs are rewritten and which "
            "copy of each duplicate group is kept (other shards' copies dropped for it) hold only under the rules "
            "that decided them."),
            metadata={"shard": shard, "differing_settings": "; ".join(differs)})


@dg.asset(
    partitions_def=shard_partitions, group_name="decisions", owners=OWNERS, tags={"stage": "decisions"},
    code_version="7",  # bump when the same inputs give different output (2: in_keep_fraction per pair; 3: a low
    # score that rounds onto its threshold is shown with the digits that keep it below; 4: passes_keep_expression
    # per pair, with keep_expression set; 5: a score under a threshold below 10 is shown to its thousandths, and
    # text_quality's rules only beside text_quality; 6: a weak-caption check whose scorer failed on the pair is
    # weak, caption_unchecked:<column>, not a pass; 7: rewrite_needs per pair, and a pair outside the filters that no
    # rewrite's score could publish is dropped, not rewritten; a tie at the cut that lost the draw says so)
    deps=[selection_cut, dedup_index],  # cross-shard inputs; quality_scores is this shard's table
    kinds={"parquet"},
    description="Keep, rewrite or drop for every pair, with the reason naming the signal (AITQE: rewrite "
    "weak captions of usable images instead of dropping them). Duplicate groups are resolved over the whole "
    "pool (the dedup_index; computed on the spot if it is stale), keeping the largest usable copy, whatever "
    "the order of shard runs. With keep_fraction on, applies the global cut stored by "
    "selection_cut (materialize that first); a pair outside it, or failing keep_expression, is published only "
    "through an accepted rewrite. No model runs: change thresholds and re-materialize.",
)
def caption_decisions(context: dg.AssetExecutionContext, warehouse: WarehouseResource, policy: PolicyResource,
                      quality_scores: pd.DataFrame) -> dg.Output[pd.DataFrame]:
    shard = context.partition_key
    wh = warehouse.warehouse()
    raw_fingerprint(warehouse, shard)  # the raw file must still be the one pairs read
    scores = quality_scores
    rules = policy.decision_policy()
    cut = None
    if rules.keep_fraction is not None:
        try:
            cut = cut_for_shard(wh, rules.keep_fraction, rules.quality_column, shard, scores)
        except CutUnavailable as exc:
            raise dg.Failure(description=str(exc)) from exc
    scores, dedup = mark_duplicates(scores, wh, shard, rules)  # over the whole pool, order-free
    decisions = decide(scores, rules, cut=cut)
    # which policy, pool-wide duplicate groups and keep_fraction cut these decisions applied: the policy with
    # or without duplicate signals, so a shard decided under another than the stored dedup_index's is found
    used = {**policy_record(policy), DECIDED_BY_KEY: context.run_id}
    if dedup is not None:
        context.log.info(f"{shard}: duplicate groups from {dedup.source}")
        used[DIGEST_KEY] = dedup.digest
    elif rules.drop_duplicates:  # on by default: a profile without fingerprints must not pass for deduplicated
        context.log.warning(f"{shard}: {NOT_DEDUPLICATED}")
    # so too a bound on (nsfw.drop, image.min_brightness, ... by default) whose column these scores lack
    unjudged = sorted({f"policy.{POLICY_SETTINGS.get(b.setting, b.setting)} ({b.column})"
                       for b in unjudged_bounds(scores.columns, rules)})
    not_judged = (f"on, but no column of theirs in these quality_scores (their profile runs no scorer of it): "
                  f"{', '.join(unjudged)}; no pair is held to them. Score with a profile that computes them, or turn "
                  "them off") if unjudged else None
    if not_judged:
        context.log.warning(f"{shard}: bounds {not_judged}")
    if cut is not None:
        used[CUT_KEY] = cut.rule_digest()
    decisions.attrs[FILE_METADATA] = used
    actions = decisions["action"].value_counts()
    # by the signals each reason names, as the report counts them (not its first word: one row per score value)
    drops = decisions.loc[decisions["action"].eq("drop"), "reason"].map(reason_signals).explode().value_counts()
    n = len(decisions)  # an empty shard has no shares: left empty, not 0
    return dg.Output(decisions, metadata={
        **numbers({"pairs": len(decisions), "keep": int(actions.get("keep", 0)),
                   "rewrite": int(actions.get("rewrite", 0)), "drop": int(actions.get("drop", 0)),
                   "rewrite_share": actions.get("rewrite", 0) / n if n else None,
                   "drop_share": actions.get("drop", 0) / n if n else None,
                   "nsfw_review": int(decisions["nsfw_review"].sum())}),
        **({} if IN_EXPRESSION not in decisions else numbers({
            "passes_keep_expression": int(decisions[IN_EXPRESSION].sum())})),  # as decide marked them
        **({} if cut is None else numbers({
            "in_keep_fraction": int(decisions[IN_CUT].sum()),  # inside the global cut, as decide marked them
            "keep_fraction": cut.fraction, "keep_fraction_cut_score": cut.cut_score,
            "keep_fraction_pool_scored": cut.scored, "keep_fraction_pool_kept": cut.kept})),
        **({} if dedup is None else {
            **numbers({"duplicates_dropped": int((~scores["dup_keep"].astype(bool)).sum()),
                       "in_duplicate_groups": int(scores["dup_kind"].notna().sum())}),
            "dedup_source": dg.MetadataValue.text(dedup.source)}),
        **({"duplicates": dg.MetadataValue.text(f"not checked: {NOT_DEDUPLICATED}")}
           if dedup is None and rules.drop_duplicates else {}),
        **({"bounds_not_checked": dg.MetadataValue.text(not_judged)} if not_judged else {}),
        "drop_reasons": dg.MetadataValue.md(counts_markdown(drops, "Drop reasons")),
        # dup_of: the kept copy a duplicate was dropped for (absent where the profile has no duplicate signals)
        "decisions_preview": table(decisions[[c for c in ("key", "action", "reason", "quality_before", "dup_of")
                                              if c in decisions]]),
        "decisions_shown": shown(decisions, PREVIEW_ROWS, "pairs", f"the caption_decisions table, or curate lineage "
                                 f"--shard {shard}"),
    })

"""Checks on each stage's table; the drift check blocks curated shards from being written.

Each check runs in its asset's own step, over the table the step just made (Dagster's ``check_specs``
on a subsettable multi-asset): no step and no read of the table of its own. Any check still runs
alone, as the UI's *Execute* on it does: the asset's step then reads the stored table instead of
making it (``checked_table``).
"""

import math
import os
from collections.abc import Callable, Iterator, Mapping
from types import SimpleNamespace

import dagster as dg
import pandas as pd

from curation_pipeline.assets.io import FAILED_CHECKS_KEY, FILE_METADATA
from curation_pipeline.assets.metadata import OWNERS, numbers
from curation_pipeline.partitions import shard_partitions
from curation_pipeline.resources import MODEL_REWRITERS, PolicyResource, WarehouseResource
from curation_pipeline.rewriting.attempts import replies_unread, rewriter_raised
from curation_pipeline.scoring.columns import ERROR_SUFFIX, error_columns
from curation_pipeline.scoring.registry import score_ranges, scorer_classes
from curation_pipeline.scoring.run import raised_on
from curation_pipeline.shards.reader import DOTTED_KEY, RECORD_COLUMNS, TAR_DAMAGE
from curation_pipeline.storage.warehouse import FileChanged
from curation_pipeline.validation.drift import DriftResult, check_final_captions_drift, compare_lengths
from curation_pipeline.validation.lengths import caption_lengths
from curation_pipeline.validation.reference import REFERENCE_ASSET, read_reference
from curation_pipeline.validation.tables import check_table

Checks = Mapping[str, Callable[[], dg.AssetCheckResult]]  # check name -> its evaluation, run only if selected


def _spec(name: str, asset: str, description: str, blocking: bool = True) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(name, asset=asset, blocking=blocking, partitions_def=shard_partitions,
                             description=description)


PAIRS_CHECKS = [
    _spec("pairs_schema", "pairs", "Inventory schema: every column present, keys unique and non-null."),
    _spec("caption_length_vs_reference", "pairs",
          "Warns (never blocks) when the shard's original captions do not look like the pinned reference "
          f"({REFERENCE_ASSET}): the same KL, mean and quantile limits as the drift check (policy.drift). A "
          "changed source (truncated captions, file names, alt-text stubs) shows here before it is curated. "
          "Passes without comparing until the reference is built (one of fewer than policy.drift.min_rows captions "
          "is refused).", blocking=False),
    _spec("pairs_read_whole", "pairs",
          "Warns (never blocks) when samples of the raw file were lost before any scoring: the tar is damaged "
          "(nothing after the damage is read), or members were skipped and no pair was read (keys with a dot, "
          "absolute paths, a tar written in directory order), or more samples' members were skipped as unsafe, "
          "repeated or unreadable than pairs were read. The skips table says why, member by member.", blocking=False),
]
SCORES_CHECKS = [
    _spec("scores_in_range", "quality_scores",
          "Scores: keys unique, each scorer's columns within its range (NaN = unknown is allowed)."),
    _spec("scores_complete", "quality_scores",
          "No scorer failed systematically: one that raised (CUDA error, out of memory at one pair, a bug) "
          "on all of at least 2 pairs it attempted, or on more than policy.max_unscored_share of them, fails "
          "the shard. A pair the model rejects stays a NaN with its reason; pairs without an image or "
          "caption are the reader's counted skips, not attempts."),
]
REWRITE_CHECKS = [
    _spec("rewrites_complete", "rewritten_captions",
          "The rewriter did not fail systematically: one that raised (CUDA error, out of memory, a broken "
          "checkpoint) on all of at least 2 pairs it attempted, or on more than policy.max_unscored_share of them, "
          "fails the shard, which is then run again: else each weak caption it would have saved is dropped as "
          "not rewritten. A reply that gives no usable caption is a rejected attempt, not a failure."),
]
FINAL_CAPTION_CHECKS = [
    _spec("final_captions_complete", "final_captions",
          "Final captions: one row per pair, outcome and reason always set, kept pairs have a caption."),
    _spec("caption_length_drift", "final_captions",
          "Great Expectations caption-length drift: the final captions of the kept pairs against the same "
          "pairs' original captions (KL on open-tailed quantile bins, mean ratio, quantile bands)."),
    _spec("kept_share", "final_captions",
          "Warns (never blocks) when a shard keeps nothing, or drops more than policy.warn_drop_share of its "
          "pairs: a shard of pure duplicates or junk publishes an empty or thin tar, which is legitimate but "
          "worth a look.", blocking=False),
]
ALL_CHECK_SPECS = [*PAIRS_CHECKS, *SCORES_CHECKS, *REWRITE_CHECKS, *FINAL_CAPTION_CHECKS]
BLOCKING = {(spec.asset_key.path[-1], spec.name) for spec in ALL_CHECK_SPECS if spec.blocking}


def table_out(stage: str, code_version: str, description: str, kinds: tuple[str, ...] = ("parquet",)) -> dg.AssetOut:
    """The output of a per-shard table asset whose checks run in its step (``checked_table``)."""
    return dg.AssetOut(is_required=False,  # not made when only its checks run
                       group_name=stage, owners=OWNERS, tags={"stage": stage}, kinds=set(kinds),
                       code_version=code_version, description=description)


def checked_table(context: dg.AssetExecutionContext, warehouse: WarehouseResource, name: str,
                  make: Callable[[], tuple[pd.DataFrame, dict]], checks: Callable[[pd.DataFrame], Checks],
                  provenance: Callable[[], dict] = dict) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """The body of such an asset: its table made (``make``: table and metadata) when the asset is selected,
    else the stored one (only checks run, as the UI's Execute on one does: its blocking checks' verdict is
    stored with it again, ``FAILED_CHECKS_KEY``); then the results of the checks selected in this run (every
    one, unless a run picked some) over that table. ``provenance``: more of the made table's ``dg.Output``
    arguments (``assets.made_of.output_provenance``)."""
    done: dict[str, dg.AssetCheckResult] = {}
    if context.selected_asset_keys:
        table, metadata = make()
        evaluations = checks(table)
        # a table that fails a blocking check is stored (to be looked at) with the names of those checks:
        # Dagster's blocking holds in this run only, and the IO manager refuses it to any later step
        done = _blocking(name, evaluations)
        table.attrs.setdefault(FILE_METADATA, {})[FAILED_CHECKS_KEY] = _failed(done)
        yield dg.Output(table, output_name=name, metadata=metadata, **provenance())
    else:
        wh, shard = warehouse.warehouse(), context.partition_key
        for _ in range(3):  # a table another run stores again while its checks run is checked as it now is
            table, stored, version = wh.read_table_versioned(name, shard)
            evaluations = checks(table)
            # the stored verdict becomes today's (checks and policy), either way: a fixed policy clears a
            # failure without re-running the models, and a failure found here refuses the table to later
            # steps (curated_shards) as one found when it was made does
            done = _blocking(name, evaluations)
            failed, was = _failed(done), stored.get(FAILED_CHECKS_KEY) or ""
            if failed == was:
                break
            try:  # only on the rows just checked
                wh.update_table_metadata(name, shard, {FAILED_CHECKS_KEY: failed}, read_version=version)
            except FileChanged:  # its new rows and their own run's verdict stand: check those instead
                context.log.warning(f"{name} of {shard} was stored again by another run while its checks ran: "
                                    "checking the new table")
                continue
            context.log.info(f"{name} of {shard}: failed blocking checks now {failed or 'none'} "
                             f"(were {was or 'none'})")
            break
        else:
            raise FileChanged(f"{name} of {shard} was stored again each time its checks ran: execute them "
                              "again once the run writing it is done")
    for key in context.selected_asset_check_keys:
        yield done[key.name] if key.name in done else evaluations[key.name]()


def _blocking(name: str, evaluations: Checks) -> dict[str, dg.AssetCheckResult]:
    """The results of the table's blocking checks, whether or not this run selected them."""
    return {check: evaluations[check]() for check in evaluations if (name, check) in BLOCKING}


def _failed(results: dict[str, dg.AssetCheckResult]) -> str:
    """What ``FAILED_CHECKS_KEY`` records: the failed checks' names, comma-joined ('' for none)."""
    return ",".join(sorted(check for check, result in results.items() if not result.passed))


def _table_check_result(result, description: str, check_name: str) -> dg.AssetCheckResult:
    meta = result.to_metadata()
    return dg.AssetCheckResult(
        check_name=check_name, passed=bool(result.passed), severity=dg.AssetCheckSeverity.ERROR,
        description=description if result.passed else "; ".join(result.failures)[:1000],
        metadata={**numbers({k: v for k, v in meta.items() if not isinstance(v, str)}),
                  **{k: dg.MetadataValue.text(v) for k, v in meta.items() if isinstance(v, str)}})


def pairs_checks(df: pd.DataFrame, shard: str, warehouse: WarehouseResource, policy: PolicyResource) -> Checks:
    def pairs_schema():
        result = check_table(df, required_columns=RECORD_COLUMNS, non_null=["key", "decode_status"], unique=["key"])
        return _table_check_result(result, f"{len(df)} rows, schema and keys ok", "pairs_schema")
    return {"pairs_schema": pairs_schema,
            "caption_length_vs_reference": lambda: caption_length_vs_reference(df, shard, warehouse, policy),
            "pairs_read_whole": lambda: pairs_read_whole(df, _skips_of(df, shard, warehouse))}


SKIPS_ATTR = "curation_skips"  # pairs' skips as ``skips_summary`` says them, in its table's attrs (not stored)
# skips that lose (a member of) a sample, not a file beside the samples (an extra image, a .cls never parsed)
SAMPLE_LOSSES = ("unsafe_key", "duplicate_key", "not_a_file", "undecodable_name", "unsafe_name", "member_too_large",
                 "unreadable_member", "no_extension")


def skips_summary(skips: pd.DataFrame) -> dict:
    """What ``pairs_read_whole`` reads of a shard's skips: small, so it can ride in the table's attrs."""
    if not len(skips):
        return {"members": 0, "lost": 0, "damage": [], "top": None}
    reasons, details = skips["reason"].astype(str), skips["detail"].fillna("").astype(str)
    top = reasons.value_counts()
    detail = details[reasons.eq(top.index[0])].iloc[0]
    return {"members": len(skips),
            "lost": int(reasons.isin(SAMPLE_LOSSES).sum() + (reasons.eq("unsupported_member")
                                                             & details.str.contains(DOTTED_KEY, regex=False)).sum()),
            "damage": [f"{r} {d}".strip() for r, d in zip(reasons, details) if r in TAR_DAMAGE],
            "top": [str(top.index[0]), int(top.iloc[0]), detail]}


def _skips_of(df: pd.DataFrame, shard: str, warehouse: WarehouseResource) -> dict:
    """The skips the inventory was made with (in hand where pairs made it), else the stored ones (a check run
    alone): one read less per shard."""
    summary = df.attrs.get(SKIPS_ATTR)
    return summary if summary is not None else skips_summary(warehouse.warehouse().read_table("skips", shard))


def pairs_read_whole(df: pd.DataFrame, skips: dict) -> dg.AssetCheckResult:
    """A shard whose every sample was skipped (keys with a dot) finished ok with 0 pairs, and one read only up to
    damage was ok everywhere but ``curate run``'s console: the samples lost are in the skips table alone.
    ``skips``: ``skips_summary`` of the shard's skips."""
    problems = [f"the raw file is damaged, nothing after it was read: {damage}" for damage in skips["damage"]]
    if skips["members"] and not len(df):
        reason, count, detail = skips["top"]
        problems.append(f"no pair read; {skips['members']} members skipped, most often {reason} ({count}"
                        + (f": {detail}" if detail else "") + ")")
    elif skips["lost"] > len(df):
        problems.append(f"{skips['lost']} members of samples skipped (unsafe, repeated, unreadable or dotted keys), "
                        f"more than the {len(df)} pairs read")
    return dg.AssetCheckResult(
        check_name="pairs_read_whole", passed=not problems, severity=dg.AssetCheckSeverity.WARN,
        description="; ".join(problems)[:1000] or f"{len(df)} pairs read, {skips['members']} members skipped",
        metadata=numbers({"pairs": len(df), "skipped_members": skips["members"], "sample_members_lost": skips["lost"],
                          "damage": len(skips["damage"])}))


def caption_length_vs_reference(df: pd.DataFrame, shard: str, warehouse: WarehouseResource,
                                policy: PolicyResource) -> dg.AssetCheckResult:
    thresholds = policy.drift_thresholds()
    reference = read_reference(warehouse.warehouse())
    not_compared = None
    if reference is None:
        not_compared = f"no reference built yet: materialize {REFERENCE_ASSET} over the shards that set the standard"
    elif reference.counts.unit != thresholds.length_unit:
        not_compared = (f"the reference counts {reference.counts.unit}, policy.drift.length_unit is "
                        f"{thresholds.length_unit}: materialize {REFERENCE_ASSET} again")
    if not_compared:
        return dg.AssetCheckResult(check_name="caption_length_vs_reference", passed=True,
                                   severity=dg.AssetCheckSeverity.WARN, description=f"not compared: {not_compared}")
    result = compare_lengths(reference.counts, caption_lengths(df["caption"], thresholds.length_unit), thresholds,
                             labels=("reference", "shard"))
    provenance = {"reference_shards": dg.MetadataValue.int(len(reference.shards)),
                  "reference_built_at": dg.MetadataValue.text(reference.built_at),
                  "shard_in_reference": dg.MetadataValue.bool(shard in reference.shards)}
    return _drift_check_result(result, "caption_length_vs_reference", dg.AssetCheckSeverity.WARN,
                               f"captions like the reference's {reference.counts.n} ({len(reference.shards)} shards)",
                               provenance)


def scores_checks(df: pd.DataFrame, policy: PolicyResource) -> Checks:
    def scores_in_range():
        result = check_table(df, required_columns=["shard", "key", policy.quality_column], non_null=["key"],
                             unique=["key"], ranges={c: r for c, r in score_ranges().items() if c in df.columns})
        return _table_check_result(result, f"{len(df)} rows within score ranges", "scores_in_range")
    return {"scores_in_range": scores_in_range, "scores_complete": lambda: scores_complete(df, policy)}


def scores_complete(df: pd.DataFrame, policy: PolicyResource) -> dg.AssetCheckResult:
    """Per-pair NaNs are counted, not failed; a model that raised on (nearly) every pair is a failed
    shard: else decisions would rewrite or drop it all, and the run would look like a success."""
    raised = raised_on(df, _registered_scorers(df))
    failed = [r for r in raised.values() if r.systematic(policy.max_unscored_share)]
    metadata = {**numbers({f"raised_{r.scorer}": r.pairs for r in raised.values()}),
                **numbers({f"raised_share_{r.scorer}": r.share for r in raised.values()})}
    for r in failed:
        metadata[f"error_{r.scorer}"] = dg.MetadataValue.text(r.reason or "")
    described = "; ".join(_systematic(r, "raised", policy) for r in failed)
    worst = max(raised.values(), key=lambda r: r.share, default=None)
    return dg.AssetCheckResult(
        check_name="scores_complete", passed=not failed, severity=dg.AssetCheckSeverity.ERROR,
        description=described[:1000] or (f"raised on the most: {worst.scorer}, {worst.pairs} of the {worst.attempted} "
                                         f"pairs it attempted ({worst.share:.0%})" if worst and worst.pairs
                                         else f"no scorer raised on any of {len(df)} pairs"),
        metadata=metadata)


def _systematic(r, did: str, policy: PolicyResource) -> str:
    """What a ``Raised`` that failed its check (``systematic``) says: how many of its pairs, and why most often."""
    share = "all" if r.pairs == r.attempted else \
        f"{r.share:.0%}, above max_unscored_share {policy.max_unscored_share:.0%}"
    return (f"{r.scorer} {did} on {r.pairs} of the {r.attempted} pairs it attempted ({share}), most often "
            f"({r.reason_pairs} pairs) {r.reason}")


def rewrites_checks(lineage: pd.DataFrame, policy: PolicyResource) -> Checks:
    return {"rewrites_complete": lambda: rewrites_complete(lineage, policy)}


def rewrites_complete(lineage: pd.DataFrame, policy: PolicyResource) -> dg.AssetCheckResult:
    """As ``scores_complete`` for a scorer: a pair the rewriter raised on is counted, a rewriter that raised on
    (nearly) every pair fails the shard."""
    r = rewriter_raised(lineage)
    u = replies_unread(lineage, MODEL_REWRITERS)  # a model that replied, but never with a caption to read
    failed, unread = r.systematic(policy.max_unscored_share), u.systematic(policy.max_unscored_share)
    metadata = numbers({"attempts": r.attempted, "raised": r.pairs, "raised_share": r.share if r.attempted else None,
                        "replies_unread": u.pairs})
    if failed or unread:
        metadata["error"] = dg.MetadataValue.text((r if failed else u).reason or "")

    if failed:
        described = _systematic(r, "raised", policy)
    elif unread:
        described = (_systematic(u, "replied with no readable caption", policy) + ": raise rewriter.max_new_tokens "
                     "where replies are cut off, or check that the checkpoint answers in its rewriter's format")
    else:
        described = (f"{r.scorer} raised on {r.pairs} of the {r.attempted} pairs it attempted"
                     + (f"; replied with no readable caption on {u.pairs}" if u.pairs else "")) if r.attempted \
            else "no rewrites attempted"
    return dg.AssetCheckResult(
        check_name="rewrites_complete", passed=not (failed or unread), severity=dg.AssetCheckSeverity.ERROR,
        description=described[:1000], metadata=metadata)


def _registered_scorers(df: pd.DataFrame) -> list[SimpleNamespace]:
    """The registered scorers with a column in ``df``, as the registry declares them; a model scorer whose
    instance gives the name (clip, mlm) is named by its error columns' common prefix."""
    out = []
    for cls in scorer_classes():
        columns = tuple(c.name for c in cls.outputs)
        errors = error_columns(SimpleNamespace(name=cls.name, columns=columns))
        if df.columns.isin([*columns, *errors]).any():
            name = cls.name or os.path.commonprefix([c.removesuffix(ERROR_SUFFIX) for c in errors]).rstrip("_")
            out.append(SimpleNamespace(name=name, columns=columns))
    return out


def final_captions_checks(df: pd.DataFrame, n_pairs: int, policy: PolicyResource) -> Checks:
    """``n_pairs``: the shard's inventory, which every pair must be resolved against."""
    kept = df[df["outcome"].ne("dropped")]
    return {
        "final_captions_complete": lambda: final_captions_complete(df, kept, n_pairs),
        "caption_length_drift": lambda: caption_length_drift(df, policy),  # same pairs before and after
        "kept_share": lambda: kept_share(df, kept, policy),
    }


def final_captions_complete(df: pd.DataFrame, kept: pd.DataFrame, n_pairs: int) -> dg.AssetCheckResult:
    result = check_table(df, required_columns=["key", "outcome", "reason", "final_caption"],
                         non_null=["key", "outcome", "reason"], unique=["key"])
    # no words (None, blank, whitespace) is no caption, as the drift check and the rewriter count it
    captionless = kept.loc[caption_lengths(kept["final_caption"]) == 0, "key"].tolist() if "final_caption" in kept \
        else []
    if captionless:  # a shard may drop everything (all duplicates, say), but nothing kept may lack a caption
        result.passed = False
        result.failures.append(f"{len(captionless)} kept pairs without a final caption: {captionless[:5]}")
    if len(df) != n_pairs:
        result.passed = False
        result.failures.append(f"{len(df)} final rows for {n_pairs} pairs")
    return _table_check_result(result, f"{len(df)} pairs resolved, {len(kept)} kept with a caption",
                               "final_captions_complete")


def caption_length_drift(final: pd.DataFrame, policy: PolicyResource) -> dg.AssetCheckResult:
    """Over ``drift_pairs``; the kept pairs given a caption they lacked are counted as ``captions_written``."""
    result = check_final_captions_drift(final, policy.drift_thresholds())
    kept = int(final["outcome"].ne("dropped").sum())
    return _drift_check_result(result, "caption_length_drift", dg.AssetCheckSeverity.ERROR, "caption lengths stable",
                               {"captions_written": dg.MetadataValue.int(kept - result.n_original)})


def _drift_check_result(result: DriftResult, check_name: str, severity: dg.AssetCheckSeverity, stable: str,
                        metadata: dict | None = None) -> dg.AssetCheckResult:
    meta = result.to_metadata()
    return dg.AssetCheckResult(
        check_name=check_name, passed=bool(result.passed), severity=severity,
        description=("; ".join(result.failures) if result.failures else
                     f"not compared: {result.note}" if not result.expectations else  # passed unevaluated: say why
                     f"{stable}: mean ratio {result.mean_ratio:.2f} ({result.note})" if math.isnan(result.kl) else
                     f"{stable}: KL {result.kl:.3f}, mean ratio {result.mean_ratio:.2f}")[:1000],
        metadata={**numbers({k: v for k, v in meta.items() if not isinstance(v, (str, bool))}),
                  "drift_table": dg.MetadataValue.md(result.to_markdown()), **(metadata or {})})


def kept_share(df: pd.DataFrame, kept: pd.DataFrame, policy: PolicyResource) -> dg.AssetCheckResult:
    n, n_kept = len(df), len(kept)
    dropped_share = (n - n_kept) / n if n else 0.0
    problems = []
    if n_kept == 0 and n:  # an empty shard has nothing to keep: not a warning
        problems.append(f"no pair kept out of {n}")
    elif dropped_share > policy.warn_drop_share:
        problems.append(f"{dropped_share:.0%} of {n} pairs dropped (warn above {policy.warn_drop_share:.0%})")
    return dg.AssetCheckResult(
        check_name="kept_share", passed=not problems, severity=dg.AssetCheckSeverity.WARN,
        description="; ".join(problems) or f"{n_kept} of {n} pairs kept",
        metadata=numbers({"pairs": n, "kept": n_kept, "dropped_share": dropped_share}))

"""Curation decisions scored against per-sample labels (clean / noisy / junk / mismatched).

The truth file is what ``evaluation.noise.write_truth`` writes. Per label: the share kept, rewritten
and dropped; for noisy samples also ``caught`` (not kept as it came), ``exactly_clean`` (the final
caption equals the clean source) and edit-ratio quantiles against the clean source
(``rewriting.verify.edit_ratio``); for clean samples every false change, with examples. A sample dropped for its
image (``image_too_small``, ``nsfw``, a duplicate: ``decisions.policy.is_image_drop``) says nothing about its caption:
it counts in its label's shares and drop reasons, and is left out of the caption figures (caught, exactly clean,
false changes, junk and mismatched dropped), which are over the samples whose caption was judged.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from curation_pipeline.decisions.policy import is_image_drop
from curation_pipeline.evaluation.keys import EXAMPLES, require_unambiguous_keys
from curation_pipeline.evaluation.noise import LABELS
from curation_pipeline.reporting.report import reason_signals
from curation_pipeline.rewriting.verify import edit_ratio
from curation_pipeline.shards.reader import ReaderLimits, cut_caption, file_caption

QUANTILES = (0.5, 0.9, 0.99)
# Joined samples whose truth caption is not the warehouse's original_caption are left out; past this share
# of them the truth file is not of these shards (shard names and keys repeat across generator runs).
MAX_CAPTION_MISMATCH_SHARE = 0.01


def read_truth(path: str | Path) -> pd.DataFrame:
    rows = []
    with open(path, encoding="utf-8-sig") as handle:
        for n, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{n}: not JSON ({exc})") from exc
            if "key" not in row or row.get("label") not in LABELS:
                raise ValueError(f"{path}:{n}: each line needs 'key' and a 'label' in {', '.join(LABELS)}")
            if row["label"] == "noisy" and not isinstance(row.get("clean"), str):
                raise ValueError(f"{path}:{n}: a noisy sample needs its 'clean' source caption")
            rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no labelled samples")
    truth = pd.DataFrame(rows)
    for column in ("clean", "caption", "shard", "split", "kinds"):
        if column not in truth:
            truth[column] = None
    truth["kinds"] = truth["kinds"].apply(lambda v: list(v) if isinstance(v, (list, tuple)) else [])
    truth["key"] = truth["key"].astype(str)
    on = _names_shards(truth)
    repeated = truth.loc[truth.duplicated(on, keep=False), on].drop_duplicates()
    if len(repeated):
        named = ", ".join("/".join(map(str, row)) for row in repeated.head(EXAMPLES).itertuples(index=False))
        raise ValueError(f"{path}: {len(repeated)} samples are labelled more than once (same {' and '.join(on)}: "
                         f"{named}); keys repeat across shards, so name each row's 'shard'")
    return truth


def _names_shards(truth: pd.DataFrame) -> list[str]:
    """What names a truth sample: shard and key where every row names its shard, else the key."""
    return ["shard", "key"] if truth["shard"].notna().all() else ["key"]


def as_ingested(caption: str) -> str:
    """A truth caption as ingest stores it from a caption file (``file_caption``, then the reader's cut at its
    length limit, which no setting changes and which backs off to a space rather than split a word)."""
    return cut_caption(file_caption(caption), ReaderLimits.max_caption_chars)


def _is_text(value) -> bool:
    return isinstance(value, str)


def join_outcomes(truth: pd.DataFrame, final: pd.DataFrame) -> pd.DataFrame:
    """Truth rows with the pipeline's ``outcome``, ``final_caption`` and ``reason`` (inner join on
    shard and key where the truth names shards, else on key, which must then name one shard of ``final``).

    Shard names and keys are predictable, so a truth file of another generator run lines up with unrelated
    pairs: a row whose caption is not the pair's ``original_caption`` is left out (never scored against
    another caption) and counted; more than ``MAX_CAPTION_MISMATCH_SHARE`` of them is an error. The counts
    are in ``attrs``: labelled, not_in_warehouse, caption_mismatches, caption_unchecked."""
    on = _names_shards(truth) if "shard" in final else ["key"]
    if on == ["key"]:
        require_unambiguous_keys(truth["key"], final, "the truth file", "the curated pairs")
    cols = list(dict.fromkeys(on + ["outcome", "final_caption", "reason", "original_caption"]))
    joined = truth.merge(final[cols], on=on, how="inner")
    if joined.empty:
        raise ValueError(f"no labelled sample matches a curated pair (joined on {', '.join(on)}): are the truth file "
                         "and the warehouse from the same shards?")
    checked = joined["caption"].map(_is_text) & joined["original_caption"].map(_is_text)  # both sides known
    # the same caption as written (the in-process caption path) or as ingest read it (the warehouse)
    same = pd.Series([not c or o == t or o == as_ingested(t)
                      for t, o, c in zip(joined["caption"], joined["original_caption"], checked)],
                     index=joined.index, dtype=bool)
    differ = joined[~same]
    if len(differ) > MAX_CAPTION_MISMATCH_SHARE * len(joined):
        named = ", ".join("/".join(map(str, row)) for row in differ[on].head(EXAMPLES).itertuples(index=False))
        first = differ.iloc[0]
        raise ValueError(f"{len(differ)} of {len(joined)} labelled samples joined on {' and '.join(on)} have a caption "
                         f"other than the curated pair's original_caption (more than {MAX_CAPTION_MISMATCH_SHARE:.0%}; "
                         f"e.g. {named}; the first: truth {first['caption'][:60]!r}, warehouse "
                         f"{str(first['original_caption'])[:60]!r}): is the truth file from another run of the "
                         "generator (another --seed) than these shards?")
    out = joined[same].reset_index(drop=True)
    # noise that ingest removed (a NUL byte, a leading BOM): the pipeline was given the clean caption, so the sample
    # is scored as the clean one it received, not as noise the cleaner missed
    got = out["original_caption"]
    removed = out["label"].eq("noisy") & got.map(_is_text) & got.eq(out["clean"])
    out.loc[removed, "label"] = "clean"
    out.attrs.update(labelled=int(len(truth)), not_in_warehouse=int(len(truth) - len(joined)),
                     caption_mismatches=int(len(differ)), caption_unchecked=int((~checked).sum()),
                     noise_removed_at_ingest=int(removed.sum()))
    return out


def _share(mask: pd.Series) -> float:
    return float(mask.mean()) if len(mask) else float("nan")


def _examples(df: pd.DataFrame, limit: int, columns: list[str]) -> list[dict]:
    return [{c: (None if pd.isna(v) else v) if not isinstance(v, list) else v for c, v in row.items()}
            for row in df[columns].head(limit).to_dict("records")]


def _top(values: pd.Series, n: int) -> dict[str, int]:
    """The ``n`` most frequent values with their counts; ties in name order, so the cut is reproducible."""
    counts = values.value_counts().sort_index().sort_values(ascending=False, kind="stable")
    return {str(k): int(v) for k, v in counts.head(n).items()}


def evaluate_labels(joined: pd.DataFrame, examples: int = 10) -> dict:
    """The report (plain JSON types) for truth rows joined with outcomes (``join_outcomes``)."""
    df = joined.copy()
    df["final_caption"] = df["final_caption"].where(df["outcome"].ne("dropped"), None)
    report: dict = {"samples": int(len(df)), "labelled": int(joined.attrs.get("labelled", len(df))),
                    "unmatched": int(joined.attrs.get("not_in_warehouse", 0)),
                    "caption_mismatches": int(joined.attrs.get("caption_mismatches", 0)),
                    "caption_unchecked": int(joined.attrs.get("caption_unchecked", 0)),
                    "noise_removed_at_ingest": int(joined.attrs.get("noise_removed_at_ingest", 0)), "labels": {}}
    for label in LABELS:
        part = df[df["label"].eq(label)]
        dropped = part.loc[part["outcome"].eq("dropped"), "reason"].fillna("").astype(str)
        report["labels"][label] = {
            "n": int(len(part)), "kept_unchanged": _share(part["outcome"].eq("kept")),
            "rewritten": _share(part["outcome"].eq("rewritten")), "dropped": _share(part["outcome"].eq("dropped")),
            # by the signal each reason names, as the quality report counts them: not split by a pair's own
            # score ("low_text_quality=30.0" and "=0.0" are one reason; "duplicate:near_image" stays whole)
            "drop_reasons": _top(dropped.map(reason_signals).explode(), 3),
            "dropped_for_image": int((part["outcome"].eq("dropped") & part["reason"].map(is_image_drop)).sum()),
        }
    for_image = df["outcome"].eq("dropped") & df["reason"].map(is_image_drop)
    report["dropped_for_image"] = int(for_image.sum())
    report["image_drop_reasons"] = _top(df.loc[for_image, "reason"].fillna("").astype(str)
                                        .map(reason_signals).explode(), 5) if for_image.any() else {}
    df = df[~for_image]  # the caption figures: over the samples whose caption was judged
    noisy = df[df["label"].eq("noisy")].copy()
    noisy["caught"] = ~noisy["outcome"].eq("kept")
    noisy["exactly_clean"] = noisy["final_caption"].eq(noisy["clean"]) & noisy["outcome"].ne("dropped")
    alive = noisy[noisy["outcome"].ne("dropped")]
    ratios = np.array([edit_ratio(c, f) for c, f in zip(alive["clean"], alive["final_caption"])], dtype=float)
    noisy_report = {
        "n": int(len(noisy)), "caught": _share(noisy["caught"]), "exactly_clean": _share(noisy["exactly_clean"]),
        "dropped": _share(noisy["outcome"].eq("dropped")),
        "edit_ratio": {f"p{round(q * 100)}": (float(np.quantile(ratios, q)) if len(ratios) else float("nan"))
                       for q in QUANTILES},
        "edit_ratio_mean": float(ratios.mean()) if len(ratios) else float("nan"),
        "by_kind": {},
        "not_clean_examples": _examples(noisy[~noisy["exactly_clean"]], examples,
                                        ["key", "kinds", "caption", "clean", "final_caption", "outcome", "reason"]),
    }
    for kind in sorted({k for ks in noisy["kinds"] for k in ks}):
        having = noisy[noisy["kinds"].apply(lambda ks, k=kind: k in ks)]
        alone = having[having["kinds"].apply(len).eq(1)]
        noisy_report["by_kind"][kind] = {
            "n": int(len(having)), "caught": _share(having["caught"]), "exactly_clean": _share(having["exactly_clean"]),
            "alone_n": int(len(alone)), "alone_exactly_clean": _share(alone["exactly_clean"]),
        }
    report["noisy"] = noisy_report
    clean = df[df["label"].eq("clean")]
    changed = clean[~clean["outcome"].eq("kept")]
    report["clean"] = {
        "n": int(len(clean)), "kept_unchanged": _share(clean["outcome"].eq("kept")),
        "false_changes": int(len(changed)) if len(clean) else None,  # nothing judged is no perfect score
        "false_change_examples": _examples(changed, examples, ["key", "caption", "final_caption", "outcome", "reason"]),
    }
    junk = df[df["label"].eq("junk")]
    report["junk"] = {
        "n": int(len(junk)), "dropped": _share(junk["outcome"].eq("dropped")),
        "kept_examples": _examples(junk[junk["outcome"].ne("dropped")], examples,
                                   ["key", "kinds", "caption", "final_caption", "outcome", "reason"]),
    }
    mismatched = df[df["label"].eq("mismatched")]
    report["mismatched"] = {"n": int(len(mismatched)), "dropped": _share(mismatched["outcome"].eq("dropped"))}
    report["summary"] = {
        "noisy_caught": noisy_report["caught"], "noisy_exactly_clean": noisy_report["exactly_clean"],
        "noisy_edit_ratio_p90": noisy_report["edit_ratio"]["p90"],
        "clean_kept_unchanged": report["clean"]["kept_unchanged"], "junk_dropped": report["junk"]["dropped"],
        "mismatched_dropped": report["mismatched"]["dropped"],
    }
    return report


# where --from-captions takes the outcomes from: the pipeline's caption path, in this process, no warehouse
FROM_CAPTIONS = "caption path in process (text scorers, default policy, cleaner)"


def _pct(value: float) -> str:
    return "n/a" if value != value else f"{100 * value:.1f}%"


def format_labels_report(report: dict) -> str:
    """A plain-text table of the report, for the terminal."""
    head = f"{report['samples']} of {report.get('labelled', report['samples'])} labelled samples matched"
    if report.get("source") != FROM_CAPTIONS:  # --from-captions reads no warehouse
        head += f"; {report.get('unmatched', 0)} not in the warehouse"
    if report.get("caption_mismatches"):
        head += f"; {report['caption_mismatches']} left out: caption differs from the pair's original_caption"
    if report.get("caption_unchecked"):
        head += f"; {report['caption_unchecked']} with no caption to check"
    if report.get("noise_removed_at_ingest"):
        head += (f"; {report['noise_removed_at_ingest']} noisy samples counted as clean: ingest removed their noise "
                 "(a NUL byte, a leading BOM) before any rule saw it")
    lines = [head, "",
             f"{'label':<12}{'n':>7}{'kept unchanged':>17}{'rewritten':>12}{'dropped':>10}"]
    for label, row in report["labels"].items():
        reasons = ", ".join(f"{k} {v}" for k, v in row.get("drop_reasons", {}).items())
        lines.append(f"{label:<12}{row['n']:>7}{_pct(row['kept_unchanged']):>17}{_pct(row['rewritten']):>12}"
                     f"{_pct(row['dropped']):>10}" + (f"   drops: {reasons}" if reasons else ""))
    noisy = report["noisy"]
    er = noisy["edit_ratio"]
    lines += ["", f"noisy: caught {_pct(noisy['caught'])}, exactly clean {_pct(noisy['exactly_clean'])}, "
              f"dropped {_pct(noisy['dropped'])}; edit ratio vs clean source p50 {er['p50']:.3f}, "
              f"p90 {er['p90']:.3f}, p99 {er['p99']:.3f}"]
    if noisy["by_kind"]:
        lines += ["", f"{'noise kind':<18}{'n':>6}{'caught':>9}{'exactly clean':>15}{'alone: n':>10}{'clean':>8}"]
        for kind, row in noisy["by_kind"].items():
            lines.append(f"{kind:<18}{row['n']:>6}{_pct(row['caught']):>9}{_pct(row['exactly_clean']):>15}"
                         f"{row['alone_n']:>10}{_pct(row['alone_exactly_clean']):>8}")
    clean = report["clean"]
    false_changes = "n/a" if clean["false_changes"] is None else clean["false_changes"]
    lines += ["", f"clean: kept unchanged {_pct(clean['kept_unchanged'])}, false changes {false_changes}"]
    for ex in clean["false_change_examples"]:
        lines.append(f"  {ex['key']}: {ex['caption']!r} -> {ex['final_caption']!r} ({ex['outcome']}: {ex['reason']})")
    lines.append(f"junk: dropped {_pct(report['junk']['dropped'])}; mismatched: dropped "
                 f"{_pct(report['mismatched']['dropped'])} (only an image-text score can see a mismatch)")
    if report.get("dropped_for_image"):
        reasons = ", ".join(f"{k} {v}" for k, v in report["image_drop_reasons"].items())
        lines.append(f"left out of the caption figures above: {report['dropped_for_image']} samples dropped for their "
                     f"image, whatever their caption ({reasons})")
    if noisy["not_clean_examples"]:
        lines += ["", "noisy samples not exactly clean (first few):"]
        for ex in noisy["not_clean_examples"]:
            lines.append(f"  {ex['key']} [{','.join(ex['kinds'])}] {ex['caption']!r} -> {ex['final_caption']!r} "
                         f"(clean {ex['clean']!r}; {ex['outcome']})")
    return "\n".join(lines)


def report_name(from_captions: bool) -> str:
    """The saved report's file name: one scored in process over the truth's captions (default policy, cleaner)
    is kept apart from one of the warehouse's curation, so neither replaces the other."""
    return "labels-from-captions.json" if from_captions else "labels.json"


def labels_report(truth_path, *, warehouse_root: str | None = None, from_captions: bool = False,
                  examples: int = 10) -> dict:
    """Score the curation against a truth file: the warehouse's final_captions, or (``from_captions``)
    the pipeline's caption path run in process over the truth file's own captions."""
    truth = read_truth(truth_path)
    if from_captions:
        from curation_pipeline.evaluation.curation import curate_captions

        if truth["caption"].isna().any():
            raise ValueError(f"{truth_path}: --from-captions needs every sample's 'caption'")
        if truth["shard"].notna().all():
            # one run per shard, as the pipeline runs them, so the curated pairs carry the truth's shards
            # and the join stays on (shard, key)
            final = pd.concat([curate_captions(part["key"].tolist(), part["caption"].tolist(), shard=shard)[0]
                               for shard, part in truth.groupby("shard", sort=False)], ignore_index=True)
        else:
            final, _ = curate_captions(truth["key"].tolist(), truth["caption"].tolist())
        source = FROM_CAPTIONS
    else:
        from curation_pipeline.storage.warehouse import Warehouse

        final = Warehouse(str(warehouse_root)).read_all("final_captions")
        if final.empty:
            raise ValueError(f"no final_captions in the warehouse at {warehouse_root}; run `curate run` on the "
                             "labelled shards, or use --from-captions")
        source = f"final_captions of {warehouse_root}"
    final = final.assign(key=final["key"].astype(str))
    report = evaluate_labels(join_outcomes(truth, final), examples=examples)
    report.update({"truth": str(truth_path), "source": source})
    return report

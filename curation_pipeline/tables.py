"""What every column of every table means, and how it is stored: one place, read by the UI's column
schemas, the docs and ``Warehouse.write_table``.

Score columns are described, and typed (``ScoreColumn.kind``), where their scorer declares them
(``scoring.registry``).
"""

from __future__ import annotations

COMMON = {
    "shard": "Raw shard the pair came from (the partition key: the .tar file's stem).",
    "key": "Sample key inside the shard (the webdataset __key__).",
}

TABLES: dict[str, dict[str, str]] = {
    "pairs": {
        "caption": "Caption as read from the sample: its .txt or .caption member, else the json's caption if it is "
                   "a string; NUL bytes removed, a caption file's leading BOM and final line endings too; cut to the "
                   "reader's max_caption_chars. Empty when there is none; an empty or blank caption stays as it is.",
        "caption_source": "Where the caption came from: txt or caption (the member's extension) or json; empty when "
                          "there is none.",
        "caption_problem": "What was repaired, refused or overridden in the caption, joined by '; ': invalid utf-8 "
                           "replaced (U+FFFD), NUL bytes removed, truncated from N chars, a non-text json caption not "
                           "used, a json caption that differs from the caption file used, a caption member not read "
                           "(and why); else empty (also for a missing, empty or blank caption).",
        "caption_sha256": "SHA-256 of the caption text (exact-duplicate detection).",
        "caption_chars": "Caption length in characters.",
        "image_ext": "Extension of the image member (jpg, png, webp, ...).",
        "image_bytes": "Size of the encoded image in bytes.",
        "image_sha256": "SHA-256 of the encoded image bytes.",
        "image_format": "Format PIL detected (JPEG, PNG, ...).",
        "image_mode": "PIL colour mode (RGB, L, RGBA, ...).",
        "width": "Decoded image width in pixels.",
        "height": "Decoded image height in pixels.",
        "n_frames": "Frames in the image (animated GIF/WebP have more than one).",
        "decode_status": "ok, missing, empty, corrupt or too_large, from the image header (a full decode with "
                         "warehouse.inventory_decode: full); quality_scores' decode_status is the full decode's.",
        "decode_error": "Why decoding failed (no memory addresses, so runs are comparable), else empty.",
        "meta_json": "The sample's own json sidecar, verbatim (uid, url, original size, ...).",
        "meta_error": "Why the json sidecar could not be read, naming the problem, else empty.",
        "original_width": "Image width before the downloader resized it (json original_width), if recorded.",
        "original_height": "Image height before the downloader resized it (json original_height), if recorded.",
    },
    "skips": {
        "reason": "Why a tar member is not part of any pair (not a sample, unsafe name, too large, ...).",
        "member": "Name of the tar member.",
        "detail": "More about the reason, e.g. the size or the member type.",
    },
    "quality_scores": {
        "caption": "The caption that was scored.",
        "decode_status": "ok, missing, empty, corrupt or too_large from the full decode scoring made (each image "
                         "is decoded once, here): what the decisions use.",
        "width": "Copied from pairs: decoded image width.",
        "height": "Copied from pairs: decoded image height.",
        "image_sha256": "Copied from pairs: SHA-256 of the image bytes.",
        "caption_sha256": "Copied from pairs: SHA-256 of the caption.",
    },
    "caption_decisions": {
        "action": "keep (as is), rewrite, or drop.",
        "reason": "Why: the signal and value that decided (e.g. low_text_quality=62.0, duplicate:near_image).",
        "quality_column": "The score column that decided keep / rewrite / drop.",
        "quality_before": "That score for the original caption.",
        "nsfw_review": "True when the NSFW probability is in the review band (reported, not dropped).",
        "dup_group": "Duplicate group id, named for its kept pair (key, or shard/key in another shard), else empty.",
        "dup_kind": "How a dropped copy is joined to the pair kept (the weakest link on the strongest path between "
                    "them; for the pair kept, its strongest link): exact_pair, exact_image, near_image or "
                    "near_caption.",
        "dup_of": "The pair kept for its duplicate group: its key in the same shard, shard/key in another; empty "
                  "for the kept pair and for pairs without duplicates.",
        "in_keep_fraction": "Inside the global keep_fraction cut (when keep_fraction is on); outside it a pair is published only through an accepted rewrite.",
        "passes_keep_expression": "Meets keep_expression (when it is set); a pair failing it is published only through an accepted rewrite.",
        "rewrite_needs": "The least quality_column score a rewrite of the pair must reach to be published: drop_threshold, or more outside the filters (inside the keep_fraction cut at its tie-break place; meeting keep_expression with the pair's other scores as stored); empty where no score would, and the pair is dropped unrewritten.",
    },
    "rewritten_captions": {
        "attempt": "Attempt number for this pair (1 for the first).",
        "rewriter": "Which rewriter proposed the candidate: cleaner, vlm or aitqe.",
        "rewriter_version": "The rewriter's version and model (a changed model shows here).",
        "prompt_hash": "Hash of the prompt this pair was given (a VLM asks a caption-less pair another prompt; "
                       "empty for the rule-based cleaner).",
        "original_caption": "The caption before rewriting.",
        "candidate_caption": "What the rewriter proposed (empty when it proposed nothing usable).",
        "quality_column": "The score used to judge the rewrite (the policy's quality column).",
        "quality_before": "That score for the original caption.",
        "quality_after": "That score for the candidate.",
        "edit_ratio": "1 - 2*M/T over words, M = words matched in order, T = words in both captions: 0 = the "
                      "same words, 1.0 = none in common (case and punctuation at a word's edge are no edit: "
                      "rewriting.verify's MINIMALITY_COLUMNS); empty without an original caption.",
        "length_ratio": "Candidate words / original words (empty without an original caption).",
        "semantic_similarity": "MiniLM cosine similarity between original and candidate (1 = same meaning; empty "
                               "without an original caption).",
        "accepted": "Whether the candidate became the final caption (it improved enough, reached drop_threshold "
                    "and passed the minimality and well-formedness checks).",
        "reason": "Why it was accepted or rejected, with the numbers.",
        "rewriter_output": "The model's raw output, untouched (for audits).",
        "rewriter_scores": "Scores the rewriter itself emitted, as json (keys sorted; a missing score is null): "
                           "AITQE's rating of the original caption it was given, not of its candidate (quality_after "
                           "judges that).",
        "run_id": "Dagster run that made the attempt.",
        "created_at": "When the attempt was made (UTC, ISO 8601).",
    },
    "final_captions": {
        "outcome": "kept (as is), rewritten, or dropped.",
        "reason": "Why: the decision's reason, or the rewrite's verdict.",
        "original_caption": "The caption as it came in.",
        "final_caption": "The caption published in the curated shard (empty when dropped).",
        "rewritten": "True when the final caption is a rewrite.",
        "rewriter": "Who wrote the final caption, when rewritten.",
        "rewriter_version": "Its version and model.",
        "quality_column": "The score column that decided.",
        "quality_before": "That score for the original caption.",
        "quality_final": "That score for the final caption.",
        "action": "The caption_decisions action (keep, rewrite, drop) that led here.",
    },
}

# Stored types (Arrow aliases, ``pyarrow.type_for_alias``) of the columns pandas types differently from shard
# to shard: an integer column with one missing value becomes floats, and a column with no value at all has no
# type (Arrow null). ``Warehouse.write_table`` casts to these (a value that would change, 1.5 to int, is an
# error), and stores any other column with no value as text, so every shard of a table has one schema.
INT, FLOAT, BOOL, TEXT = "int64", "double", "bool", "string"
VECTOR = "list<float>"  # a json score column: the one there is, the caption embedding, is a float32 list
KIND_TYPES = {"float": FLOAT, "int": INT, "bool": BOOL, "str": TEXT, "json": VECTOR}  # ScoreColumn.kind

TYPES: dict[str, dict[str, str]] = {
    "pairs": dict.fromkeys(("caption_chars", "image_bytes", "width", "height", "n_frames", "original_width",
                            "original_height"), INT),
    "quality_scores": {"width": INT, "height": INT},
    "caption_decisions": {"quality_before": FLOAT, "nsfw_review": BOOL, "in_keep_fraction": BOOL,
                          "passes_keep_expression": BOOL, "rewrite_needs": FLOAT},
    "rewritten_captions": {"attempt": INT, "accepted": BOOL, **dict.fromkeys(
        ("quality_before", "quality_after", "edit_ratio", "length_ratio", "semantic_similarity"), FLOAT)},
    "final_captions": {"rewritten": BOOL, "quality_before": FLOAT, "quality_final": FLOAT},
}


def stored_type(table: str, column: str) -> str | None:
    """The Arrow type alias ``column`` of ``table`` is stored as (``VECTOR``: a float32 list), or None when nothing
    declares it (then it is stored as Arrow makes it, and as text when it has no value)."""
    if column in TYPES.get(table, {}):
        return TYPES[table][column]
    if table == "quality_scores":
        from curation_pipeline.scoring.registry import score_columns

        declared = score_columns().get(column)
        if declared is not None:
            return KIND_TYPES[declared.kind]
        if column.endswith("_error"):  # a scorer that declares no error column still writes <name>_error
            return TEXT
    return None


def describe(table: str, column: str) -> str | None:
    """The description of a column, or None when nobody documented it."""
    if column in COMMON:
        return COMMON[column]
    if column in TABLES.get(table, {}):
        return TABLES[table][column]
    if table == "quality_scores":  # score columns: as the scorer that writes them declares
        from curation_pipeline.scoring.registry import score_columns

        declared = score_columns().get(column)
        if declared is not None:
            return declared.description
        if column.endswith("_error"):
            return "Why this scorer has no value for the pair (empty when it scored)."
    return None

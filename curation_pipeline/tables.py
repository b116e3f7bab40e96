"""What every column of every table means: one place, read by the UI's column schemas and the docs.

Score columns are described by the scorer that writes them (matched by prefix), so a new
scorer documents its columns here once, with the range a reader should expect.
"""

from __future__ import annotations

COMMON = {
    "shard": "Raw shard the pair came from (the partition key: the .tar file's stem).",
    "key": "Sample key inside the shard (the webdataset __key__).",
}

TABLES: dict[str, dict[str, str]] = {
    "pairs": {
        "caption": "Caption as read from the sample (.txt, else the json's caption field), NUL bytes removed.",
        "caption_source": "Where the caption came from: txt or json.",
        "caption_problem": "Why the caption is missing or unusable (empty, undecodable), else empty.",
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
        "decode_status": "ok, missing, empty, corrupt or too_large: whether the image could be used.",
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
        "decode_status": "Copied from pairs: whether the image could be used.",
        "width": "Copied from pairs: decoded image width.",
        "height": "Copied from pairs: decoded image height.",
        "image_sha256": "Copied from pairs: SHA-256 of the image bytes.",
        "caption_sha256": "Copied from pairs: SHA-256 of the caption.",
    },
    "caption_decisions": {
        "action": "keep (as is), rewrite, or drop.",
        "reason": "Why: the signal and value that decided (e.g. low_text_quality=62.0, duplicate:image).",
        "quality_column": "The score column that decided keep / rewrite / drop.",
        "quality_before": "That score for the original caption.",
        "nsfw_review": "True when the NSFW probability is in the review band (reported, not dropped).",
        "dup_group": "Duplicate group id (same image or near-identical image and caption), else empty.",
        "dup_kind": "What made the group: image, phash, caption, ...",
        "dup_of": "Key of the pair kept for this duplicate group.",
        "in_keep_fraction": "Inside the global keep_fraction cut (when keep_fraction is on).",
    },
    "rewritten_captions": {
        "attempt": "Attempt number for this pair (1 for the first).",
        "rewriter": "Which rewriter proposed the candidate: cleaner, vlm or aitqe.",
        "rewriter_version": "The rewriter's version and model (a changed model shows here).",
        "prompt_hash": "Hash of the prompt the model was given (empty for the rule-based cleaner).",
        "original_caption": "The caption before rewriting.",
        "candidate_caption": "What the rewriter proposed (empty when it proposed nothing usable).",
        "score_column": "The score used to judge the rewrite (the policy's quality column).",
        "score_before": "That score for the original caption.",
        "score_after": "That score for the candidate.",
        "edit_ratio": "Word-level edit distance between original and candidate divided by the longer one's "
                      "word count: 0 = unchanged, 1.0 = every word position differs (a case change counts).",
        "length_ratio": "Candidate words / original words.",
        "semantic_similarity": "MiniLM cosine similarity between original and candidate (1 = same meaning).",
        "accepted": "Whether the candidate became the final caption.",
        "reason": "Why it was accepted or rejected, with the numbers.",
        "rewriter_output": "The model's raw output, untouched (for audits).",
        "rewriter_scores": "Scores the rewriter itself emitted (AITQE's ratings), as json.",
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
        "decision": "The caption_decisions action that led here.",
    },
}

# Score columns by the scorer that writes them (longest prefix wins).
SCORE_PREFIXES = {
    "datacomp_": "DataComp basic filtering (English by fastText, > 2 words, > 5 chars, shorter side >= 200 px, "
                 "aspect <= 3).",
    "text_quality": "Caption text quality, 0-100 (rule-based: noise, length, casing, ...); _rules lists what fired.",
    "nsfw_": "Yahoo Open NSFW probability, 0-1 (< 0.2 safe, > 0.8 unsafe).",
    "ocr_": "Text in the image (RapidOCR): box count and share of the image covered.",
    "iq_": "Image quality signals: sharpness (Laplacian variance), brightness, dark/bright share, entropy (bits).",
    "dup_": "Duplicate-detection fingerprints: image SHA, perceptual hash, normalised caption, caption embedding.",
    "clip_": "CLIPScore: clip_score = 2.5 * max(cos, 0) in [0, 2.5]; clip_cosine raw; clip_sigmoid SigLIP's "
             "probability.",
    "mlm_": "MLM-Filter metric, 0-100: the greedy integer its reference decodes (_expected: the expected "
            "score from the same forward pass).",
    "aitqe_": "AITQE: overall rating 1-10 and its recaption.",
}


def describe(table: str, column: str) -> str | None:
    """The description of a column, or None when nobody documented it."""
    if column in COMMON:
        return COMMON[column]
    if column in TABLES.get(table, {}):
        return TABLES[table][column]
    if table == "quality_scores":
        if column.endswith("_error"):
            return "Why this scorer has no value for the pair (empty when it scored)."
        prefix = max((p for p in SCORE_PREFIXES if column.startswith(p)), key=len, default=None)
        return SCORE_PREFIXES[prefix] if prefix else None
    return None

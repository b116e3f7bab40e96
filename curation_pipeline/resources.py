"""Dagster resources: where data lives, which models score and rewrite, and the thresholds.

Every threshold and switch is configuration (launchpad or environment), not code; models are built
once per process and cached, so a run's steps never reload them per batch.
"""


import contextlib
import dataclasses
import os
import re
import types
from functools import lru_cache
from typing import Annotated, Literal, Optional, Union, get_args, get_origin

import dagster as dg
from dagster_ray import RayResource
from pydantic import ConfigDict, Field, PrivateAttr, TypeAdapter, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo

from curation_pipeline.compute.options import RayOptions, check_gpus
from curation_pipeline.decisions.policy import DecisionPolicy, StillWeak
from curation_pipeline.rewriting.aitqe import AITQE_MAX_NEW_TOKENS
from curation_pipeline.rewriting.base import Rewriter
from curation_pipeline.rewriting.verify import MIN_IMPROVEMENT_SHARE, AcceptanceRules
from curation_pipeline.rewriting.vlm import DEFAULT_BATCH_SIZE, DEFAULT_NUM_BEAMS, VLM_MAX_NEW_TOKENS
from curation_pipeline.scoring.base import Scorer
from curation_pipeline.scoring.prefetch import DEFAULT_DEPTH
from curation_pipeline.scoring.profiles import ScoringProfile, build_scorers
from curation_pipeline.settings_file import RESOURCE_KEYS, SETTINGS_FILE_ENV, read_settings_file
from curation_pipeline.shards.keys import InvalidShardName, shard_key, validate_key
from curation_pipeline.storage.warehouse import object_storage_errors  # noqa: F401 (re-exported)
from curation_pipeline.storage.warehouse import WAREHOUSE_DEFAULTS, Warehouse, refuse_credentials
from curation_pipeline.validation.drift import DriftThresholds


# compressed tars (lower case): shards must be plain .tar (their key is the stem of ``<key>.tar``), so these
# are reported as not read, never passed over as if they were a README
MODEL_REWRITERS = ("vlm", "aitqe")  # the rewriter kinds that load rewriter.model
COMPRESSED_TARS = (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar.zst", ".tzst")


def _is_number(annotation) -> bool:
    """``int`` or ``float``, optional or not."""
    union = get_origin(annotation) in (Union, types.UnionType)
    return any(a in (int, float) for a in (get_args(annotation) if union else (annotation,)))


def _numbers_only():
    """A validator for every numeric setting of a class: pydantic reads true / false as 1 / 0, so a YAML or
    launchpad boolean given for a number (``keep_fraction: true``) would run as one."""
    def refuse_booleans(cls, value, info):
        if isinstance(value, bool) and _is_number(cls.model_fields[info.field_name].annotation):
            raise ValueError(f"a number is needed, not {str(value).lower()}")
        return value
    return field_validator("*", mode="before")(refuse_booleans)


class WarehouseResource(dg.ConfigurableResource):
    """Raw shards in, Parquet tables, curated shards and the DuckDB report out (fsspec URLs work)."""

    model_config = ConfigDict(hide_input_in_errors=True)  # a URL refused for its credentials is not echoed

    raw_root: str = Field(default="", validate_default=True, description="Folder or URL holding raw webdataset .tar shards; empty = env CURATION_RAW, else data/raw.")
    root: str = Field(default="", validate_default=True, description="Warehouse root for Parquet tables, curated shards, quality.duckdb; empty = env CURATION_WAREHOUSE, else data/warehouse.")
    batch_size: int = Field(default=32, gt=0, description="Pairs decoded and scored together; bounds memory.")
    inventory_decode: Literal["header", "full"] = Field(default="header", description="pairs reads image headers only (format, size, mode; quality_scores decodes each image once) or verifies every image (decoded through, JPEGs at 1/8 scale: a full decode's statuses), so pairs' decode_status also flags truncated images.")

    _numbers = _numbers_only()

    @field_validator("raw_root", "root")
    @classmethod
    def _empty_is_default(cls, value: str, info) -> str:
        """Dagster replaces the whole config of a resource given in run config, so a field left out there
        (only batch_size set, say) gets its default here, read in the run's process as an EnvVar would be."""
        env, default = WAREHOUSE_DEFAULTS[info.field_name]
        return refuse_credentials(value or os.environ.get(env) or default)

    def warehouse(self) -> Warehouse:
        return Warehouse(self.root)

    def raw_url(self, shard: str) -> str:
        return f"{self.raw_root.rstrip('/')}/{validate_key(shard)}.tar"

    def list_raw(self) -> tuple[dict[str, str], list[str]]:
        """Shard key -> URL for every valid ``.tar`` directly in ``raw_root``, and a message for each file
        passed over: a name that is not a valid key, a ``.TAR`` (any other case), a ``.tar`` one folder down,
        a compressed tar (``.tar.gz``, ``.tgz``, ...)."""
        with object_storage_errors(self.raw_root):
            return self._list_raw()[:2]

    def list_raw_stats(self) -> tuple[dict[str, str], list[str], dict]:
        """``list_raw`` and, on an object store, each shard's ``RawStat`` from the same listing (one request per
        thousand files, not one per file); on a local disk, none (a stat there costs nothing)."""
        with object_storage_errors(self.raw_root):
            return self._list_raw()

    def _list_raw(self) -> tuple[dict[str, str], list[str], dict]:
        import fsspec

        from curation_pipeline.shards.fingerprint import is_local_fs, stat_of_listing

        fs, root = fsspec.core.url_to_fs(self.raw_root)
        try:  # not fs.exists / isfile: they swallow any exception, a Ctrl-C during the stat read as "does not exist"
            kind = fs.info(root).get("type")
        except FileNotFoundError:
            raise FileNotFoundError(f"raw shard location {self.raw_root!r} does not exist") from None
        if kind == "file":
            raise NotADirectoryError(f"raw shard location {self.raw_root!r} is a file: give the folder that holds "
                                     "the .tar shards")
        found, rejected, stats = {}, [], {}
        listed = not is_local_fs(fs)
        # listed, not globbed: a [, * or ? in the location's own path is a character. On a disk one level of
        # subfolders too, only to say that shards there are not registered; on an object store one listing of
        # the folder itself (listing a subfolder would be a request each, on every sensor tick: its shards are not
        # told), as a subfolder without shards is passed over on a disk (a symlinked shard is listed as "other": it
        # counts when it leads to a file)
        base = root.rstrip("/")
        if listed:
            entries = {e["name"].rstrip("/"): e for e in fs.ls(base, detail=True)}
            entries.pop(base, None)  # a folder marker object
        else:
            entries = fs.find(base, maxdepth=2, withdirs=True, detail=True)
        files = []
        for name, e in entries.items():
            if e.get("type") == "file" or (e.get("type") == "other" and fs.isfile(name)):
                files.append(name)
            elif name.lower().endswith(".tar") and name.rstrip("/") != base:  # named as a shard, but no file
                what = ("a folder" if e.get("type") == "directory" or fs.isdir(name) else "a link to nothing (an "
                        "unmounted disk?)" if e.get("islink") else "not a regular file")
                rejected.append(f"{name[len(base):].lstrip('/')!r} is {what}: not read")
        for path in sorted(files):
            rel = path[len(base):].lstrip("/") if path.startswith(base) else path.rsplit("/", 1)[-1]
            name = rel.rsplit("/", 1)[-1]
            compressed = next((s for s in COMPRESSED_TARS if name.lower().endswith(s)), None)
            if compressed:
                rejected.append(f"{rel!r} is a compressed tar ({name[-len(compressed):]}): not read, raw shards "
                                f"must be plain .tar; decompress it (e.g. to {name[:-len(compressed)]}.tar)")
                continue
            if not name.lower().endswith(".tar"):
                continue  # not a shard (a README, an index): not reported
            if "/" in rel:
                rejected.append(f"{rel!r} is in a subfolder: raw_root must be the folder holding the shards "
                                f"({self.raw_root}); move it up, or point raw_root at its folder")
            elif not name.endswith(".tar"):
                rejected.append(f"shard file name {name!r} ends in {name[-4:]!r}: rename to .tar "
                                f"(e.g. {name[:-4]}.tar)")
            else:
                try:
                    key = shard_key(path)
                except InvalidShardName as exc:
                    rejected.append(str(exc))
                    continue
                found[key] = fs.unstrip_protocol(path)
                if listed:
                    stats[key] = stat_of_listing(entries[path])
        return found, rejected, stats

    def raw_exists(self, shard: str) -> bool:
        from curation_pipeline.shards.fingerprint import raw_stat

        try:
            raw_stat(self.raw_url(shard))
        except FileNotFoundError:
            return False
        except IsADirectoryError:  # there, but not a file: reading it fails and says so
            return True
        return True


@lru_cache(maxsize=4)
def _scorers(profile: ScoringProfile, threads: int) -> tuple[Scorer, ...]:
    """``threads``: the budget the ONNX Runtime sessions (NSFW, OCR) were sized to when built, so another one
    builds them again (``cpu_threads``, read from the environment ``scorers`` sets)."""
    return tuple(build_scorers(profile))


class _Group(dg.Config):
    """A nested group of settings; a misspelt key is an error, never silently ignored."""

    model_config = ConfigDict(extra="forbid")
    _numbers = _numbers_only()


_S = ScoringProfile()  # the domain class holds the scoring defaults

Device = Literal["", "cuda", "mps", "cpu"]  # "" picks automatically
MlmMetric = Literal["itm", "odf", "ctq", "su"]  # = scoring.mlm.prompts.METRICS (a test holds them equal)


class ClipConfig(_Group):
    """CLIPScore (or SigLIP) in the clip and full profiles."""

    model: str = Field(default="", description="CLIP/SigLIP HuggingFace id or local path (clip, full).")
    prefix: bool = Field(default=_S.clip_prefix, description='Prefix each caption with "A photo depicts" before CLIPScore (as the reference does); false scores the caption alone.')
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(default=_S.clip_dtype, description="Precision: auto (fp32 on CPU, fp16 on GPU, as the reference runs).")


class MlmConfig(_Group):
    """MLM-Filter's four metrics from a released checkpoint or a chat VLM (mlm and full profiles)."""

    model: str = Field(default="", description="Released MLM-Filter checkpoint (e.g. weizhiwang/mlm-filter-qwen2.5-1.5b-gpt4o) or chat VLM, id or local path.")
    vision_tower: str = Field(default="", description="Where the checkpoint's vision tower loads from (id or local path); empty = the id its config names.")
    prompt_set: Literal["", "llava_v1", "llama_3", "qwen_instruct", "zero_shot"] = Field(default="", description="Empty = the checkpoint's own (zero_shot for chat VLMs).")
    pad_to_square: Optional[bool] = Field(default=None, description="Pad images to a square (LLaVA's expand2square) first; empty = as MLM_Filter's scoring scripts (no padding).")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(default=_S.mlm_dtype, description="Precision: auto = a released MLM-Filter checkpoint as its reference runs it (float16 on CUDA), a chat VLM bfloat16 where supported, float32 on CPU.")
    metrics: list[str] = Field(default=list(_S.mlm_metrics), description="Which of the four metrics to score.")
    mode: Literal["logits", "generate"] = Field(default=_S.mlm_mode, description="logits (one forward pass) or generate (parity with the reference's decoding).")
    min_mass: float = Field(default=_S.mlm_min_mass, ge=0, le=1, description="Below this probability on score tokens a metric is NaN.")

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, value: list[str]) -> list[str]:  # Dagster config has no list of Literal
        unknown = sorted(set(value) - set(get_args(MlmMetric)))
        if unknown or not value:
            raise ValueError(f"metrics must be a non-empty subset of {', '.join(get_args(MlmMetric))}, "
                             f"not {', '.join(unknown) or 'empty'}")
        return value


class ScoringResource(dg.ConfigurableResource):
    """Which scorers run. ``offline`` needs no model hub; model profiles name ids or local paths."""

    profile: Literal["offline", "text", "clip", "mlm", "full"] = Field(default=_S.name, description="offline (bundled signals) | text (caption scorers only) | clip | mlm | full (clip + mlm).")
    clip: ClipConfig = Field(default_factory=ClipConfig, description="CLIPScore model and switches.")
    mlm: MlmConfig = Field(default_factory=MlmConfig, description="MLM-Filter model and switches.")
    aitqe_model: str = Field(default="", description="AITQE checkpoint (HymanH/AITQE) id or path: adds aitqe_overall (1-10), aitqe_recaption and the reply they were read from (aitqe_reply) to the scores (not in the text profile).")
    aitqe_vision_tower: str = Field(default="", description="Where the AITQE checkpoint's vision tower loads from (id or local path); empty = the id its config names.")
    device: Device = Field(default="", description="cuda | mps | cpu; empty picks automatically.")
    batch_size: int = Field(default=_S.batch_size, gt=0,
                            description="Batch size of every model scorer (CLIP, MLM-Filter, AITQE; not NSFW's).")
    trust_remote_code: list[str] = Field(default=[], description="Model ids allowed to run their own code.")
    threads: int = Field(default=0, ge=0, description="Threads for this run's pools (torch, ONNX Runtime, decode); 0 = the cores / dagster.yaml's run_queue.max_concurrent_runs (env CURATION_THREADS).")
    prefetch: int = Field(default=DEFAULT_DEPTH, ge=0, description="Batches read, decoded and preprocessed ahead of the models in a background thread; 0 = serially (always serial when no scorer reads pixels, as in the text profile).")

    _numbers = _numbers_only()

    def as_profile(self) -> ScoringProfile:
        clip, mlm = self.clip, self.mlm
        return ScoringProfile(
            name=self.profile, clip_model=clip.model or None, clip_prefix=clip.prefix, clip_dtype=clip.dtype,
            mlm_model=mlm.model or None, mlm_metrics=tuple(mlm.metrics), mlm_mode=mlm.mode, mlm_min_mass=mlm.min_mass,
            mlm_prompt_set=mlm.prompt_set or None, mlm_vision_tower=mlm.vision_tower or None,
            mlm_pad_to_square=mlm.pad_to_square, mlm_dtype=mlm.dtype, aitqe_model=self.aitqe_model or None,
            aitqe_vision_tower=self.aitqe_vision_tower or None, device=self.device or None,
            batch_size=self.batch_size, trust_remote_code=tuple(self.trust_remote_code))

    def output_settings(self) -> dict:
        """The settings, besides their code, that change what this profile's scorers write: each model scorer's
        model and switches, by scorer name, for the scorers the profile runs (none in the text profile, nor in
        the offline one without AITQE). Not device, batch size, threads or prefetch, which change only how fast.
        quality_scores' code version names their digest: scores made with another model read stale."""
        from curation_pipeline.scoring.registry import code_versions

        if type(self) in _FROM_FILE:  # the location's settings file's class, whose defaults are the file's values
            return as_declared(self).output_settings()
        # only what differs from the defaults: a setting added later (at its default) changes no shard's version;
        # a default that changes what a scorer writes comes with a bump of its version, as any such change does
        aitqe = {"model": self.aitqe_model, "vision_tower": self.aitqe_vision_tower} if self.aitqe_vision_tower \
            else self.aitqe_model  # the model alone unless a tower is given: the digest of earlier runs stays
        settings = {"clip": self.clip.model_dump(exclude_defaults=True),
                    "mlm": self.mlm.model_dump(exclude_defaults=True), "aitqe": aitqe}
        runs = code_versions(self.as_profile())
        return {name: value for name, value in settings.items() if name in runs}

    def scorers(self) -> tuple[Scorer, ...]:
        """Built once per process for a given configuration."""
        from curation_pipeline.scoring.signals import cpu_threads

        if self.threads > 0:  # read by scoring.signals.cpu_threads before the pools are sized
            os.environ["CURATION_THREADS"] = str(self.threads)
        return _scorers(self.as_profile(), cpu_threads())


_MAX_NEW_TOKENS = {"vlm": VLM_MAX_NEW_TOKENS, "aitqe": AITQE_MAX_NEW_TOKENS}  # what rewriter.max_new_tokens 0 means


@lru_cache(maxsize=4)
def _rewriter(kind: str, model: str, prompt: str, max_new_tokens: int, num_beams: int, batch_size: int,
              device: str, trust_remote_code: bool, vision_tower: str = "", load_model: bool = True) -> Rewriter:
    generation = {"max_new_tokens": max_new_tokens} if max_new_tokens > 0 else {}
    _check_rewriter(kind, model, vision_tower)
    if kind == "cleaner":
        from curation_pipeline.rewriting.cleaner import CaptionCleaner

        return CaptionCleaner()
    if kind == "vlm":
        from curation_pipeline.rewriting.vlm import VlmRewriter

        return VlmRewriter(model, prompt=prompt or None, num_beams=num_beams, batch_size=batch_size,
                           device=device or None, trust_remote_code=trust_remote_code, **generation)
    if kind == "aitqe":
        from curation_pipeline.rewriting.aitqe import AitqeRewriter

        return AitqeRewriter(model, instruction=prompt or None, batch_size=batch_size, device=device or None,
                             trust_remote_code=trust_remote_code, vision_tower=vision_tower or None,
                             load_model=load_model, **generation)
    raise ValueError(f"unknown rewriter kind {kind!r}; choose cleaner, vlm or aitqe")


def _check_rewriter(kind: str, model: str, vision_tower: str) -> None:
    """What is wrong with a rewriter's settings that needs no model loaded to tell: ValueError."""
    if kind in MODEL_REWRITERS and not model.strip():  # else the loader's "Model '' could not be loaded"
        raise ValueError(f"rewriter {kind!r} needs rewriter.model (--rewriter-model): a HuggingFace id or a local path")
    if vision_tower and kind != "aitqe":
        raise ValueError(f"rewriter.vision_tower is set but rewriter {kind!r} reads none: only the aitqe rewriter's "
                         "released checkpoint loads its vision tower separately")


class RewriterResource(dg.ConfigurableResource):
    """Who rewrites weak captions: the offline rule-based cleaner, a chat VLM, or AITQE."""

    kind: Literal["cleaner", "vlm", "aitqe"] = Field(default="cleaner", description="cleaner (offline rules) | vlm (a chat VLM) | aitqe (AITQE's recaption).")
    model: str = Field(default="", description="HuggingFace id or local path (vlm, aitqe).")
    prompt: str = Field(default="", description="Rewrite prompt with a {caption} placeholder (vlm) or AITQE instruction; empty = built-in.")
    max_new_tokens: int = Field(default=0, ge=0, description=f"Generation budget per caption; 0 = the rewriter's default (vlm {VLM_MAX_NEW_TOKENS}, aitqe {AITQE_MAX_NEW_TOKENS} as its reference).")
    num_beams: int = Field(default=DEFAULT_NUM_BEAMS, ge=1, description="1 = greedy; >1 = beam search.")
    batch_size: int = Field(default=DEFAULT_BATCH_SIZE, ge=1, description="Captions rewritten together (every kind: a batch is what each step reads, rewrites and records at once).")
    device: Device = Field(default="", description="cuda | mps | cpu; empty picks automatically.")
    trust_remote_code: bool = Field(default=False, description="Allow a chat VLM rewriter's own code (never needed for the released AITQE checkpoint).")
    vision_tower: str = Field(default="", description="Where the released AITQE checkpoint's vision tower loads from (id or local path); empty = the id its config names (aitqe only).")

    _numbers = _numbers_only()

    def output_settings(self) -> dict:
        """The settings, besides its code, that change what a model rewriter writes (none for the cleaner, which
        reads none): not batch size, device or trust_remote_code. rewritten_captions' code version names their
        digest: rewrites made with another model or prompt read stale."""
        if type(self) in _FROM_FILE:  # the location's settings file's class, whose defaults are the file's values
            return as_declared(self).output_settings()
        unread = {"kind", "batch_size", "device", "trust_remote_code"}
        if self.kind == "aitqe":  # AITQE generates greedily: num_beams never reaches it
            unread.add("num_beams")
        if self.kind == "cleaner":
            return {}
        settings = self.model_dump(exclude=unread, exclude_defaults=True)
        if settings.get("max_new_tokens") == _MAX_NEW_TOKENS[self.kind]:  # the default, written out: the same rewrites
            del settings["max_new_tokens"]
        return settings

    def rewriter(self, load_model: bool = True) -> Rewriter:
        """``load_model=False``: an ``aitqe`` rewriter without its model (``AitqeRewriter``), for targets all
        answered from stored replies."""
        if not load_model and self.kind != "aitqe":
            raise ValueError(f"only an aitqe rewriter is built without its model, not {self.kind!r}")
        return _rewriter(self.kind, self.model, self.prompt, self.max_new_tokens, self.num_beams, self.batch_size,
                         self.device, self.trust_remote_code, self.vision_tower, load_model)


_P, _A, _D = DecisionPolicy(), AcceptanceRules(), DriftThresholds()  # the domain classes hold every default


def _check_order(group: str, low_name: str, low, high_name: str, high, consequence: str) -> None:
    if low is not None and high is not None and low > high:
        raise ValueError(f"{group}.{low_name} ({low:g}) is above {group}.{high_name} ({high:g}): {consequence}")


class AcceptanceConfig(_Group):
    """When a rewritten caption replaces the original (AITQE's minimal rewrite); empty = bound off."""

    min_improvement: Optional[float] = Field(default=None, ge=0, description=f"A rewrite must raise the score by this many points on quality_column's scale, within 0 and its declared range's width (empty = {MIN_IMPROVEMENT_SHARE:.0%} of the width: 1 on 0-100 scores, 0.025 on clip_score).")
    max_edit_ratio: Optional[float] = Field(default=_A.max_edit_ratio, ge=0, le=1, description="Max word-level edit ratio of a rewrite, 0 (the same words) to 1 (none in common) (empty = off).")
    min_length_ratio: Optional[float] = Field(default=_A.min_length_ratio, ge=0, description="Min rewritten/original words (empty = off).")
    max_length_ratio: Optional[float] = Field(default=_A.max_length_ratio, gt=0, description="Max rewritten/original words (empty = off).")
    min_similarity: Optional[float] = Field(default=_A.min_similarity, ge=-1, le=1, description="Min MiniLM cosine to the original, -1 to 1 (empty = off).")

    @model_validator(mode="after")
    def _ordered(self) -> "AcceptanceConfig":
        _check_order("policy.acceptance", "min_length_ratio", self.min_length_ratio, "max_length_ratio",
                     self.max_length_ratio, "every rewrite would be rejected")
        return self


class NsfwConfig(_Group):
    """Bands on the bundled NSFW classifier's probability."""

    drop: Optional[float] = Field(default=_P.nsfw_drop, description="Drop at or above this NSFW probability (empty = off).")
    review: float = Field(default=_P.nsfw_review, description="Report (not drop) from this NSFW probability.")


class ImageQualityConfig(_Group):
    """Bounds on the image signals that make an image unusable; empty = bound off."""

    require_datacomp_rules: bool = Field(default=_P.require_image_rules, description="Drop images failing DataComp's size/aspect rules.")
    max_text_area: Optional[float] = Field(default=_P.max_text_area, description="Drop images with more OCR text area than this share (empty = off).")
    min_sharpness: Optional[float] = Field(default=_P.min_sharpness, ge=0, description="Drop images blurrier than this Laplacian variance (empty = off).")
    min_brightness: Optional[float] = Field(default=_P.min_brightness, description="Drop nearly black images (empty = off).")
    max_brightness: Optional[float] = Field(default=_P.max_brightness, description="Drop nearly white images (empty = off).")
    min_entropy: Optional[float] = Field(default=_P.min_entropy, description="Drop images with less grey-histogram entropy (bits; empty = off: a two-tone logo has under 1 bit at thumbnail size).")
    min_contrast: Optional[float] = Field(default=_P.min_contrast, description="Drop flat images (blank, placeholder): the colour channels' largest standard deviation under this, 0-0.5 (empty = off).")

    @model_validator(mode="after")
    def _ordered(self) -> "ImageQualityConfig":
        _check_order("policy.image", "min_brightness", self.min_brightness, "max_brightness", self.max_brightness,
                     "every image would be dropped")
        return self


class DriftConfig(_Group):
    """Caption-length drift limits: of the blocking check on final captions (against their originals) and of
    the warning on pairs (against the pinned caption_length_reference)."""

    max_kl: float = Field(default=_D.max_kl, ge=0, description="Max KL divergence of final vs original lengths.")
    mean_ratio_min: float = Field(default=_D.mean_ratio_min, ge=0, description="Min final/original mean length.")
    mean_ratio_max: float = Field(default=_D.mean_ratio_max, gt=0, description="Max final/original mean length.")
    quantile_tolerance: float = Field(default=_D.quantile_tolerance, ge=0, description="Relative band around each quantile.")
    quantile_floor: float = Field(default=_D.quantile_abs_floor, ge=0, description="The band is never narrower than this many words (characters with length_unit chars).")
    min_rows: int = Field(default=_D.min_rows, ge=0, description="Fewer kept pairs: only their mean length is held.")
    length_unit: Literal["words", "chars"] = Field(default=_D.length_unit, description="Length in words (whitespace tokens; a character of a script without spaces each) or characters.")

    @model_validator(mode="after")
    def _ordered(self) -> "DriftConfig":
        _check_order("policy.drift", "mean_ratio_min", self.mean_ratio_min, "mean_ratio_max", self.mean_ratio_max,
                     "every shard would fail the drift check")
        return self


class PolicyResource(dg.ConfigurableResource):
    """Decision thresholds, with nested acceptance, NSFW, image-quality and drift settings; every default
    comes from the domain classes, and an empty value means off."""

    quality_column: str = Field(default=_P.quality_column, description="Score that decides keep / rewrite / drop.")
    keep_threshold: float = Field(default=_P.keep_threshold, description="Keep the caption as is at or above this score (95: any fired text rule sends it to the rewriter).")
    drop_threshold: float = Field(default=_P.drop_threshold, description="Drop pairs whose final caption scores below this (65: one-word captions and stacked problems).")
    keep_fraction: Optional[float] = Field(default=_P.keep_fraction, description="Keep as is only this top fraction by quality_column, ONE cut over all scored shards (floor(N*f), ties by a stable hash of shard and key); a pair outside it is published only if its rewrite is accepted, else dropped whatever fallback says; materialize selection_cut with the same value before caption_decisions (empty = off).")
    rewrite: bool = Field(default=_P.rewrite, description="False turns the pipeline into a plain filter.")
    keep_expression: Optional[str] = Field(default=_P.keep_expression, description='Extra keep condition, e.g. "mlm_itm >= 66 and mlm_odf >= 20" (empty = none): a filter; a pair failing it is published only through an accepted rewrite.')
    caption_rules_mark_weak: bool = Field(default=_P.caption_rules_mark_weak, description="Failing DataComp caption rules marks a caption weak.")
    fallback: Literal["keep_original", "drop"] = Field(default=_P.fallback, description="After a rejected rewrite: keep the original caption (if above drop_threshold, and never outside the keep_fraction cut or failing keep_expression) or drop the pair; with drop, a rewrite still failing a DataComp caption rule (not English, too few words) is rejected.")
    drop_duplicates: bool = Field(default=_P.drop_duplicates, description="Keep one pair per duplicate group.")
    warn_drop_share: float = Field(default=0.9, ge=0, le=1, description="The kept_share check warns (never blocks) above this dropped share, or when a shard keeps nothing.")
    max_unscored_share: float = Field(default=0.5, ge=0, le=1, description="The scores_complete check fails a shard (blocking) where a scorer raised on more than this share of the pairs it attempted, or on all of them (at least 2); rewrites_complete likewise for the rewriter.")
    acceptance: AcceptanceConfig = Field(default_factory=AcceptanceConfig, description="When a rewrite is accepted.")
    nsfw: NsfwConfig = Field(default_factory=NsfwConfig, description="NSFW drop and review bands.")
    image: ImageQualityConfig = Field(default_factory=ImageQualityConfig, description="Image-quality drop bounds.")
    drift: DriftConfig = Field(default_factory=DriftConfig, description="Caption-length drift limits.")

    _numbers = _numbers_only()

    @model_validator(mode="after")
    def _policy_is_valid(self) -> "PolicyResource":
        """The domain's checks (scales, keep_expression, ...) when the resource is built: Dagster builds it
        from the run's config when the run starts, so a bad launchpad value fails the run before any step.
        Their messages name DecisionPolicy's fields (``nsfw_drop``): said here as the settings that fill them."""
        try:
            self.decision_policy()
        except ValueError as exc:
            raise ValueError(_POLICY_FIELD.sub(lambda m: f"policy.{POLICY_SETTINGS[m[0]]}", str(exc))) from None
        return self

    def decision_policy(self) -> DecisionPolicy:
        image = self.image
        return DecisionPolicy(
            quality_column=self.quality_column, keep_threshold=self.keep_threshold,
            drop_threshold=self.drop_threshold, rewrite=self.rewrite, keep_expression=self.keep_expression or None,
            keep_fraction=self.keep_fraction, require_image_rules=image.require_datacomp_rules,
            caption_rules_mark_weak=self.caption_rules_mark_weak, fallback=self.fallback,
            min_improvement=self.acceptance.min_improvement, nsfw_drop=self.nsfw.drop, nsfw_review=self.nsfw.review,
            max_text_area=image.max_text_area, min_sharpness=image.min_sharpness, min_brightness=image.min_brightness,
            max_brightness=image.max_brightness, min_entropy=image.min_entropy, min_contrast=image.min_contrast,
            drop_duplicates=self.drop_duplicates)

    def acceptance_rules(self) -> AcceptanceRules:
        # a rewrite still under drop_threshold would be dropped anyway: not accepted (the lineage says so);
        # the margin is the policy's, resolved on (and checked against) quality_column's declared range
        decision = self.decision_policy()
        acceptance = {**self.acceptance.model_dump(), "min_improvement": decision.min_improvement}
        return AcceptanceRules(**acceptance, min_quality=self.drop_threshold, still_weak=StillWeak(decision))

    def drift_thresholds(self) -> DriftThresholds:
        d = self.drift.model_dump()
        return DriftThresholds(quantile_abs_floor=d.pop("quantile_floor"), **d)


# DecisionPolicy's fields as the settings that fill them: nested, or the policy's own key of the same name (those
# with an underscore: a plain word such as "rewrite" in a message is no field)
POLICY_SETTINGS = {
    "min_improvement": "acceptance.min_improvement", "nsfw_drop": "nsfw.drop", "nsfw_review": "nsfw.review",
    "require_image_rules": "image.require_datacomp_rules",
    **{name: f"image.{name}" for name in ("max_text_area", "min_sharpness", "min_brightness", "max_brightness",
                                          "min_entropy", "min_contrast")},
    **{name: name for name in PolicyResource.model_fields if name in DecisionPolicy.__dataclass_fields__ and "_" in name},
}
_POLICY_FIELD = re.compile(r"(?<![\w.])(?:" + "|".join(sorted(POLICY_SETTINGS, key=len, reverse=True)) + r")(?!\w)")


# Every setting of the `compute` resource a deployment gives: field -> (environment variable, default). A field
# left empty (None, or "" for the strings) in code, in a launchpad's partial config (Dagster replaces a resource's
# whole config, so a left-out key arrives empty) or by `curate run` is read here, in the run's process, so the
# sensor's, schedules' and CLI's runs get a deployment's GPUs and actors too (chart: values.yaml `compute`).
ENGINES = ("local", "ray")
COMPUTE_SETTINGS: dict[str, tuple[str, object]] = {
    "engine": ("CURATION_COMPUTE", "local"),
    "address": ("CURATION_RAY_ADDRESS", ""),
    "actors": ("CURATION_RAY_ACTORS", RayOptions.actors),
    "cpus_per_actor": ("CURATION_RAY_CPUS_PER_ACTOR", RayOptions.cpus_per_actor),
    "gpus_per_actor": ("CURATION_RAY_GPUS_PER_ACTOR", RayOptions.gpus_per_actor),
    "threads_per_actor": ("CURATION_RAY_THREADS_PER_ACTOR", RayOptions.threads_per_actor),
    "rewrite_actors": ("CURATION_RAY_REWRITE_ACTORS", 0),
    "rewrite_gpus_per_actor": ("CURATION_RAY_REWRITE_GPUS_PER_ACTOR", -1.0),
    "batch_size": ("CURATION_RAY_BATCH_SIZE", 0),
    "decode_concurrency": ("CURATION_RAY_DECODE_CONCURRENCY", RayOptions.decode_concurrency),
    "spread": ("CURATION_RAY_SPREAD", RayOptions.spread),
    "max_tasks_in_flight": ("CURATION_RAY_MAX_TASKS_IN_FLIGHT", RayOptions.max_tasks_in_flight),
    "wait_for_actors_s": ("CURATION_RAY_WAIT_FOR_ACTORS_S", RayOptions.wait_for_actors_s),
    "max_retries": ("CURATION_RAY_MAX_RETRIES", RayOptions.max_retries),
    "coordinator_memory_mb": ("CURATION_RAY_COORDINATOR_MEMORY_MB", RayOptions.coordinator_memory_mb),
    "shard_timeout_s": ("CURATION_RAY_SHARD_TIMEOUT_S", RayOptions.shard_timeout_s),
}


def _compute_setting(name: str, text: str, **bounds):
    """A `compute` field: empty by default (then its environment variable, else its default), so the UI shows both."""
    env, default = COMPUTE_SETTINGS[name]
    return Field(default="" if isinstance(default, str) else None, validate_default=True,
                 description=f"{text} Empty: env {env}, else {default!r}.", **bounds)


def _whole_or_fraction_of_gpus(name: str, value):
    """GPU settings as Ray takes them (``check_gpus``); rewriting's -1 means the scoring actors' GPUs."""
    if name.endswith("gpus_per_actor") and not (name == "rewrite_gpus_per_actor" and value == -1):
        check_gpus(name, value)
    return value


class ComputeResource(RayResource):
    """Where ``quality_scores`` and ``rewritten_captions`` do their heavy work: ``local`` (the step's
    process) or ``ray`` (Ray Data on the cluster at ``address``, with model actor pools). Both write the
    same rows. With ``ray`` the step connects and disconnects (dagster-ray's lifecycle) but never creates
    or deletes the cluster; with ``local`` Ray is never imported.
    """

    _was_connected: bool = PrivateAttr(default=False)
    engine: str = _compute_setting("engine", "local (in the step's process) | ray (Ray Data on the cluster at `address`).")
    address: str = _compute_setting("address", "Ray cluster: ray://<head>:10001 (Ray Client; e.g. KubeRay's head service), <head-ip>:6379 (from a node of the cluster), or auto; none starts a private local Ray.")
    actors: Optional[int] = _compute_setting("actors", "Model actors for scoring (each loads the models once).", ge=1)
    cpus_per_actor: Optional[float] = _compute_setting("cpus_per_actor", "CPUs Ray reserves for each model actor.", ge=0, allow_inf_nan=False)
    gpus_per_actor: Optional[float] = _compute_setting("gpus_per_actor", "GPUs per scoring actor (0 = CPU; a fraction up to 1 shares a GPU; at most 1: an actor runs its models on one GPU).", ge=0, allow_inf_nan=False)
    threads_per_actor: Optional[int] = _compute_setting("threads_per_actor", "Intra-op threads of an actor's models (0 = its CPUs, rounded up).", ge=0)
    rewrite_actors: Optional[int] = _compute_setting("rewrite_actors", "Model actors for rewriting (0 = `actors`).", ge=0)
    rewrite_gpus_per_actor: Optional[float] = _compute_setting("rewrite_gpus_per_actor", "GPUs per rewriting actor (-1 = `gpus_per_actor`).", ge=-1, allow_inf_nan=False)
    batch_size: Optional[int] = _compute_setting("batch_size", "Pairs per batch on the cluster (0 = the local engine's: warehouse.batch_size for scoring, rewriter.batch_size for rewriting; other values change how pairs are batched).", ge=0)
    decode_concurrency: Optional[int] = _compute_setting("decode_concurrency", "Most decode tasks at once (0 = Ray Data decides).", ge=0)
    spread: Optional[bool] = _compute_setting("spread", "SPREAD scheduling: actors and decode tasks go to different nodes.")
    max_tasks_in_flight: Optional[int] = _compute_setting("max_tasks_in_flight", "Batches queued per actor.", ge=1)
    wait_for_actors_s: Optional[int] = _compute_setting("wait_for_actors_s", "Seconds to wait until every model actor has loaded before streaming starts (0 = start at once); a shard fails when not all have.", ge=0)
    max_retries: Optional[int] = _compute_setting("max_retries", "Restarts of a model actor that died (OOM kill, crash, lost node), each retrying its batch and reloading its models; then the step fails.", ge=0)
    coordinator_memory_mb: Optional[int] = _compute_setting("coordinator_memory_mb", "Memory (MiB) each shard's coordinator task reserves from Ray (it holds the shard's result rows), so a node's coordinators cannot outgrow it.", ge=0)
    shard_timeout_s: Optional[int] = _compute_setting("shard_timeout_s", "Seconds a shard's work on the cluster may take before it is cancelled and the step fails, naming what it asked for (0 = no limit: a request no node meets, e.g. a GPU on a CPU-only cluster, waits for an autoscaler).", ge=0)

    @field_validator(*COMPUTE_SETTINGS, mode="before")
    @classmethod
    def _empty_is_environment(cls, value, info):
        """An empty field takes its environment variable (checked here, so a bad one names itself), else the default."""
        if value is not None and value != "":
            return value
        env, default = COMPUTE_SETTINGS[info.field_name]
        raw = os.environ.get(env, "").strip()
        if not raw:
            return default
        bounds = cls.model_fields[info.field_name].metadata  # the field's ge: one set of bounds for both
        try:
            parsed = TypeAdapter(Annotated[(type(default), *bounds)] if bounds else type(default)).validate_python(raw)
            if info.field_name == "engine":
                cls._engine(parsed)
            return _whole_or_fraction_of_gpus(info.field_name, parsed)
        except ValueError as exc:  # pydantic's ValidationError is one
            reason = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
            raise ValueError(f"environment variable {env}={raw!r} is not a valid compute {info.field_name}: "
                             f"{reason}") from None

    _numbers = _numbers_only()

    @field_validator("gpus_per_actor", "rewrite_gpus_per_actor")
    @classmethod
    def _gpus(cls, gpus: float, info) -> float:
        return _whole_or_fraction_of_gpus(info.field_name, gpus)

    @field_validator("engine")
    @classmethod
    def _engine(cls, engine: str) -> str:
        if engine not in ENGINES:  # from the environment: _empty_is_environment names the variable
            raise ValueError(f"unknown compute engine {engine!r}; choose {' or '.join(ENGINES)}")
        return engine

    @property
    def uses_ray(self) -> bool:
        return self.engine == "ray"

    @property
    def host(self) -> str:
        rest = self.address.split("://", 1)[-1]
        return rest.rsplit(":", 1)[0] if rest else "127.0.0.1"

    @property
    def name(self) -> str:
        return f"Ray cluster {self.address or '(private local)'}"

    @property
    def ray_address(self) -> str:  # type: ignore[override]
        # none: "local" starts a private Ray; ray.init(None) would join RAY_ADDRESS or the last `ray start`
        return self.address or "local"

    @property
    def created(self) -> bool:  # an existing cluster: nothing to create, wait for, or delete
        return True

    @property
    def ready(self) -> bool:
        return True

    def get_env_vars_to_inject(self) -> dict[str, str]:
        """Offline switches follow the driver to the workers; credentials never do (the nodes
        have their own: environment, profile or instance role)."""
        forwarded = {k: os.environ[k] for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TOKENIZERS_PARALLELISM")
                     if k in os.environ}
        return {**forwarded, **super().get_env_vars_to_inject()}

    def on_connect(self, context) -> None:  # dagster-ray's says "via Ray Client" whatever the address
        via = " (Ray Client)" if self.address.startswith("ray://") else ""
        context.log.info(f"Connected to {self.display_name}{via}")
        self._was_connected = True

    def on_cleanup(self, context, *, deleted: bool) -> None:  # dagster-ray's says "Deleted": nothing is
        if self._was_connected:  # dagster-ray calls it after a failed connection too
            context.log.info(f"Disconnected from {self.display_name}")

    def connect(self, context):
        """dagster-ray retries a failed connection for 120 s counted from its first try, and one try can
        outlast that: when the head's proxy fails to start the connection's server process, the client
        waits out the channel timeout. A few fresh tries then connect. A head's address where nothing answers
        fails at once (``compute.address``): Ray's own retries would hold the run about 41 minutes."""
        from curation_pipeline.compute.address import is_client_address, unreachable

        why = unreachable(self.address)
        if why:
            start = ("Start the head there (ray start --head: its Ray Client server listens on 10001; on Kubernetes, "
                     "the head service's client port) or fix the address"
                     if is_client_address(self.address) else
                     "Start the head there (ray start --head --port=...) or fix the address; from outside the "
                     "cluster use its Ray Client address, ray://<head>:10001")
            raise ConnectionError(
                f"no Ray cluster answers at {self.address} (compute address, ${COMPUTE_SETTINGS['address'][0]}): "
                f"{why}. {start}")
        for attempt in range(3):
            try:
                return super().connect(context)
            except ConnectionError as exc:
                if attempt == 2:
                    # the port answered (else ``unreachable`` said so): a cluster that asks for a token this
                    # process does not hold, or another, times out alike, saying nothing of it
                    message = (f"{exc} (a Ray server answers at {self.address}, yet no connection was made: a "
                               "ray:// address must name the head's Ray Client port (10001), a bare one its GCS port "
                               "(6379); or, if the cluster runs with RAY_AUTH_MODE=token, this process needs the same "
                               "RAY_AUTH_MODE and RAY_AUTH_TOKEN; on Kubernetes, the curation-ray-auth secret the chart "
                               "names)")
                    try:
                        said = type(exc)(message)
                    except TypeError:  # a subclass built with other arguments: said as a plain ConnectionError
                        said = ConnectionError(message)
                    raise said from exc

    @contextlib.contextmanager
    def yield_for_execution(self, context: dg.InitResourceContext):
        if not self.uses_ray:
            yield self
            return
        with super().yield_for_execution(context) as connected:
            yield connected

    def resolved(self, stage: str, local_batch_size: int) -> dict:
        """What a step of ``stage`` runs with, each setting as resolved (launchpad, its environment variable,
        or the default): the UI's config form shows only what was typed, so a step's metadata says this."""
        if not self.uses_ray:
            return {"engine": "local"}
        options = dataclasses.asdict(self.options(stage, local_batch_size))
        given = dict(options.pop("data_context"))  # dagster-ray's data_execution_options, where set
        return {"engine": "ray", "address": self.address or "(private local)", **options,
                **({"data_execution_options": given} if given else {})}

    def options(self, stage: str, local_batch_size: int):
        """RayOptions for ``score`` or ``rewrite``."""
        rewrite = stage == "rewrite"
        gpus = self.rewrite_gpus_per_actor if rewrite and self.rewrite_gpus_per_actor >= 0 else self.gpus_per_actor
        return RayOptions(batch_size=self.batch_size or local_batch_size,
                          actors=(self.rewrite_actors or self.actors) if rewrite else self.actors,
                          cpus_per_actor=self.cpus_per_actor, gpus_per_actor=gpus,
                          threads_per_actor=self.threads_per_actor, decode_concurrency=self.decode_concurrency,
                          spread=self.spread, max_tasks_in_flight=self.max_tasks_in_flight,
                          wait_for_actors_s=self.wait_for_actors_s, max_retries=self.max_retries,
                          coordinator_memory_mb=self.coordinator_memory_mb, shard_timeout_s=self.shard_timeout_s,
                          data_context=self._data_context())

    def _data_context(self) -> tuple:
        """dagster-ray's ``data_execution_options`` the config set, for each shard's coordinator (``RayOptions``):
        only what was set, so Ray Data's own defaults stand otherwise."""
        given, out = self.data_execution_options, {}
        limits = given.execution_options
        if any(v is not None for v in (limits.cpu, limits.gpu, limits.object_store_memory)):
            out["resource_limits"] = (limits.cpu, limits.gpu, limits.object_store_memory)
        for name in ("verbose_progress", "use_polars"):
            if name in fields_set(given):
                out[name] = getattr(given, name)
        return tuple(sorted(out.items()))


# --- the code location's own settings -----------------------------------------------------------------------

RESOURCE_CLASSES = dict(zip(RESOURCE_KEYS, (ScoringResource, RewriterResource, PolicyResource, ComputeResource)))


def location_resources(path: str) -> dict[str, dg.ConfigurableResource]:
    """The resources a code location is given by its settings file (``CURATION_SETTINGS``), those it names: the UI's
    runs, the schedules' and the sensors' use them, and the model assets' code versions name their models. A
    launchpad's run config still overrides them for its run. ValueError naming the file and the setting."""
    built = {}
    for name, given in read_settings_file(path).items():
        if not given:
            continue
        cls = RESOURCE_CLASSES[name]
        unknown = sorted(set(given) - set(cls.model_fields))
        if unknown:
            raise ValueError(f"{SETTINGS_FILE_ENV}={path}: unknown {name} setting {', '.join(unknown)}; known: "
                             f"{', '.join(sorted(cls.model_fields))}")
        try:
            instance = cls(**given)
            # what a run would refuse before its first step, told without a model loaded (curate run refuses it too)
            if name == "scoring":
                instance.as_profile()
            elif name == "rewriter":
                _check_rewriter(instance.kind, instance.model, instance.vision_tower)
        except (ValidationError, dg.DagsterInvalidConfigError, TypeError, ValueError) as exc:
            raise ValueError(f"{SETTINGS_FILE_ENV}={path}: invalid {name} setting: {exc}") from exc
        built[name] = _defaulting_to(cls, given, instance)(**given)
    if {"scoring", "policy"} & set(built):  # the schedules' and sensors' runs score with these: refused as curate run
        from curation_pipeline.settings_checks import SettingsConflict, check_decision_columns

        scoring = built.get("scoring") or ScoringResource()
        try:  # else each shard is scored, then fails its checks (scores_in_range: missing columns)
            rules = (built.get("policy") or PolicyResource()).decision_policy()
            check_decision_columns(scoring, rules.quality_column, rules.keep_expression)
        except (SettingsConflict, ValueError) as exc:
            raise ValueError(f"{SETTINGS_FILE_ENV}={path}: invalid policy setting: {exc}") from None
    return built


def _defaulting_to(cls: type, given: dict, instance) -> type:
    """``cls`` whose defaults are the settings file's values (nested groups too): Dagster replaces a resource's
    whole config with a launchpad's, so a run config setting one key (``scoring: {batch_size: 8}``) would run
    every other key at the class's default, not the file's profile and models."""
    import pydantic

    fields = {}
    for key, value in given.items():
        field, current = cls.model_fields[key], getattr(instance, key)
        if isinstance(value, dict) and isinstance(current, dg.Config):  # a group: its own keys default to the file's
            group = _defaulting_to(type(current), value, current)
            fields[key] = (group, FieldInfo.merge_field_infos(
                field, default_factory=lambda group=group, value=value: group(**value)))
        else:  # the field as declared, its bounds too (a launchpad's out-of-range value is refused), but its default
            fields[key] = (field.annotation, FieldInfo.merge_field_infos(field, default=current))
    made = pydantic.create_model(cls.__name__, __base__=cls, __module__=cls.__module__, **fields)
    _FROM_FILE[made] = cls, frozenset(given)
    return made


# a class ``_defaulting_to`` made -> the class it stands for, whose defaults are the declared ones, and the keys the
# settings file set, which the made class holds as its defaults
_FROM_FILE: dict[type, tuple[type, frozenset[str]]] = {}


def fields_set(config) -> set[str]:
    """The keys set on ``config`` to other than their declared default: by its run's config, or by the location's
    settings file (``_defaulting_to``), whose values its class holds as defaults."""
    if type(config) not in _FROM_FILE:
        return set(config.model_fields_set)
    declared, in_file = _FROM_FILE[type(config)]
    return set(config.model_fields_set) | {
        key for key in in_file
        if getattr(config, key) != declared.model_fields[key].get_default(call_default_factory=True)}


def as_declared(config):
    """``config`` as an instance of the class it stands for: what differs from the declared defaults (a model the
    settings file names) is a setting there, which the code versions' digests name (``output_settings``), not a
    default left out of them."""
    if type(config) not in _FROM_FILE:
        return config
    declared, _ = _FROM_FILE[type(config)]
    return declared(**config.model_dump())

"""Load CLIP-like and vision-language models once, with one clear error when impossible.

``from_pretrained``'s many exceptions become one ``ModelUnavailableError`` naming the model and how to
supply it: the reader is usually configuring a profile, not debugging.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


class ModelUnavailableError(RuntimeError):
    """A model that cannot be loaded here; the message says what went wrong and, when the
    files are missing, how to supply them."""

    def __init__(self, model: str, cause: BaseException | str):
        self.model = model
        where = "a local path" if _looks_like_path(model) else "a HuggingFace id"
        message = f"Model {model!r} ({where}) could not be loaded: {cause}"
        if _is_missing_files(cause):
            offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
            message += (
                f"\nTo supply it: pass a local directory holding the checkpoint (hf download {model} "
                "--local-dir DIR), or download it into the HuggingFace cache (HF_HOME) on a machine with network access"
                + (" and keep HF_HUB_OFFLINE=1 here" if offline else "")
                + "; on a networked machine, unset HF_HUB_OFFLINE to download it.")
        super().__init__(message)

    def __reduce__(self):
        """Rebuilt from its message: Ray sends a model actor's failure to the driver pickled, and without
        this it arrived as an UnserializableException that no longer said which model, or how to supply it."""
        return _rebuild_unavailable, (self.model, str(self))


def _rebuild_unavailable(model: str, message: str) -> ModelUnavailableError:
    error = ModelUnavailableError.__new__(ModelUnavailableError)
    RuntimeError.__init__(error, message)
    error.model = model
    return error


def _is_missing_files(cause: BaseException | str) -> bool:
    """Only absent files deserve download guidance; a present but unusable model does not."""
    if isinstance(cause, str):
        return cause.startswith("no directory")
    return isinstance(cause, (OSError, FileNotFoundError)) and "does not recognize" not in str(cause)


def _looks_like_path(model: str) -> bool:
    """Hub ids are ``name`` or ``org/name``; anything else is meant as a local path."""
    return model.startswith((".", "/", "~")) or model.count("/") > 1 or Path(model).exists()


def inference_mode(method):
    """``torch.inference_mode()`` as a decorator that imports torch only when the method runs, so
    the modules declaring scorers and rewriters stay importable without it."""
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        import torch

        with torch.inference_mode():
            return method(*args, **kwargs)
    return wrapper


def cache_argument(model) -> str:
    """The name a model's ``forward`` takes its key/value cache by. transformers 5 renamed it ``cache`` and keeps
    ``past_key_values`` only as a deprecated alias until 5.40; after that the old name could land in ``forward``'s
    ``**kwargs`` and the cached prompt be ignored without an error. Versions before the rename know only the old one.
    Read once per model class, not per batch."""
    return _cache_argument(type(model))


@functools.cache
def _cache_argument(model_class: type) -> str:
    import inspect

    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


def output_cache(output):
    """The key/value cache a forward pass returned, under either name (see ``cache_argument``)."""
    return output["cache"] if "cache" in output else output["past_key_values"]


def pick_device(preferred: str | None = None) -> str:
    if preferred:
        return preferred
    import torch  # seconds to import: only once a model is loaded (the CLI imports this module's error)

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


# dtype names (the profile's and the CLI's) -> torch's; "auto" (or "") means the default
DTYPE_NAMES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
               "half": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16"}


def pick_dtype(device: str, preferred: torch.dtype | str | None = None) -> torch.dtype:
    """Half precision on accelerators (bf16 where supported), fp32 on CPU where half is slow;
    ``preferred`` (a torch dtype or a name of ``DTYPE_NAMES``; "auto" = the default) wins."""
    import torch

    if isinstance(preferred, str):
        if preferred.lower() in ("", "auto"):
            preferred = None
        elif preferred.lower() in DTYPE_NAMES:
            return getattr(torch, DTYPE_NAMES[preferred.lower()])
        else:
            raise ValueError(f"unknown dtype {preferred!r}; choose auto, {', '.join(DTYPE_NAMES)}")
    if preferred is not None:
        return preferred
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.startswith("mps"):
        return torch.float16
    return torch.float32


def model_revision(model: str) -> str | None:
    """The commit of the snapshot a HuggingFace id resolves to in the local cache (its ``refs/main``, what
    ``from_pretrained`` loads offline), so two snapshots under one id read apart in lineage; None for a local path
    (transformers records no commit for a directory) or an id not in the cache."""
    if _looks_like_path(model):
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(model, "config.json")
    except Exception:  # noqa: BLE001 - an id the hub's rules reject: no revision to tell, the load says why
        return None
    if not isinstance(found, str):
        return None
    path = Path(found)
    return path.parent.name if path.parent.parent.name == "snapshots" else None


def model_ident(model: str) -> str:
    """The model as a version names it: a HuggingFace id with its cached snapshot's commit (``org/name@1a2b3c4d5e6f``),
    a local path as given."""
    revision = model_revision(model)
    return f"{model}@{revision[:12]}" if revision else model


def prepare_source(model: str) -> str:
    """Expand ``~`` and reject a missing local directory before any hub lookup."""
    expanded = os.path.expanduser(model)
    if _looks_like_path(model) and not Path(expanded).is_dir():
        raise ModelUnavailableError(model, f"no directory at {expanded}")
    return expanded if Path(expanded).is_dir() else model


def _from_pretrained(auto_class, source: str, **kwargs):
    """SDPA attention where the architecture has it, its default attention otherwise."""
    try:
        return auto_class.from_pretrained(source, attn_implementation="sdpa", **kwargs)
    except ValueError as exc:
        if "sdpa" not in str(exc).lower():
            raise
        return auto_class.from_pretrained(source, **kwargs)


def finish(model, device: str):
    model.to(device)
    model.eval()
    model.requires_grad_(False)
    return model


def load_clip(model: str, device: str | None = None, dtype=None):
    """A CLIP or SigLIP dual encoder and its processor; the family comes from the config."""
    from transformers import AutoConfig, AutoModel, AutoProcessor

    source = prepare_source(model)
    device = pick_device(device)
    try:
        config = AutoConfig.from_pretrained(source)
        if not any(family in config.model_type for family in ("clip", "siglip")):
            raise ValueError(f"model_type {config.model_type!r} is not a CLIP or SigLIP dual encoder")
        processor = AutoProcessor.from_pretrained(source)
        loaded = _from_pretrained(AutoModel, source, dtype=pick_dtype(device, dtype))
    except (OSError, ValueError, KeyError, ImportError, TypeError) as exc:
        raise ModelUnavailableError(model, exc) from exc
    return finish(loaded, device), processor


def load_vlm(model: str, device: str | None = None, dtype=None, trust_remote_code: bool = False):
    """A chat vision-language model (AutoModelForImageTextToText) and its processor; repository code
    runs only when the caller set ``trust_remote_code`` for this model."""
    from transformers import AutoModelForImageTextToText

    source = prepare_source(model)
    device = pick_device(device)
    remote = {"trust_remote_code": True} if trust_remote_code else {}
    try:
        processor = _load_processor(source, remote)
        loaded = _from_pretrained(AutoModelForImageTextToText, source, dtype=pick_dtype(device, dtype), **remote)
    except (OSError, ValueError, KeyError, ImportError, TypeError) as exc:
        raise ModelUnavailableError(model, exc) from exc
    if getattr(processor, "chat_template", None) is None:
        raise ModelUnavailableError(model, "its processor has no chat template")
    return finish(loaded, device), processor


# Processors read to use their video processor only for videos, so they load without it where torchvision is
# missing; add a family here once checked: its prompts, pixels, rewrites and scores the standard processor's
# (with its PIL image processor), its tiny checkpoint in curation_pipeline_tests/models/test_vlm_without_torchvision.py.
IMAGES_ONLY_PROCESSORS = ("Qwen2VLProcessor", "Qwen2_5_VLProcessor", "LlavaOnevisionProcessor", "SmolVLMProcessor")


def _load_processor(source: str, remote: dict):
    """AutoProcessor's processor; without torchvision, one of ``IMAGES_ONLY_PROCESSORS`` is built with no
    video processor. transformers 5 builds every sub-processor a processor's ``__init__`` names, and its video
    processors need torchvision, which this project leaves out (its image processors stay the PIL ones); the
    pipeline hands processors images only. Any other processor's error stands (it says what to install)."""
    from transformers import AutoConfig, AutoProcessor, is_torchvision_available
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING

    try:
        return AutoProcessor.from_pretrained(source, **remote)
    except ImportError:
        if remote or is_torchvision_available():
            raise
        processor_class = PROCESSOR_MAPPING.get(type(AutoConfig.from_pretrained(source)), None)
        if getattr(processor_class, "__name__", None) not in IMAGES_ONLY_PROCESSORS:
            raise
        return images_only(processor_class).from_pretrained(source)


def images_only(processor_class):
    """``processor_class`` without its video sub-processor: neither loaded nor asked for."""
    from transformers import ProcessorMixin

    class ImagesOnly(processor_class):
        @classmethod
        def get_attributes(cls):
            return [name for name in super().get_attributes() if name != "video_processor"]

        @classmethod
        def from_pretrained(cls, *args, **kwargs):
            with _video_only_imports(processor_class):  # (SmolVLM's __init__ wants its video processor named)
                return super().from_pretrained(*args, video_processor=None, **kwargs)

        def apply_chat_template(self, conversation, *args, **kwargs):
            """The template rendered as every processor renders it: a family's override only adds video
            defaults (SmolVLM's reads its video processor's frame rate, even for images)."""
            return ProcessorMixin.apply_chat_template(self, conversation, *args, **kwargs)

    ImagesOnly.__name__ = ImagesOnly.__qualname__ = f"{processor_class.__name__}ImagesOnly"
    return ImagesOnly


@contextlib.contextmanager
def _video_only_imports(processor_class):
    """SmolVLM's ``__init__`` demands num2words, which only spells out a video's frame count; with no video
    processor nothing calls it, so the images-only processor is built without it (the module as it was after)."""
    module = sys.modules[processor_class.__module__]
    missing = hasattr(module, "num2words") and module.num2words is None
    if missing:
        module.num2words = _no_num2words
    try:
        yield
    finally:
        if missing:
            module.num2words = None


def _no_num2words(*args, **kwargs):
    raise ImportError("num2words is not installed: videos need it (pip install num2words)")

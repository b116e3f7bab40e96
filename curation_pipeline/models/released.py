"""The papers' released checkpoints on transformers' native LLaVA classes.

The MLM-Filter checkpoints (``llava``, ``llava_llama``, ``llava_qwen``, from the LLaVA-Unified fork) and
AITQE's (``mm``, tied to transformers 4.41 and flash-attn) ship weights but no code current
transformers can run. All four are a vision tower, a two-layer MLP projector and a causal LM with the
image features spliced into its input embeddings, so their tensors are renamed onto
``LlavaForConditionalGeneration``: no ``trust_remote_code``, SDPA attention, and ``curate
convert-model`` can write a standard directory. Reproduced from the references (parity tests pin each):
the tower named by the checkpoint, loaded from its own id; features from ``mm_vision_select_layer``
(CLIP drops its CLS token, SigLIP has none); AITQE's bias-less second projector Linear as a zero bias;
AITQE's ``image_newline`` unused (its code concatenates an empty slice); the image placeholder a token
id the text never produces (the first id past the tokenizer, growing the vocabulary when full).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from curation_pipeline.models.aspect import model_input
from curation_pipeline.models.loading import ModelUnavailableError, finish, pick_device, pick_dtype, prepare_source

if TYPE_CHECKING:
    import torch

LAYOUTS = {
    "llava": ("llama", "llava_v1"),
    "llava_llama": ("llama", "llama_3"),
    "llava_qwen": ("qwen2", "qwen_instruct"),
    "mm": ("qwen2", "aitqe"),
}
_TEXT_KEYS_DROPPED = ("architectures", "auto_map", "model_type", "_name_or_path", "transformers_version")


class UnknownLayoutError(ModelUnavailableError):
    pass


@dataclass
class ReleasedModel:
    """A released checkpoint, loaded: the native model and what its reference feeds it."""

    model: torch.nn.Module
    tokenizer: object
    image_processor: object
    layout: str  # a LAYOUTS key
    family: str  # prompt family: llava_v1, llama_3, qwen_instruct, aitqe
    image_token_id: int
    image_tokens: int  # placeholders per image
    pad_to_square: bool  # the checkpoint's image_aspect_ratio == "pad"
    source: str
    config: dict  # the checkpoint's own config.json
    suppressed: list[int] = field(default_factory=list)  # ids never generated (generation_config.suppress_tokens)

    @property
    def repetition_penalty(self) -> float:
        """From generation_config.json; the reference applies it (greedy too) to the generated tokens only:
        it generates from embeddings, so the prompt's ids are not in the sequence the penalty sees."""
        return float(self.model.generation_config.repetition_penalty or 1.0)

    @property
    def max_length(self) -> int | None:
        """``tokenizer_model_max_length`` of an MLM-Filter (LLaVA-Unified) checkpoint: its reference cuts
        the sequence to it *after* splicing in the image features (``prepare_inputs_labels_for_multimodal``),
        so a long caption loses the prompt's end. None when unset, and for AITQE (its code has no such cut)."""
        if self.layout == "mm":
            return None
        limit = self.config.get("tokenizer_model_max_length")
        return int(limit) if limit is not None else None

    def pixel_values(self, images: list, pad: bool | None = None) -> torch.Tensor:
        """The reference's preprocessing; ``pad`` (default: the checkpoint's setting) first
        pads to a square filled with the processor's mean colour, as LLaVA's ``expand2square``. Images
        as the reference loads them (``model_image``: no EXIF rotation, alpha dropped); one of extreme
        aspect ratio first reduced so that the processor's cost is bounded (``bound_aspect``)."""
        pad = self.pad_to_square if pad is None else pad
        images = [model_input(im, self.image_processor, pad=pad) for im in images]
        if pad:
            fill = tuple(int(x * 255) for x in self.image_processor.image_mean)
            images = [expand_to_square(im, fill) for im in images]
        return self.image_processor(images=images, return_tensors="pt")["pixel_values"]


def expand_to_square(image, fill):
    from PIL import Image

    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), fill)
    canvas.paste(image, ((side - width) // 2, 0) if width < height else (0, (side - height) // 2))
    return canvas


def _local_dir(model: str) -> Path:
    """The checkpoint's files: a local directory, or the hub snapshot (cache first)."""
    source = prepare_source(model)
    if Path(source).is_dir():
        return Path(source)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(source, allow_patterns=["*.json", "*.safetensors", "*.bin", "*.model",
                                                              "*.txt", "*.tiktoken"]))
    except Exception as exc:  # noqa: BLE001 - every hub failure becomes one clear error
        raise ModelUnavailableError(model, exc) from exc


def read_config(model: str) -> dict | None:
    """The checkpoint's raw config.json, or None when it has none (not a released layout)."""
    try:
        path = _local_dir(model) / "config.json"
    except ModelUnavailableError:
        return None
    return json.loads(path.read_text()) if path.is_file() else None


def released_layout(config: dict | None) -> str | None:
    """The released layout a raw config describes, None for a transformers-native model (native
    ``llava`` configs carry ``vision_config``; the LLaVA-1.5 layout ``mm_vision_tower`` instead)."""
    if not config:
        return None
    kind = config.get("model_type")
    if kind == "mm" or (kind in LAYOUTS and "mm_vision_tower" in config):
        return kind
    if "mm_vision_tower" in config or "vision_model_name_or_path" in config:
        raise UnknownLayoutError(
            config.get("_name_or_path", "checkpoint"),
            f"model_type {kind!r} is not a supported released layout; supported: {', '.join(sorted(LAYOUTS))}")
    return None


def _state_dict(directory: Path) -> dict[str, torch.Tensor]:
    import torch

    files = sorted(directory.glob("*.safetensors"))
    state: dict[str, torch.Tensor] = {}
    if files:
        from safetensors.torch import load_file

        for file in files:
            state.update(load_file(str(file)))
        return state
    for file in sorted(directory.glob("*.bin")):
        if file.name == "training_args.bin":
            continue
        state.update(torch.load(file, map_location="cpu", weights_only=True, mmap=True))
    if not state:
        raise ModelUnavailableError(str(directory), "no *.safetensors or *.bin weights")
    return state


# Released tensor name prefixes -> native ones; the first match wins, a tensor matching none is dropped
# (AITQE's image_newline: its reference concatenates it as an empty slice).
_RENAMES = {
    "mm": (("model.model.", "model.language_model."), ("model.lm_head.", "lm_head."),
           ("vision_model.", "model.vision_tower."), ("mm_projector.0.", "model.multi_modal_projector.linear_1."),
           ("mm_projector.2.", "model.multi_modal_projector.linear_2.")),
    "llava": (("model.mm_projector.0.", "model.multi_modal_projector.linear_1."),
              ("model.mm_projector.2.", "model.multi_modal_projector.linear_2."),
              ("model.mm_projector.mlp_projector.0.", "model.multi_modal_projector.linear_1."),
              ("model.mm_projector.mlp_projector.2.", "model.multi_modal_projector.linear_2."),
              ("model.vision_tower.vision_tower.", "model.vision_tower."),
              ("model.", "model.language_model."), ("lm_head.", "lm_head.")),
}


def _rename(key: str, layout: str) -> str | None:
    """The native name of a released tensor, None to drop it."""
    for old, new in _RENAMES["mm" if layout == "mm" else "llava"]:
        if key.startswith(old):
            return new + key[len(old):]
    return None


def _pil_backend() -> dict:
    """The argument that makes ``AutoImageProcessor`` resize with PIL, as the references' processors do
    (CLIPImageProcessor / SiglipImageProcessor of transformers 4.41 / 4.51: PIL bicubic). Transformers 5
    picks its torchvision backend whenever torchvision is importable (tensor bicubic + antialias: other
    pixel values); ``backend="pil"`` asks for the PIL one. Before the backend system, ``use_fast=False``."""
    from importlib.util import find_spec

    return {"backend": "pil"} if find_spec("transformers.image_processing_backends") else {"use_fast": False}


def _tower(name: str, vision_tower: str | None):
    """The vision tower's model class, config and image processor (by its model type)."""
    from transformers import AutoConfig, AutoImageProcessor, CLIPVisionModel, SiglipVisionModel

    source = prepare_source(vision_tower or name)
    try:
        config = AutoConfig.from_pretrained(source)
        processor = AutoImageProcessor.from_pretrained(source, **_pil_backend())
    except (OSError, ValueError) as exc:
        raise ModelUnavailableError(
            vision_tower or name, f"{exc}\n(the vision tower named by the checkpoint; to load it from elsewhere, give "
            "a local directory or id of that tower: scoring.mlm.vision_tower, scoring.aitqe_vision_tower, "
            "rewriter.vision_tower, or convert-model's --vision-tower)") from exc
    kind = config.model_type
    vision_config = getattr(config, "vision_config", config)
    if kind.startswith("clip"):
        return CLIPVisionModel, vision_config, processor, source, True
    if kind.startswith("siglip") and not kind.startswith("siglip2"):
        return SiglipVisionModel, vision_config, processor, source, False
    raise ModelUnavailableError(vision_tower or name, f"vision tower type {kind!r} is not supported (clip, siglip)")


def released_dtype(layout: str, device: str, preferred=None, *, bf16_supported: bool | None = None) -> torch.dtype:
    """The precision a released checkpoint runs in: ``preferred`` when given (not "auto"), else its
    reference's on a CUDA GPU: float16 for the MLM-Filter layouts (LLaVA-Unified's builder loads with
    ``torch_dtype=torch.float16``, MLM_Filter's scripts ``.half()`` the images), bfloat16 for AITQE
    (``inference.load_model``: ``torch_dtype=torch.bfloat16``; float16 where the GPU lacks bf16);
    elsewhere ``pick_dtype``'s (fp16 on mps, fp32 on CPU). ``bf16_supported``: None asks torch."""
    import torch

    if isinstance(preferred, str) and preferred.lower() in ("", "auto"):
        preferred = None
    if preferred is not None or not device.startswith("cuda"):
        return pick_dtype(device, preferred)
    if layout != "mm":
        return torch.float16
    if bf16_supported is None:
        bf16_supported = torch.cuda.is_bf16_supported()
    return torch.bfloat16 if bf16_supported else torch.float16


def load_released(model: str, *, vision_tower: str | None = None, device: str | None = None, dtype=None,
                  config: dict | None = None) -> ReleasedModel:
    """Load a released MLM-Filter or AITQE checkpoint onto ``LlavaForConditionalGeneration``."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, Qwen2Config

    from curation_pipeline.models.projector import PooledProjector

    directory = _local_dir(model)
    raw = config or json.loads((directory / "config.json").read_text())
    layout = released_layout(raw)
    if layout is None:
        raise UnknownLayoutError(model, f"model_type {raw.get('model_type')!r} is not a released layout; "
                                        f"supported: {', '.join(sorted(LAYOUTS))}")
    text_type, family = LAYOUTS[layout]
    if layout != "mm" and raw.get("mm_use_im_start_end"):  # LLaVA's format_text would then wrap the image token
        raise UnknownLayoutError(model, "mm_use_im_start_end is true: the reference wraps the image in <im_start> "
                                        "and <im_end>, which no released MLM-Filter checkpoint does and this scorer "
                                        "does not render")
    tower_name = raw.get("vision_model_name_or_path" if layout == "mm" else "mm_vision_tower")
    tower_class, vision_config, image_processor, tower_source, is_clip = _tower(tower_name, vision_tower)
    grid = vision_config.image_size // vision_config.patch_size
    if layout == "mm":
        _check_aitqe_config(model, raw, grid * grid, is_clip)

    text_raw = {k: v for k, v in raw.items() if k not in _TEXT_KEYS_DROPPED and not k.startswith("mm_")}
    text_config = (LlamaConfig if text_type == "llama" else Qwen2Config).from_dict(text_raw)
    try:  # with the text config: transformers does not know llava_llama, and its bare stand-in for that
        # config fails on rope_scaling (every Llama-3.1 / 3.2 checkpoint: mlm-filter-llama-3.2-3b)
        tokenizer = AutoTokenizer.from_pretrained(str(directory), config=text_config)
    except (OSError, ValueError) as exc:
        raise ModelUnavailableError(model, exc) from exc
    vocab = text_config.vocab_size
    image_token_id = len(tokenizer)
    grow = image_token_id >= vocab
    if grow:
        text_config.vocab_size = image_token_id + 1

    select = raw.get("mm_vision_select_feature", "patch")
    drop_cls = is_clip and select == "patch" if layout != "mm" else "siglip" not in str(tower_name).lower()
    projector = raw.get("mm_projector_type", "mlp2x_gelu")
    if layout == "mm" and projector == "mlp":  # AITQE's Linear-GELU-Linear
        projector = "mlp2x_gelu"
    if projector not in ("mlp2x_gelu", "aapool_mlp"):
        raise UnknownLayoutError(model, f"projector type {projector!r} is not supported (mlp2x_gelu, aapool_mlp)")
    image_tokens = int(raw["mm_num_image_tokens"]) if projector == "aapool_mlp" else grid * grid
    native = LlavaConfig(
        vision_config=vision_config.to_dict() | {"model_type": vision_config.model_type},
        text_config=text_config.to_dict() | {"model_type": text_type},
        image_token_index=image_token_id, image_seq_length=image_tokens, projector_hidden_act="gelu",
        vision_feature_select_strategy="default" if drop_cls else "full",
        # AITQE's modeling_mm takes hidden_states[-2] whatever its config says
        vision_feature_layer=-2 if layout == "mm" else int(raw.get("mm_vision_select_layer", -2)),
        multimodal_projector_bias=True,
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)))

    device = pick_device(device)
    dtype = released_dtype(layout, device, dtype)
    state = {new: tensor for key, tensor in _state_dict(directory).items()
             if (new := _rename(key, layout)) is not None}
    own_tower = any(k.startswith("model.vision_tower.") for k in state)
    if layout != "mm" and own_tower and not raw.get("unfreeze_mm_vision_tower", False):
        # the reference builds the tower lazily and loads it from its id, ignoring these
        state = {k: v for k, v in state.items() if not k.startswith("model.vision_tower.")}
        own_tower = False
    if not own_tower:
        tower = tower_class.from_pretrained(tower_source)
        state.update({"model.vision_tower." + k: v for k, v in tower.state_dict().items()})
    bias = "model.multi_modal_projector.linear_2.bias"
    if bias not in state:
        state[bias] = torch.zeros(native.text_config.hidden_size)
    for name in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
        if grow and name in state:
            weight = state[name]
            state[name] = torch.cat([weight, weight.new_zeros(1, weight.shape[1])])
    if native.tie_word_embeddings:
        state.pop("lm_head.weight", None)

    with torch.device("meta"):
        loaded = LlavaForConditionalGeneration._from_config(native, attn_implementation="sdpa")
        if projector == "aapool_mlp":
            loaded.model.multi_modal_projector = PooledProjector(loaded.model.multi_modal_projector, image_tokens)
    expected = set(loaded.state_dict())
    state = {_native_key(k, expected): v.to(dtype) for k, v in state.items()}
    missing, unexpected = loaded.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if not (native.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise ModelUnavailableError(model, f"released {layout!r} layout did not map cleanly: missing {missing[:5]}, "
                                           f"unexpected {unexpected[:5]}")
    if native.tie_word_embeddings:
        loaded.tie_weights()
    rotary = [m for m in loaded.modules() if hasattr(m, "inv_freq")]
    for module in rotary:  # buffers are not in the checkpoint: rebuild them off the meta device
        fresh = type(module)(config=module.config if hasattr(module, "config") else native.text_config)
        module.inv_freq = fresh.inv_freq
        if hasattr(module, "original_inv_freq"):
            module.original_inv_freq = fresh.original_inv_freq
    _materialize_buffers(loaded)
    if (directory / "generation_config.json").is_file():
        from transformers import GenerationConfig

        loaded.generation_config = GenerationConfig.from_pretrained(str(directory))
    # Never generated: the image placeholder, and for MLM-Filter the padding rows (ids past the tokenizer), which
    # its reference drops (LLaVA-Unified's builder resizes the embeddings to the tokenizer). AITQE's reference
    # keeps all vocab_size rows (inference.py resizes nothing, its logits have vocab_size entries), so only the
    # placeholder, which is ours, is suppressed there. The one list generate uses (its generation_config).
    rows = loaded.config.text_config.vocab_size
    suppressed = [image_token_id] if layout == "mm" else list(range(len(tokenizer), rows))
    loaded.generation_config.suppress_tokens = suppressed
    loaded.generation_config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None \
        else tokenizer.eos_token_id
    finish(loaded, device)
    return ReleasedModel(loaded, tokenizer, image_processor, layout, family, image_token_id, image_tokens,
                         raw.get("image_aspect_ratio") == "pad", model, raw, suppressed)


# AITQE config values its reference (modeling_mm, data_processor @ 2810aee) runs, and the parity goldens cover:
# key -> (the value when the key is absent, None: the reference reads it unconditionally; the one supported).
# Anything else would be run otherwise than the reference runs it (or the reference refuses it), so it is refused.
_AITQE_SUPPORTED = {
    "image_aspect_ratio": ("square", "square"),  # MMForCausalLM asserts it
    "mm_projector_type": ("mlp", "mlp"),  # the only projector MMForCausalLM builds (Linear-GELU-Linear)
    "pooling_kernel": (None, 1),  # MMDataProcessor: "MLP only has kernel 1"
}


def _check_aitqe_config(model: str, raw: dict, patches: int, is_clip: bool) -> None:
    """Refuse an AITQE (``mm``) config that this loader would run differently from the reference: every image
    placeholder count but ``image_tile_tokens`` = the tower's patches (the reference splices that many features,
    one per patch, into as many slots), another aspect-ratio mode, projector or pooling, a tower that is not
    SigLIP (the reference loads it as ``SiglipVisionModel``)."""
    for key, (default, supported) in _AITQE_SUPPORTED.items():
        value = raw.get(key, default)
        if value != supported:
            raise UnknownLayoutError(model, f"AITQE config {key} is {value!r}; only {supported!r} is supported "
                                            "(what the reference runs and the parity tests pin)")
    tiles = raw.get("image_tile_tokens")
    if tiles != patches:
        raise UnknownLayoutError(model, f"AITQE config image_tile_tokens is {tiles!r}; only {patches} is supported "
                                        "(the vision tower's patches: one image token per patch feature)")
    if is_clip:
        raise UnknownLayoutError(model, "AITQE's vision tower is a CLIP model; its reference loads the tower as "
                                        "SigLIP (SiglipVisionModel), so only a SigLIP tower is supported")
    if "siglip" not in str(raw.get("vision_model_name_or_path")).lower():
        raise UnknownLayoutError(model, "AITQE config vision_model_name_or_path has no 'siglip' in it: the reference "
                                        "then drops the first patch feature, one fewer than its image_tile_tokens")


def _native_key(key: str, expected: set[str]) -> str:
    """Vision towers saved by older transformers nest ``vision_model.`` where current ones may not."""
    if key in expected or ".vision_model." not in key:
        return key
    flat = key.replace(".vision_model.", ".", 1)
    return flat if flat in expected else key


def _materialize_buffers(model) -> None:
    """Non-persistent buffers (position ids) are not in checkpoints; rebuild any left on meta."""
    import torch

    for module_name, module in model.named_modules():
        for name, buffer in list(module.named_buffers(recurse=False)):
            if buffer.is_meta:
                if name == "position_ids":
                    module.register_buffer(name, torch.arange(buffer.shape[-1]).expand(buffer.shape), persistent=False)
                else:
                    raise RuntimeError(f"buffer {module_name}.{name} has no value after loading")


CONVERTED = "released_layout.json"  # what convert_released records beside the model it writes


def converted_from(model: str) -> dict:
    """What ``curate convert-model`` recorded in a directory it wrote (its source, layout and family), else {}.
    Such a directory is a native LLaVA for transformers and vLLM: it has neither the authors' prompt format nor
    a chat template, so this project's scorers ask for the original. A missing local directory fails here."""
    path = Path(prepare_source(model)) / CONVERTED
    return json.loads(path.read_text()) if path.is_file() else {}


def convert_released(model: str, destination: str | os.PathLike, *, vision_tower: str | None = None) -> Path:
    """Write a released checkpoint as a standard transformers LLaVA directory (model,
    tokenizer with the ``<image>`` token, image processor), loadable without this project."""
    import torch
    from transformers import LlavaProcessor

    from curation_pipeline.models.projector import PooledProjector

    loaded = load_released(model, vision_tower=vision_tower, device="cpu", dtype=torch.float32)
    if isinstance(loaded.model.model.multi_modal_projector, PooledProjector):
        raise UnknownLayoutError(model, "its aapool_mlp projector (average-pooled patches) has no native "
                                        "transformers class, so it cannot be written as a standard LLaVA "
                                        "directory; load it with this project instead")
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    tokenizer = loaded.tokenizer
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    if tokenizer.convert_tokens_to_ids("<image>") != loaded.image_token_id:
        raise RuntimeError("the <image> token did not land on the placeholder id")
    loaded.model.save_pretrained(destination)
    processor = LlavaProcessor(image_processor=loaded.image_processor, tokenizer=tokenizer,
                               patch_size=loaded.model.config.vision_config.patch_size,
                               vision_feature_select_strategy=loaded.model.config.vision_feature_select_strategy,
                               num_additional_image_tokens=1 if loaded.model.config.vision_feature_select_strategy
                               == "default" else 0)
    processor.save_pretrained(destination)
    (destination / CONVERTED).write_text(json.dumps(
        {"source": model, "layout": loaded.layout, "family": loaded.family,
         "pad_to_square": loaded.pad_to_square}, indent=2) + "\n")
    return destination

"""Oracle: score the tiny MLM-Filter checkpoints exactly as the authors' code does; write goldens.

Run in /work/refenv/llava (transformers 4.51.2 + LLaVA-Unified 144bc93 + MLM_Filter 7c4cd80):

    /work/refenv/llava/bin/python reference/run_mlm_filter.py

The model is loaded with ``llava.model.builder.load_pretrained_model`` and prompts / input ids /
pixel values are built with the MLM_Filter scripts' own ``DataCollatorForImagePreprocessing``
(imported from the extracted checkout, not retyped).  The only deviations from the scripts are the
CPU/float32 ones listed in reference/README.md.
"""
from __future__ import annotations

import importlib
import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = REPO / "curation_pipeline_tests" / "fixtures" / "released"
GOLD = OUT / "goldens"
SRC = Path(os.environ.get("REFENV_SRC", "/work/refenv/src"))
sys.path.insert(0, str(SRC / "MLM_Filter"))

COMMITS = {
    "Victorwz/LLaVA-Unified": "144bc93d85606c8a155183a9f9ffb2ceb56a98f7",
    "Victorwz/MLM_Filter": "7c4cd80fc1628278dcf09535b87269352c811961",
}

CASES = [
    {"image": "images/wide_48x32.png", "caption": "a red bicycle leaning against a brick wall at sunset"},
    {"image": "images/tall_30x44.png", "caption": "Café sign above 2 dogs \u2014 snowy day, 13 of them!"},
]
# Long captions (long_captions): LONG_WORDS repeated word by word, LONG_WORDS_LONG words in all.
LONG_WORDS = "bicycle wall sunset red brick"
LONG_WORDS_LONG = 1000
METRICS = ["image_text_matching", "object_detail_fulfillment", "caption_text_quality", "semantic_understanding"]

CHECKPOINTS = [
    # name, script module, conv_mode (as the brief/README fix it), max_new_tokens
    ("mlm-filter-llava-13b-tiny", "mlm_filter_scoring_datacomp_batch_inference", "llava_v1", 2),
    ("mlm-filter-llama-3-8b-tiny", "mlm_filter_scoring_datacomp_batch_inference_v2", "llama_3", 1),
    ("mlm-filter-qwen2.5-1.5b-tiny", "mlm_filter_scoring_datacomp_batch_inference_v2", "qwen_instruct", 2),
]


class _TorchFP32:
    """Stand-in for the ``torch`` module inside llava.model.builder: ``torch.float16`` -> float32.

    The builder hard-codes ``kwargs['torch_dtype'] = torch.float16`` and
    ``vision_tower.to(device=..., dtype=torch.float16)``; everything else is forwarded to torch.
    """

    float16 = torch.float32

    def __getattr__(self, name):
        return getattr(torch, name)


def versions() -> dict:
    out = {"python": platform.python_version()}
    for p in ["torch", "transformers", "tokenizers", "sentencepiece", "protobuf", "accelerate", "einops",
              "numpy", "pillow", "safetensors", "huggingface-hub", "llava"]:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    return out


def auto_conv_mode_v1(model_name: str) -> str:
    # the auto-inference of the scripts' main() (not importable on its own); recorded for information
    n = model_name.lower()
    if "llama-2" in n:
        return "llava_llama_2"
    if "v1" in n:
        return "llava_v1"
    if "mpt" in n:
        return "mpt"
    return "llava_v0"


def metric_criteria(mod) -> dict:
    # main() builds ALL_METRICS from these module constants (v1 spells one of them "cation")
    quality = getattr(mod, "criteria_caption_text_quality", None) or getattr(mod, "criteria_cation_text_quality")
    return {
        "image_text_matching": mod.criteria_image_text_matching,
        "object_detail_fulfillment": mod.criteria_object_detail_fulfillment,
        "caption_text_quality": quality,
        "semantic_understanding": mod.criteria_semantic_understanding,
    }


def main() -> None:
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    from PIL import Image
    import llava.model.builder as builder
    from llava.mm_utils import get_model_name_from_path, process_images
    from llava.utils import disable_torch_init

    builder.torch = _TorchFP32()  # patch 1: fp16 -> fp32 (CPU)
    GOLD.mkdir(parents=True, exist_ok=True)
    os.chdir(OUT)  # mm_vision_tower is the sibling directory's name

    # --long-only: write only goldens/<name>.long.{json,npz} (leaves the main goldens untouched)
    long_only = "--long-only" in sys.argv[1:]
    only = {a for a in sys.argv[1:] if not a.startswith("--")}
    for name, script, conv_mode, max_new_tokens in CHECKPOINTS:
        if only and name not in only:
            continue
        torch.manual_seed(0)
        mod = importlib.import_module(script)
        disable_torch_init()
        model_name = get_model_name_from_path(name)
        # as the scripts: load_pretrained_model(model_path, model_base, model_name, load_8bit, load_4bit, device=device)
        tokenizer, model, image_processor, context_len = builder.load_pretrained_model(
            name, None, model_name, False, False, device="cpu")
        model.config.tokenizer_padding_side = tokenizer.padding_side = "left"
        model.eval()
        assert next(model.parameters()).dtype == torch.float32

        is_v2 = script.endswith("_v2")
        criteria = metric_criteria(mod)
        digit_ids = [tokenizer.convert_tokens_to_ids(str(i)) for i in range(10)]
        # every digit is its own vocabulary entry (SentencePiece split_digits / Qwen2 \\p{N} pre-tokenizer);
        # Llama-3 groups up to 3 digits, so there the numbers 0..100 are single tokens instead
        digit_per_token = "llama-3" not in name and all(
            i not in (None, tokenizer.unk_token_id) for i in digit_ids)
        number_ids = None
        if "llama-3" in name:
            number_ids = []
            for i in range(101):
                ids = tokenizer(str(i), add_special_tokens=False)["input_ids"]
                assert len(ids) == 1
                number_ids.append(ids[0])

        def fix_v1_whitespace(input_ids):
            # patch 2 (v1 only): the v1 collator appends the hard-coded Llama-2 id 29871 ("▁");
            # the tiny SentencePiece vocab has that piece under another id.
            if is_v2:
                return input_ids
            assert int(input_ids[0, -1]) == 29871
            input_ids = input_ids.clone()
            input_ids[:, -1] = tokenizer.convert_tokens_to_ids("▁")
            return input_ids

        def generate(input_ids, pixel_values, n_new, **extra):
            kw = dict(do_sample=False, max_new_tokens=n_new, use_cache=True, **extra)
            if is_v2:
                kw["pad_token_id"] = tokenizer.pad_token_id
            else:
                kw["temperature"] = 0
            with torch.inference_mode():
                return model.generate(input_ids, images=pixel_values.to(torch.float32), output_logits=True,
                                      output_scores=True, return_dict_in_generate=True, **kw)

        if long_only:
            with torch.inference_mode():
                n_img = model.encode_images(image_processor(
                    [Image.open(CASES[0]["image"]).convert("RGB")], return_tensors="pt")["pixel_values"]).shape[1]
            long_captions(name, mod, tokenizer, model, image_processor, criteria, conv_mode, max_new_tokens,
                          digit_ids if digit_per_token else None, fix_v1_whitespace, generate, int(n_img))
            continue

        arrays: dict[str, np.ndarray] = {}
        runs = []
        cases_meta = []
        appended = None
        for ci, case in enumerate(CASES):
            image = Image.open(case["image"]).convert("RGB")  # webdataset decode("pilrgb")
            pv_pad = process_images([image], image_processor, model.config)
            cases_meta.append({"case": ci, **case, "image_size_wh": list(image.size)})
            for metric in METRICS:
                collator = mod.DataCollatorForImagePreprocessing(
                    tokenizer, image_processor, model.config.mm_use_im_start_end, criteria[metric], metric,
                    conv_mode, 2040)
                info = {"key": f"case{ci}"}
                pixel_values, input_ids, infos = collator(([image], [case["caption"]], [info]))
                input_ids = fix_v1_whitespace(input_ids)
                prompt = collator.format_text(case["caption"])
                appended = int(input_ids[0, -1])
                if metric == METRICS[0]:
                    arrays[f"case{ci}/pixel_values_script"] = pixel_values.numpy().astype(np.float32)
                    arrays[f"case{ci}/pixel_values_pad"] = pv_pad.numpy().astype(np.float32)
                out = generate(input_ids, pixel_values, max_new_tokens)
                seq = out.sequences
                # LLaVA-Unified's generate passes only inputs_embeds to HF generate, so `sequences`
                # holds the new tokens only.
                assert seq.shape[1] <= max_new_tokens
                new_ids = seq[0].tolist()
                if is_v2:
                    script_output = tokenizer.batch_decode(seq, skip_special_tokens=True)[0]
                else:
                    o = tokenizer.batch_decode(seq[:, input_ids.shape[1]:], skip_special_tokens=True)
                    script_output = [x.strip().strip("</s>") for x in o][0]
                step_logits = torch.stack([l[0] for l in out.logits]).float().numpy()
                key = f"case{ci}/{metric}"
                arrays[f"{key}/step_logits"] = step_logits
                # scores = logits after generate's logits processors (generation_config); greedy takes argmax of these
                arrays[f"{key}/step_scores"] = torch.stack([x[0] for x in out.scores]).float().numpy()
                run = {
                    "case": ci,
                    "metric": metric,
                    "prompt": prompt,
                    "input_ids": input_ids[0].tolist(),
                    "generated_ids": new_ids,
                    "generated_text": tokenizer.decode(new_ids, skip_special_tokens=True),
                    "generated_tokens": tokenizer.convert_ids_to_tokens(new_ids),
                    "script_output": script_output,
                    "npz_step_logits": f"{key}/step_logits",
                    "npz_step_scores": f"{key}/step_scores",
                }
                if digit_per_token:
                    dl = []
                    for d in digit_ids:
                        ext = torch.cat([input_ids, torch.tensor([[d]])], dim=1)
                        dl.append(generate(ext, pixel_values, 1).logits[0][0].float().numpy())
                    arrays[f"{key}/digit_next_logits"] = np.stack(dl)
                    ext = torch.cat([input_ids, torch.tensor([[digit_ids[1], digit_ids[0]]])], dim=1)
                    arrays[f"{key}/after_10_logits"] = generate(ext, pixel_values, 1).logits[0][0].float().numpy()
                    run["npz_digit_next_logits"] = f"{key}/digit_next_logits"
                    run["npz_after_10_logits"] = f"{key}/after_10_logits"
                    # sanity: the no-cache re-run after the greedy first token reproduces generate's step 2
                    if len(new_ids) >= 2 and new_ids[0] in digit_ids:
                        diff = np.abs(arrays[f"{key}/digit_next_logits"][digit_ids.index(new_ids[0])] - step_logits[1]).max()
                        run["check_step2_vs_digit_rerun_maxabs"] = float(diff)
                runs.append(run)

        # one run with LLaVA-Unified's process_images (image_aspect_ratio=pad) pixel values
        ci, metric = 1, METRICS[0]
        collator = mod.DataCollatorForImagePreprocessing(
            tokenizer, image_processor, model.config.mm_use_im_start_end, criteria[metric], metric, conv_mode, 2040)
        image = Image.open(CASES[ci]["image"]).convert("RGB")
        _, input_ids, _ = collator(([image], [CASES[ci]["caption"]], [{}]))
        input_ids = fix_v1_whitespace(input_ids)
        pv_pad = torch.from_numpy(arrays[f"case{ci}/pixel_values_pad"])
        out = generate(input_ids, pv_pad, max_new_tokens)
        arrays["pad_run/step_logits"] = torch.stack([l[0] for l in out.logits]).float().numpy()
        pad_run = {"case": ci, "metric": metric, "pixel_values": f"case{ci}/pixel_values_pad",
                   "input_ids": input_ids[0].tolist(), "generated_ids": out.sequences[0].tolist(),
                   "generated_text": tokenizer.decode(out.sequences[0].tolist(), skip_special_tokens=True),
                   "npz_step_logits": "pad_run/step_logits"}

        gc = model.generation_config
        gen_cfg = {k: getattr(gc, k) for k in ["eos_token_id", "pad_token_id", "bos_token_id", "repetition_penalty",
                                               "do_sample", "temperature", "top_p", "top_k"]}
        vt = model.get_vision_tower()
        with torch.inference_mode():
            n_img = model.encode_images(torch.from_numpy(arrays["case0/pixel_values_script"])).shape[1]
        golden = {
            "schema_version": 1,
            "checkpoint": name,
            "reference": {
                "commits": COMMITS,
                "script": f"{script}.py",
                "loader": "llava.model.builder.load_pretrained_model(path, None, model_name, False, False, device='cpu')",
                "collator": f"{script}.DataCollatorForImagePreprocessing(tokenizer, image_processor, "
                            f"mm_use_im_start_end, criteria, task, conv_mode, max_len=2040)",
            },
            "versions": versions(),
            "settings": {
                "conv_mode": conv_mode,
                "script_auto_conv_mode": auto_conv_mode_v1(model_name) if not is_v2 else
                ("llama_3" if "llama-3" in name else "qwen_instruct"),
                "max_new_tokens": max_new_tokens,
                "max_len": 2040,
                "batch_size": 1,
                "dtype": "float32",
                "device": "cpu",
                "attn_implementation": model.config._attn_implementation,
                "vision_attn_implementation": vt.vision_tower.config._attn_implementation,
                "do_sample": False,
                "generation_config": gen_cfg,
                "generate_extra_kwargs": {"temperature": 0} if not is_v2 else {"pad_token_id": tokenizer.pad_token_id},
                "tokenizer_padding_side": "left",
                "image_token_index": -200,
                "appended_token_id": appended,
                "appended_token": tokenizer.convert_ids_to_tokens(appended),
                "appended_token_rule": "hard-coded 29871 in the v1 script (the SentencePiece '\u2581' piece; this tiny "
                                       "vocab's id for it is used)" if not is_v2 else
                                       "tokenizer(' ')['input_ids'][-1]",
                "script_image_preprocessing": "image_processor(images, return_tensors='pt')['pixel_values'] (no pad)",
                "config_image_aspect_ratio": getattr(model.config, "image_aspect_ratio", None),
            },
            "tokenizer": {
                "class": type(tokenizer).__name__,
                "len": len(tokenizer),
                "bos_token_id": tokenizer.bos_token_id,
                "eos_token_id": tokenizer.eos_token_id,
                "pad_token_id": tokenizer.pad_token_id,
                "digit_token_ids": digit_ids,
                "number_token_ids": number_ids,
                "digit_per_token": digit_per_token,
            },
            "model": {
                "class": type(model).__name__,
                "logits_dim": int(arrays["case0/image_text_matching/step_logits"].shape[-1]),
                "config_vocab_size_on_disk": json.loads((Path(name) / "config.json").read_text())["vocab_size"],
                "n_image_tokens": int(n_img),
                "vision_tower": vt.vision_tower_name,
                "vision_select_layer": model.config.mm_vision_select_layer,
                "context_len": context_len,
            },
            "cases": cases_meta,
            "runs": runs,
            "pad_run": pad_run,
            "npz": f"{name}.npz",
        }
        (GOLD / f"{name}.json").write_text(json.dumps(golden, indent=1, ensure_ascii=False) + "\n")
        np.savez_compressed(GOLD / f"{name}.npz", **{k: v.astype(np.float32) for k, v in arrays.items()})
        print(name, "texts:", [(r["case"], r["metric"][:5], r["generated_text"]) for r in runs],
              "pad:", pad_run["generated_text"])
        long_captions(name, mod, tokenizer, model, image_processor, criteria, conv_mode, max_new_tokens,
                      digit_ids if digit_per_token else None, fix_v1_whitespace, generate, int(n_img))


class _Force:
    """A logits processor forcing the first generated tokens (then a no-op)."""

    def __init__(self, tokens):
        self.tokens, self.step = list(tokens), 0

    def __call__(self, input_ids, scores):
        if self.step < len(self.tokens):
            keep = scores[:, self.tokens[self.step]].clone()
            scores = torch.full_like(scores, -float("inf"))
            scores[:, self.tokens[self.step]] = keep
        self.step += 1
        return scores


def long_caption(words: int) -> str:
    """The first ``words`` words of LONG_WORDS repeated (deterministic, recorded in the golden)."""
    base = LONG_WORDS.split()
    return " ".join(base[k % len(base)] for k in range(words))


def long_captions(name, mod, tokenizer, model, image_processor, criteria, conv_mode, max_new_tokens, digit_ids,
                  fix_v1_whitespace, generate, n_img) -> None:
    """Captions long enough for the reference's two cuts: the collator's ``max_len`` 2040 on the token row
    (image as one id), and LLaVA-Unified's ``prepare_inputs_labels_for_multimodal`` cutting the *embedded*
    sequence (image features spliced in) to ``config.tokenizer_model_max_length``, which drops the end of
    the prompt (appended whitespace, "ASSISTANT:", ...).  Written to ``goldens/<name>.long.{json,npz}``.

    - ``long``: LONG_WORDS_LONG words, far over 2040 tokens: both cuts (the rows of the four metrics are
      the same caption prefix, so only image_text_matching is run);
    - ``near`` (only where ``tokenizer_model_max_length < 2040 + n_image_tokens``, i.e. the second cut can
      happen at all): the most words for which the image_text_matching row is at most
      ``tokenizer_model_max_length - n_image_tokens + 6`` tokens long before appending: no 2040 cut, but the
      embedded cut takes the last ~6 tokens.  All four metrics (their criteria differ in length).
    """
    from PIL import Image
    from transformers import LogitsProcessorList

    limit = getattr(model.config, "tokenizer_model_max_length", None)
    image = Image.open(CASES[0]["image"]).convert("RGB")

    def collate(caption, metric):
        collator = mod.DataCollatorForImagePreprocessing(
            tokenizer, image_processor, model.config.mm_use_im_start_end, criteria[metric], metric, conv_mode, 2040)
        pixel_values, input_ids, _ = collator(([image], [caption], [{}]))
        return pixel_values, fix_v1_whitespace(input_ids)

    captions = {"long": (LONG_WORDS_LONG, METRICS[:1])}
    if limit is not None and limit < 2040 + n_img:
        target = limit - n_img + 6
        lo, hi = 1, LONG_WORDS_LONG  # largest word count whose row (before the appended token) fits target
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if collate(long_caption(mid), METRICS[0])[1].shape[1] - 1 <= target:
                lo = mid
            else:
                hi = mid - 1
        captions["near"] = (lo, METRICS)

    arrays: dict[str, np.ndarray] = {}
    runs = []
    for label, (words, metrics) in captions.items():
        caption = long_caption(words)
        for metric in metrics:
            pixel_values, input_ids = collate(caption, metric)
            out = generate(input_ids, pixel_values, max_new_tokens)
            new_ids = out.sequences[0].tolist()
            key = f"{label}/{metric}"
            arrays[f"{key}/input_ids"] = input_ids[0].numpy().astype(np.int64)
            arrays[f"{key}/step_logits"] = torch.stack([l[0] for l in out.logits]).float().numpy()
            text_len = int(input_ids.shape[1]) - 1  # before the appended whitespace token
            run = {
                "caption": label, "words": words, "metric": metric,
                "text_tokens": text_len,
                "row_len": int(input_ids.shape[1]),
                "embedded_len_before_cut": int(input_ids.shape[1]) - 1 + n_img,
                "embedded_len": min(int(input_ids.shape[1]) - 1 + n_img, limit or 10 ** 9),
                "npz_input_ids": f"{key}/input_ids",
                "generated_ids": new_ids,
                "generated_text": tokenizer.decode(new_ids, skip_special_tokens=True),
                "npz_step_logits": f"{key}/step_logits",
            }
            if digit_ids is not None and metric == METRICS[0]:
                # Not the main goldens' re-run on input_ids + [digit]: that row would be cut again to
                # tokenizer_model_max_length, dropping the digit.  The reference's own decoding continues the
                # cut sequence through the KV cache, so the next-digit logits come from the same `generate`
                # with the first token(s) forced (raw `output_logits`, before any processor).
                def forced(tokens):
                    out = generate(input_ids, pixel_values, len(tokens) + 1,
                                   logits_processor=LogitsProcessorList([_Force(tokens)]))
                    assert out.sequences[0, :len(tokens)].tolist() == tokens
                    return out.logits[len(tokens)][0].float().numpy()

                arrays[f"{key}/digit_next_logits"] = np.stack([forced([d]) for d in digit_ids])
                arrays[f"{key}/after_10_logits"] = forced([digit_ids[1], digit_ids[0]])
                run["npz_digit_next_logits"] = f"{key}/digit_next_logits"
                run["npz_after_10_logits"] = f"{key}/after_10_logits"
            runs.append(run)
    golden = {
        "schema_version": 1,
        "checkpoint": name,
        "about": "long captions: the collator's 2040 cut and the embedded cut to tokenizer_model_max_length "
                 "(reference/run_mlm_filter.py long_captions)",
        "settings": {"tokenizer_model_max_length": limit, "n_image_tokens": n_img, "max_len": 2040,
                     "image": CASES[0]["image"], "long_words": LONG_WORDS, "batch_size": 1},
        "captions": {label: long_caption(words) for label, (words, _) in captions.items()},
        "runs": runs,
        "npz": f"{name}.long.npz",
    }
    (GOLD / f"{name}.long.json").write_text(json.dumps(golden, indent=1, ensure_ascii=False) + "\n")
    np.savez_compressed(GOLD / f"{name}.long.npz", **arrays)
    print(name, "long:", [(r["caption"], r["metric"][:5], r["row_len"], r["generated_text"]) for r in runs])


if __name__ == "__main__":
    main()

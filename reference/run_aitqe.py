"""Oracle: run the tiny AITQE checkpoint through the authors' inference code; write a golden.

Run in /work/refenv/aitqe (transformers 4.41.2; AITQE 2810aee imported from /work/refenv/src/AITQE,
never copied into the project):

    /work/refenv/aitqe/bin/python reference/run_aitqe.py [--edge-only]

``inference.load_model`` and ``inference.eval_single_node`` are called as they are; runtime patches
(see reference/README.md): the inner Qwen2 is built with attention "eager" instead of
"flash_attention_2", ``MMForCausalLM.from_pretrained`` gets device_map="cpu"/float32 instead of
cuda/bfloat16, and ``model.generate`` is wrapped to also return per-step logits.
"""
from __future__ import annotations

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
NAME = "aitqe-tiny"
N_LOGIT_STEPS = 8

CASES = [
    {"image": "images/wide_48x32.png", "caption": "a red bicycle leaning against a brick wall at sunset"},
    {"image": "images/tall_30x44.png", "caption": "Café sign above 2 dogs \u2014 snowy day, 13 of them!"},
]
# Written to goldens/aitqe-tiny.edge.{json,npz} (``--edge-only``: only those).
EDGE_CASES = [
    {"image": "images/wide_48x32.png", "caption": "  a red bicycle leaning against a brick wall at sunset \n"},
]


def versions() -> dict:
    out = {"python": platform.python_version()}
    for p in ["torch", "transformers", "tokenizers", "huggingface-hub", "accelerate", "numpy", "pillow",
              "safetensors"]:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    return out


def main() -> None:
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    sys.path.insert(0, str(SRC / "AITQE"))
    from transformers import Qwen2ForCausalLM

    # patch 1: no flash-attn on CPU -> the inner Qwen2 (built with _from_config(attn_implementation=
    # "flash_attention_2") in MMForCausalLM.__init__) uses "eager"
    orig_from_config = Qwen2ForCausalLM._from_config.__func__

    def _from_config(cls, config, **kw):
        kw["attn_implementation"] = "eager"
        return orig_from_config(cls, config, **kw)

    Qwen2ForCausalLM._from_config = classmethod(_from_config)

    import inference
    import modeling_mm

    # patch 2: load_model hard-codes device_map=f'cuda:{gpu_id}', torch_dtype=torch.bfloat16
    orig_fp = modeling_mm.MMForCausalLM.from_pretrained.__func__

    def from_pretrained(cls, path, *a, **kw):
        kw["device_map"] = "cpu"
        kw["torch_dtype"] = torch.float32
        return orig_fp(cls, path, *a, **kw)

    modeling_mm.MMForCausalLM.from_pretrained = classmethod(from_pretrained)

    os.chdir(OUT)  # vision_model_name_or_path is the sibling directory's name
    torch.manual_seed(0)
    model, tokenizer = inference.load_model(NAME, 0)
    assert model.dtype == torch.float32
    assert model.model.config._attn_implementation == "eager", model.model.config._attn_implementation

    # patch 3: capture what eval_single_node passes to generate, plus per-step logits
    captured = []
    orig_generate = model.generate

    def generate(**kw):
        out = orig_generate(**kw, output_logits=True, return_dict_in_generate=True)
        captured.append((kw, out))
        return out.sequences

    model.generate = generate

    def run(case, output_all, name, arrays, runs, ci):
        captured.clear()
        returned = inference.eval_single_node(model, tokenizer, case["image"], case["caption"],
                                              output_all=output_all, gpu_id=0)
        (kw, out), = captured
        prompt = inference.process_prompt(case["image"], case["caption"])
        dp = model.bind_processor(tokenizer, config=model.config).data_processor
        processed = dp.add_newline_from_end_token(dp.apply_pattern_on_mmobj(prompt))
        raw = dp(prompt)
        input_ids = kw["input_ids"]
        L = input_ids.shape[1]
        new_ids = out.sequences[0, L:].tolist()
        arrays[f"{name}/pixel_values"] = kw["images"].float().numpy()
        arrays[f"{name}/logits_first{N_LOGIT_STEPS}"] = torch.stack(
            [l[0] for l in out.logits[:N_LOGIT_STEPS]]).float().numpy()
        ov = tokenizer.convert_tokens_to_ids("<Overall>")
        runs.append({
            "name": name,
            "case": ci,
            "image": case["image"],
            "caption": case["caption"],
            "output_all": output_all,
            "generate_kwargs": ({"do_sample": False, "num_beams": 1, "max_new_tokens": 384, "use_cache": True}
                                if output_all else
                                {"do_sample": False, "stop_strings": ["<Overall>"], "tokenizer": "<tokenizer>",
                                 "num_beams": 1, "max_new_tokens": 384, "use_cache": True}),
            "prompt": prompt,
            "processed_text": processed,
            "raw_input_ids": raw["input_ids"].tolist(),
            "input_ids": input_ids[0].tolist(),
            "attention_mask": kw["attention_mask"][0].int().tolist(),
            "batch_image_patch": kw["batch_image_patch"].tolist(),
            "batch_image_size": kw["batch_image_size"].tolist(),
            "batch_mm_obj_type": kw["batch_mm_obj_type"],
            "batch_mm_obj_image_aspect_ratio": kw["batch_mm_obj_image_aspect_ratio"],
            "generated_ids": new_ids,
            "n_generated": len(new_ids),
            "overall_positions": [i for i, t in enumerate(new_ids) if t == ov],
            "decoded": tokenizer.batch_decode(out.sequences[:, L:], skip_special_tokens=True)[0],
            "returned": returned,
            "npz_pixel_values": f"{name}/pixel_values",
            "npz_logits": f"{name}/logits_first{N_LOGIT_STEPS}",
        })
        print(name, len(new_ids), runs[-1]["overall_positions"][:5], repr(returned[:80]))

    # Edge cases (goldens/aitqe-tiny.edge.{json,npz}, same run schema): process_prompt inserts the
    # caption as it is (its data_processor's strip sits under `if not self.is_infra`).
    edge_arrays: dict[str, np.ndarray] = {}
    edge_runs = []
    for k, case in enumerate(EDGE_CASES):
        run(case, False, f"edge{k}_stop_overall", edge_arrays, edge_runs, k)
    (GOLD / f"{NAME}.edge.json").write_text(json.dumps(
        {"schema_version": 1, "checkpoint": NAME, "about": "edge-case captions, as the runs of aitqe-tiny.json "
         "(reference/run_aitqe.py EDGE_CASES); 'case' indexes EDGE_CASES",
         "reference": {"commits": {"hanhuang22/AITQE": "2810aeeddb2abc64545e6cb1bbfd3edfe3ef9b6b"}},
         "versions": versions(), "runs": edge_runs, "npz": f"{NAME}.edge.npz"},
        indent=1, ensure_ascii=False) + "\n")
    np.savez_compressed(GOLD / f"{NAME}.edge.npz", **{k: v.astype(np.float32) for k, v in edge_arrays.items()})
    if "--edge-only" in sys.argv[1:]:
        return

    arrays: dict[str, np.ndarray] = {}
    runs = []
    plan = [(0, True), (1, True), (1, False)]
    for ci, output_all in plan:
        run(CASES[ci], output_all, f"case{ci}_{'output_all' if output_all else 'stop_overall'}", arrays, runs, ci)

    cfg = json.loads((Path(NAME) / "config.json").read_text())
    golden = {
        "schema_version": 1,
        "checkpoint": NAME,
        "reference": {
            "commits": {"hanhuang22/AITQE": "2810aeeddb2abc64545e6cb1bbfd3edfe3ef9b6b"},
            "files": ["inference.py", "modeling_mm.py", "data_processor.py"],
            "loader": "inference.load_model(path, 0)",
            "runner": "inference.eval_single_node(model, tokenizer, image_path, caption, output_all, 0)",
        },
        "versions": versions(),
        "settings": {
            "dtype": "float32",
            "device": "cpu",
            "attn_implementation": "eager (reference: flash_attention_2, bfloat16, cuda)",
            "tokenizer_padding_side": "left",
            "image_token_in_input_ids": -1,
            "config_image_token_index": cfg["image_token_index"],
        },
        "tokenizer": {
            "class": type(tokenizer).__name__,
            "len": len(tokenizer),
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            "overall_token_id": tokenizer.convert_tokens_to_ids("<Overall>"),
            "digit_token_ids": [tokenizer.convert_tokens_to_ids(str(i)) for i in range(10)],
        },
        "model": {
            "class": type(model).__name__,
            "logits_dim": int(arrays[runs[0]["npz_logits"]].shape[-1]),
            "config_vocab_size": cfg["vocab_size"],
            "n_image_tokens": cfg["image_tile_tokens"],
            "vision_feature": "vision_model(images, output_hidden_states=True).hidden_states[-2] (no CLS drop for siglip)",
            "generation_eos_token_id": model.generation_config.eos_token_id,
        },
        "runs": runs,
        "npz": f"{NAME}.npz",
    }
    GOLD.mkdir(parents=True, exist_ok=True)
    (GOLD / f"{NAME}.json").write_text(json.dumps(golden, indent=1, ensure_ascii=False) + "\n")
    np.savez_compressed(GOLD / f"{NAME}.npz", **{k: v.astype(np.float32) for k, v in arrays.items()})


if __name__ == "__main__":
    main()

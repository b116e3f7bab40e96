"""The released checkpoints, loaded by this project, score exactly as the authors' code does.

``fixtures/released/`` holds tiny random checkpoints in each released layout (built by the
authors' own classes) and goldens written by the authors' code (LLaVA-Unified with
MLM_Filter's scoring scripts; AITQE's ``inference.py``) in venvs pinned to their
versions: ``reference/`` regenerates them. Here the same checkpoints load through
``models/released.py`` on transformers' native classes, and must reproduce the prompt,
token ids, pixels, logits (1e-4 relative) and greedy text.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from curation_pipeline.models.released import UnknownLayoutError, load_released, released_layout
from curation_pipeline.pairs import PairBatch
from curation_pipeline.rewriting.aitqe import AitqeRewriter, parse_aitqe_output
from curation_pipeline.scoring.mlm import MlmFilterScorer
from curation_pipeline.scoring.mlm.score import digit_split_expectation, whole_number_expectation
from curation_pipeline.scoring.mlm.prompts import METRIC_NAMES
from curation_pipeline_tests.tiny_models import RELEASED

GOLDENS = RELEASED / "goldens"
MLM = {
    "mlm-filter-llava-13b-tiny": ("llava", "llava_v1", "clip-vit-tiny-patch8-32"),
    "mlm-filter-llama-3-8b-tiny": ("llava_llama", "llama_3", "clip-vit-tiny-patch8-32"),
    "mlm-filter-qwen2.5-1.5b-tiny": ("llava_qwen", "qwen_instruct", "siglip-tiny-patch8-32"),
}
SHORT = {v: k for k, v in METRIC_NAMES.items()}


def _authors_score(generated_text: str, script: str) -> float:
    """The authors' reading of a greedy reply, a verbatim copy of their logic (not this project's parser,
    so parity is not checked against itself). The string MLM_Filter @ 7c4cd80 stores (MIT): the v1 script
    ``mlm_filter_scoring_datacomp_batch_inference.py`` stores ``output.strip().strip("</s>")`` (line 326; run
    as pinned its slice is empty, see reference/README.md: the reply it means to store is read here), the
    ``_v2`` script the decoded text as is. Then Open-Qwen2VL @ 0d76f9f (MIT)
    ``data_filtering/baselines/apply_filter.py`` ``above_threshold_decision``, minus the threshold: the int,
    NaN where its ``int()`` raises (the pair is never kept)."""
    text = generated_text
    if script == "mlm_filter_scoring_datacomp_batch_inference.py":
        text = text.strip().strip("</s>")
    # --- verbatim from above_threshold_decision ---
    if "\n" in text:
        text = text.split("\n")[0]
    text = text.strip(",").strip(";")
    try:
        return float(int(text))
    except ValueError:
        return math.nan


def _golden(name):
    return json.loads((GOLDENS / f"{name}.json").read_text()), np.load(GOLDENS / f"{name}.npz")


def _close(ours, ref):
    ours, ref = np.asarray(ours, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(ref).max())))


def _collapse(ids, image_id, marker):
    """Our expanded image placeholders as the reference's single (or per-token) marker."""
    out = []
    for token in ids:
        if token == image_id:
            if marker == -1 or not out or out[-1] != marker:
                out.append(marker)
        else:
            out.append(token)
    return out


@pytest.fixture(scope="module", params=list(MLM))
def mlm(request):
    name = request.param
    scorer = MlmFilterScorer(str(RELEASED / name), vision_tower=str(RELEASED / MLM[name][2]), min_mass=0.0,
                             batch_size=2)
    return name, scorer, *_golden(name)


def _case_image(golden, case):
    return Image.open(RELEASED / golden["cases"][case]["image"]).convert("RGB")


def test_layout_family_and_tokens(mlm):
    name, scorer, golden, _ = mlm
    layout, family, _ = MLM[name]
    assert (scorer.released.layout, scorer.prompts.name) == (layout, family)
    assert scorer.released.image_tokens == golden["model"]["n_image_tokens"]
    assert scorer._appended == golden["settings"]["appended_token_id"]
    assert scorer.max_new_tokens == golden["settings"]["max_new_tokens"]


def test_prompts_ids_and_pixels_are_the_references(mlm):
    name, scorer, golden, arrays = mlm
    for run in golden["runs"]:
        case = golden["cases"][run["case"]]
        metric = SHORT[run["metric"]]
        assert scorer.prompts.prompt(case["caption"], metric) == run["prompt"]
        ours = scorer._released_ids(case["caption"])[metric]
        assert _collapse(ours, scorer.released.image_token_id, -200) == run["input_ids"]
    for k in range(len(golden["cases"])):
        image = _case_image(golden, k)
        _close(scorer.released.pixel_values([image], pad=False), arrays[f"case{k}/pixel_values_script"])
        _close(scorer.released.pixel_values([image], pad=True), arrays[f"case{k}/pixel_values_pad"])


def _forward(scorer, ids, pixels):
    with torch.no_grad():
        logits = scorer.model(input_ids=torch.tensor([ids]), pixel_values=pixels).logits[0, -1]
    return logits[:scorer.released.image_token_id].numpy()


def test_logits_at_the_score_positions_match(mlm):
    name, scorer, golden, arrays = mlm
    digits = golden["tokenizer"]["digit_token_ids"]
    for run in golden["runs"]:
        case = golden["cases"][run["case"]]
        ids = scorer._released_ids(case["caption"])[SHORT[run["metric"]]]
        pixels = scorer.released.pixel_values([_case_image(golden, run["case"])], pad=False)
        _close(_forward(scorer, ids, pixels), arrays[run["npz_step_logits"]][0])
        if run.get("npz_digit_next_logits"):
            after = arrays[run["npz_digit_next_logits"]]
            for d in (0, 1, 5, 9):
                _close(_forward(scorer, ids + [digits[d]], pixels), after[d])
            _close(_forward(scorer, ids + [digits[1], digits[0]], pixels), arrays[run["npz_after_10_logits"]])


def _reference_expectation(golden, arrays, run):
    """The expected score from the reference's own logits."""
    def probs(logits):
        p = torch.tensor(logits, dtype=torch.float64).softmax(-1).numpy()
        return p

    first = probs(arrays[run["npz_step_logits"]][0])
    if golden["tokenizer"]["digit_per_token"]:
        digits = golden["tokenizer"]["digit_token_ids"]
        after = arrays[run["npz_digit_next_logits"]]
        second = np.vstack([probs(after[d])[digits] for d in range(10)])
        return digit_split_expectation(first[digits], second, probs(arrays[run["npz_after_10_logits"]])[digits])[0]
    return whole_number_expectation(first[golden["tokenizer"]["number_token_ids"]])[0]


def test_scores_greedy_and_expected_match_the_reference(mlm):
    name, scorer, golden, arrays = mlm
    cases = golden["cases"]
    batch = PairBatch([str(k) for k in range(len(cases))], [c["caption"] for c in cases],
                      [_case_image(golden, k) for k in range(len(cases))])
    shared, separate = scorer.score(batch), scorer.score_separate(batch)
    generate = MlmFilterScorer.__new__(MlmFilterScorer)
    generate.__dict__.update(scorer.__dict__, mode="generate")
    generated = generate.score(batch)
    for run in golden["runs"]:
        metric, row = SHORT[run["metric"]], run["case"]
        if golden["reference"]["script"].endswith("_v2.py"):  # the string the v2 script stored, as decoded here
            assert run["script_output"] == run["generated_text"], (name, run)
        want = _authors_score(run["generated_text"], golden["reference"]["script"])
        for frame in (shared, separate, generated):
            got = frame.loc[row, f"mlm_{metric}"]
            assert got == want or (math.isnan(got) and math.isnan(want)), (name, run["metric"], row, got, want)
        expected = _reference_expectation(golden, arrays, run)
        assert shared.loc[row, f"mlm_{metric}_expected"] == pytest.approx(expected, rel=1e-4)
        assert separate.loc[row, f"mlm_{metric}_expected"] == pytest.approx(expected, rel=1e-4)
    assert any(not math.isnan(v) for v in shared[[f"mlm_{m}" for m in scorer.metrics]].to_numpy().ravel())


def test_pad_to_square_run(mlm):
    name, scorer, golden, arrays = mlm
    run = golden["pad_run"]
    case = golden["cases"][run["case"]]
    pixels = scorer.released.pixel_values([_case_image(golden, run["case"])], pad=True)
    _close(pixels, arrays[run["pixel_values"]])
    ids = scorer._released_ids(case["caption"])[SHORT[run["metric"]]]
    assert _collapse(ids, scorer.released.image_token_id, -200) == run["input_ids"]
    _close(_forward(scorer, ids, pixels), arrays[run["npz_step_logits"]][0])


def test_long_captions_are_cut_where_the_reference_cuts(mlm):
    """Goldens ``<name>.long``: the collator's 2040 cut, then LLaVA-Unified cutting the *expanded* sequence
    to ``tokenizer_model_max_length`` (the prompt's end is lost; the score is read where the cut falls)."""
    name, scorer, main_golden, _ = mlm
    golden = json.loads((GOLDENS / f"{name}.long.json").read_text())
    arrays = np.load(GOLDENS / golden["npz"])
    limit = golden["settings"]["tokenizer_model_max_length"]
    assert scorer.released.max_length == limit
    image = Image.open(RELEASED / golden["settings"]["image"]).convert("RGB")
    pixels = scorer.released.pixel_values([image], pad=False)
    image_id, n_image = scorer.released.image_token_id, scorer.released.image_tokens
    for run in golden["runs"]:
        row = arrays[run["npz_input_ids"]].tolist()
        expanded = [t for token in row for t in ([image_id] * n_image if token == -200 else [token])]
        ours = scorer._released_ids(golden["captions"][run["caption"]])[SHORT[run["metric"]]]
        assert ours == expanded[:limit] and len(ours) == run["embedded_len"], (name, run["caption"], run["metric"])
        _close(_forward(scorer, ours, pixels), arrays[run["npz_step_logits"]][0])
    assert any(r["embedded_len"] < r["embedded_len_before_cut"] for r in golden["runs"]) or limit > 2040 + n_image

    labels = list(golden["captions"])
    batch = PairBatch(labels + ["short"], [golden["captions"][k] for k in labels] + [main_golden["cases"][0]["caption"]],
                      [image] * (len(labels) + 1))
    shared, separate = scorer.score(batch), scorer.score_separate(batch)
    generate = MlmFilterScorer.__new__(MlmFilterScorer)
    generate.__dict__.update(scorer.__dict__, mode="generate")
    generated = generate.score(batch)
    reference = {**main_golden, "runs": None}
    for run in golden["runs"]:
        metric, row = SHORT[run["metric"]], labels.index(run["caption"])
        want = _authors_score(run["generated_text"], main_golden["reference"]["script"])
        for frame in (shared, separate, generated):
            got = frame.loc[row, f"mlm_{metric}"]
            assert got == want or (math.isnan(got) and math.isnan(want)), (name, run["caption"], metric, got, want)
        if run.get("npz_digit_next_logits") or not main_golden["tokenizer"]["digit_per_token"]:
            expected = _reference_expectation(reference, arrays, run)
            assert shared.loc[row, f"mlm_{metric}_expected"] == pytest.approx(expected, rel=1e-4)
            assert separate.loc[row, f"mlm_{metric}_expected"] == pytest.approx(expected, rel=1e-4)


# --- AITQE -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def aitqe():
    rewriter = AitqeRewriter(str(RELEASED / "aitqe-tiny"), batch_size=1,
                             vision_tower=str(RELEASED / "siglip-tiny-patch8-32"))
    return rewriter, *_golden("aitqe-tiny")


@pytest.mark.parametrize("golden_name", ["aitqe-tiny", "aitqe-tiny.edge"])
def test_aitqe_ids_pixels_logits_and_greedy_text(aitqe, golden_name):
    """``aitqe-tiny.edge``: a caption with leading/trailing whitespace, which the reference keeps."""
    rewriter = aitqe[0]
    golden, arrays = _golden(golden_name)
    generator = rewriter.generator
    released = generator.released
    assert released.layout == "mm" and rewriter.max_new_tokens == 384
    for run in golden["runs"]:
        instruction = rewriter.instruction(run["caption"])
        ids = generator.token_ids(instruction)
        assert _collapse(ids, released.image_token_id, -1) == run["input_ids"]
        image = Image.open(RELEASED / run["image"]).convert("RGB")
        pixels = released.pixel_values([image])
        _close(pixels, arrays[run["npz_pixel_values"]])
        steps = arrays[run["npz_logits"]]
        with torch.no_grad():
            full = torch.tensor([ids + run["generated_ids"][:len(steps) - 1]])
            logits = released.model(input_ids=full, pixel_values=pixels).logits[0, len(ids) - 1:]
        _close(logits[:, :steps.shape[1]].numpy(), steps)
        generator.stop_strings = None if run["output_all"] else ["<Overall>"]
        [reply] = generator.generate([image], [instruction])
        assert reply == run["decoded"].strip()


def test_aitqe_rewriter_returns_the_parsed_reference_reply(aitqe):
    rewriter, golden, _ = aitqe
    rewriter.generator.stop_strings = ["<Overall>"]
    run = next(r for r in golden["runs"] if not r["output_all"])
    image = Image.open(RELEASED / run["image"]).convert("RGB")
    [candidate] = rewriter.rewrite(PairBatch(["k"], [run["caption"]], [image]))
    parsed = parse_aitqe_output(run["decoded"].strip())
    assert candidate.raw == run["decoded"].strip() and candidate.caption == parsed.recaption


# --- image processor ------------------------------------------------------------------------


@pytest.mark.parametrize("tower", ["clip-vit-tiny-patch8-32", "siglip-tiny-patch8-32"])
def test_towers_image_processor_is_the_pil_one_even_where_torchvision_is_installed(tower, monkeypatch):
    """The references resize with PIL (transformers 4.41/4.51 processors); transformers 5 takes its
    torchvision backend (other pixel values) whenever torchvision imports. Torchvision is not installed
    here, so its presence is simulated: the auto class then picks a stand-in for the torchvision class."""
    from transformers import AutoImageProcessor

    from curation_pipeline.models.released import _tower

    auto = pytest.importorskip("transformers.models.auto.image_processing_auto")
    backends = pytest.importorskip("transformers.image_processing_backends")
    if not hasattr(auto, "_load_backend_class"):
        pytest.skip("this transformers has no backend resolution to simulate")
    real = auto._load_backend_class

    class TorchvisionStandIn:
        @classmethod
        def from_dict(cls, config_dict, *args, **kwargs):
            return cls()

    monkeypatch.setattr(auto, "is_torchvision_available", lambda: True)
    monkeypatch.setattr(auto, "_load_backend_class", lambda base, backend, *a, **k: TorchvisionStandIn
                        if backend == "torchvision" else real(base, backend, *a, **k))
    assert isinstance(AutoImageProcessor.from_pretrained(str(RELEASED / tower)), TorchvisionStandIn)
    processor = _tower(str(RELEASED / tower), None)[2]
    assert isinstance(processor, backends.PilBackend), type(processor)


# --- loading errors ------------------------------------------------------------------------


def test_unknown_layout_names_its_type_and_the_supported_ones(tmp_path):
    config = json.loads((RELEASED / "mlm-filter-llava-13b-tiny" / "config.json").read_text())
    config["model_type"] = "llava_mistral"
    with pytest.raises(UnknownLayoutError, match=r"'llava_mistral'.*llava, llava_llama, llava_qwen, mm"):
        released_layout(config)


def test_a_checkpoint_wrapping_the_image_in_start_and_end_tokens_is_refused(tmp_path):
    """The reference's format_text wraps the image token when the config says mm_use_im_start_end; the released
    checkpoints do not, and a prompt without the wrapping would score such a checkpoint wrongly, silently."""
    import shutil

    copy = tmp_path / "wrapped"
    shutil.copytree(RELEASED / "mlm-filter-llava-13b-tiny", copy)
    config = json.loads((copy / "config.json").read_text())
    assert config["mm_use_im_start_end"] is False
    config["mm_use_im_start_end"] = True
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnknownLayoutError, match="mm_use_im_start_end is true"):
        load_released(str(copy), vision_tower=str(RELEASED / "clip-vit-tiny-patch8-32"))


def test_missing_vision_tower_says_how_to_give_it():
    with pytest.raises(Exception, match="vision_tower"):
        load_released(str(RELEASED / "mlm-filter-llava-13b-tiny"), vision_tower=None)


def test_convert_model_writes_a_directory_plain_transformers_loads(tmp_path):
    from click.testing import CliRunner
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from curation_pipeline.cli import main

    source, tower = RELEASED / "mlm-filter-llama-3-8b-tiny", RELEASED / "clip-vit-tiny-patch8-32"
    result = CliRunner().invoke(main, ["convert-model", str(source), str(tmp_path / "out"), "--vision-tower", str(tower)])
    assert result.exit_code == 0, result.output
    native = LlavaForConditionalGeneration.from_pretrained(tmp_path / "out").eval()
    processor = AutoProcessor.from_pretrained(tmp_path / "out")
    ours = load_released(str(source), vision_tower=str(tower))
    image = Image.open(RELEASED / "images" / "wide_48x32.png").convert("RGB")
    inputs = processor(text=["A photo: <image>\nText Caption: a dog"], images=[image], return_tensors="pt")
    assert int((inputs["input_ids"] == ours.image_token_id).sum()) == ours.image_tokens
    with torch.no_grad():
        _close(native(**inputs).logits.numpy(), ours.model(**inputs).logits.numpy())


def test_a_converted_mlm_filter_directory_is_refused_naming_the_original(tmp_path):
    """The converted directory has a native LLaVA config: taken for a chat VLM, it was refused for want of a
    chat template, or (with one in its tokenizer) scored silently with the zero-shot paraphrase, to which the
    paper's thresholds do not apply. The scorer names the checkpoint to give instead."""
    from curation_pipeline.models.loading import ModelUnavailableError
    from curation_pipeline.models.released import convert_released
    from curation_pipeline.scoring.mlm.scorer import MlmFilterScorer

    source = RELEASED / "mlm-filter-llama-3-8b-tiny"
    out = convert_released(str(source), tmp_path / "out", vision_tower=str(RELEASED / "clip-vit-tiny-patch8-32"))
    config = json.loads((out / "tokenizer_config.json").read_text())
    (out / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": "{{ messages }}"}))
    with pytest.raises(ModelUnavailableError, match=f"`curate convert-model` wrote it from '{source}'.*give the "
                                                    "original checkpoint"):
        MlmFilterScorer(str(out), device="cpu")

def test_convert_refuses_the_pooled_projector_with_a_reason(tmp_path):
    from curation_pipeline.models.released import convert_released

    with pytest.raises(UnknownLayoutError, match="aapool_mlp"):
        convert_released(str(RELEASED / "mlm-filter-qwen2.5-1.5b-tiny"), tmp_path / "out",
                         vision_tower=str(RELEASED / "siglip-tiny-patch8-32"))


def test_aitqe_scorer_keeps_the_captions_whitespace_as_the_reference(aitqe):
    from curation_pipeline.scoring.aitqe import AitqeScorer

    rewriter = aitqe[0]
    golden, _ = _golden("aitqe-tiny.edge")
    run = golden["runs"][0]
    assert run["caption"] != run["caption"].strip() and not run["output_all"]
    scorer = AitqeScorer.__new__(AitqeScorer)
    scorer.__dict__.update(batch_size=1, generator=rewriter.generator, version="test",
                           columns=("aitqe_overall", "aitqe_recaption", "aitqe_error"))
    rewriter.generator.stop_strings = ["<Overall>"]
    seen = []
    generate = rewriter.generator.generate
    rewriter.generator.generate = lambda images, texts: seen.extend(texts) or generate(images, texts)
    try:
        frame = scorer.score(PairBatch(["a"], [run["caption"]], [Image.open(RELEASED / run["image"]).convert("RGB")]))
    finally:
        del rewriter.generator.generate
    assert _collapse(rewriter.generator.token_ids(seen[0]), rewriter.generator.released.image_token_id, -1) \
        == run["input_ids"]
    parsed = parse_aitqe_output(run["decoded"].strip())
    assert frame.loc[0, "aitqe_recaption"] == parsed.recaption and frame.loc[0, "aitqe_error"] == parsed.error


def test_aitqe_scorer_gives_the_rating_policy_can_decide_by(aitqe):
    from curation_pipeline.decisions.policy import DecisionPolicy, decide
    from curation_pipeline.scoring.aitqe import AitqeScorer

    rewriter, golden, _ = aitqe
    scorer = AitqeScorer.__new__(AitqeScorer)
    scorer.__dict__.update(batch_size=2, generator=rewriter.generator, version="test",
                           columns=("aitqe_overall", "aitqe_recaption", "aitqe_error"))
    rewriter.generator.stop_strings = ["<Overall>"]
    run = next(r for r in golden["runs"] if not r["output_all"])
    image = Image.open(RELEASED / run["image"]).convert("RGB")
    frame = scorer.score(PairBatch(["a", "b"], [run["caption"], "x"], [image, None]))
    parsed = parse_aitqe_output(run["decoded"].strip())
    assert list(frame.columns) == list(scorer.columns)
    assert frame.loc[0, "aitqe_recaption"] == parsed.recaption
    assert frame.loc[0, "aitqe_overall"] == pytest.approx(parsed.overall, nan_ok=True)
    assert frame.loc[1, "aitqe_error"] == "no image"
    # The policy takes AITQE's 1-10 rating and a cut-off on that scale.
    scores = frame.assign(shard="s", key=["a", "b"], decode_status="ok", aitqe_overall=[8.0, 4.0])
    decided = decide(scores, DecisionPolicy(quality_column="aitqe_overall", keep_threshold=7, drop_threshold=3,
                                            require_image_rules=False, caption_rules_mark_weak=False))
    assert decided["action"].tolist() == ["keep", "rewrite"]

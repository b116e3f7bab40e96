from unittest import mock

import pytest
import torch

from curation_pipeline.models import loading
from curation_pipeline.models.loading import ModelUnavailableError, load_clip, load_vlm, pick_device, pick_dtype
from curation_pipeline_tests.tiny_models import make_tiny_idefics3

pytestmark = pytest.mark.faults  # cited in docs/faults.md: runs with -m faults


def test_missing_local_path_names_model_and_guidance(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(ModelUnavailableError) as info:
        load_vlm(missing)
    message = str(info.value)
    assert missing in message and "local directory" in message and "HF_HUB_OFFLINE" in message



def test_the_error_survives_pickling_as_it_crosses_to_the_ray_driver(tmp_path):
    """A model actor's failure reaches the driver pickled: it must arrive as itself, with its guidance."""
    import pickle

    missing = str(tmp_path / "nope")
    with pytest.raises(ModelUnavailableError) as info:
        load_vlm(missing)
    again = pickle.loads(pickle.dumps(info.value))
    assert type(again) is ModelUnavailableError and again.model == missing
    assert str(again) == str(info.value) and "local directory" in str(again)


@pytest.mark.parametrize("loader", [load_clip, load_vlm])
def test_unknown_hub_id_fails_fast_offline(loader, monkeypatch):
    """Offline, an unknown id fails at once with the clear error: no connection is even attempted
    (the old timing bound could not tell a retry loop from a slow machine)."""
    import socket

    from huggingface_hub import constants

    assert constants.HF_HUB_OFFLINE  # read when huggingface_hub was imported: conftest sets it first
    attempts = []

    def refuse(self, address, *args, **kwargs):
        attempts.append(address)
        raise OSError("network access attempted in an offline test")

    def no_lookup(host, *args, **kwargs):  # a name lookup is traffic too (DNS), before any connect
        attempts.append(host)
        raise OSError("name lookup attempted in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", no_lookup)
    with pytest.raises(ModelUnavailableError) as info:
        loader("no-such-org/no-such-model")
    assert attempts == []
    assert "no-such-org/no-such-model" in str(info.value)
    assert "HuggingFace cache" in str(info.value)


def test_vlm_directory_is_not_a_clip(tmp_path):
    path = make_tiny_idefics3(tmp_path / "vlm")
    with pytest.raises(ModelUnavailableError, match="not a CLIP or SigLIP"):
        load_clip(path)


def test_trust_remote_code_only_when_enabled(tmp_path):
    path = make_tiny_idefics3(tmp_path / "vlm")
    with mock.patch("transformers.AutoProcessor.from_pretrained", wraps=__import__(
            "transformers").AutoProcessor.from_pretrained) as spy:
        model, _ = load_vlm(path)
    assert all("trust_remote_code" not in call.kwargs for call in spy.call_args_list)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert model.config._attn_implementation == "sdpa"
    with mock.patch("transformers.AutoProcessor.from_pretrained", wraps=__import__(
            "transformers").AutoProcessor.from_pretrained) as spy:
        load_vlm(path, trust_remote_code=True)
    assert spy.call_args.kwargs.get("trust_remote_code") is True


def test_device_and_dtype_choice():
    assert pick_device("cpu") == "cpu"
    with mock.patch.object(torch.cuda, "is_available", return_value=False):
        with mock.patch.object(torch.backends.mps, "is_available", return_value=False):
            assert pick_device(None) == "cpu"
    assert pick_dtype("cpu") == torch.float32
    assert pick_dtype("cpu", "bfloat16") == torch.bfloat16
    with mock.patch.object(torch.cuda, "is_bf16_supported", return_value=False):
        assert pick_dtype("cuda") == torch.float16
    assert loading._looks_like_path("./models/x") and not loading._looks_like_path("org/name")


def test_dtype_names_and_auto():
    assert pick_dtype("cpu", "auto") == torch.float32 and pick_dtype("cpu", "") == torch.float32
    assert pick_dtype("cpu", "fp16") == torch.float16 and pick_dtype("cpu", "BF16") == torch.bfloat16
    assert pick_dtype("cuda", torch.float32) == torch.float32
    with pytest.raises(ValueError, match="unknown dtype 'int8'"):
        pick_dtype("cpu", "int8")


def test_released_checkpoints_default_to_their_references_precision_on_cuda():
    """LLaVA-Unified's builder loads the MLM-Filter checkpoints in float16 (MLM_Filter's scripts .half()
    the images); AITQE's load_model in bfloat16. Not bf16 for MLM-Filter just because the GPU has it."""
    from curation_pipeline.models.released import released_dtype

    for layout in ("llava", "llava_llama", "llava_qwen"):
        for device in ("cuda", "cuda:1"):
            assert released_dtype(layout, device, bf16_supported=True) == torch.float16
            assert released_dtype(layout, device, "auto", bf16_supported=True) == torch.float16
        assert released_dtype(layout, "cuda", "bfloat16") == torch.bfloat16
        assert released_dtype(layout, "cuda", torch.float32) == torch.float32
        assert released_dtype(layout, "cpu") == torch.float32
    assert released_dtype("mm", "cuda", bf16_supported=True) == torch.bfloat16
    assert released_dtype("mm", "cuda", bf16_supported=False) == torch.float16
    assert released_dtype("mm", "cuda", "float16") == torch.float16 and released_dtype("mm", "cpu") == torch.float32
    with mock.patch.object(torch.cuda, "is_bf16_supported", return_value=True):
        assert released_dtype("llava_qwen", "cuda") == torch.float16
        assert released_dtype("mm", "cuda") == torch.bfloat16


def test_load_released_on_cuda_loads_mlm_filter_in_float16(monkeypatch):
    """The loader itself takes that default (the move to the GPU is skipped: none here)."""
    from curation_pipeline.models import released
    from curation_pipeline_tests.tiny_models import RELEASED

    monkeypatch.setattr(released, "finish", lambda model, device: model.eval())
    with mock.patch.object(torch.cuda, "is_bf16_supported", return_value=True):
        loaded = released.load_released(str(RELEASED / "mlm-filter-qwen2.5-1.5b-tiny"), device="cuda",
                                        vision_tower=str(RELEASED / "siglip-tiny-patch8-32"))
        aitqe = released.load_released(str(RELEASED / "aitqe-tiny"), device="cuda",
                                       vision_tower=str(RELEASED / "siglip-tiny-patch8-32"))
    assert {p.dtype for p in loaded.model.parameters()} == {torch.float16}
    assert {p.dtype for p in aitqe.model.parameters()} == {torch.bfloat16}


def _cache_snapshot(cache, repo: str, commit: str, checkpoint) -> None:
    """``checkpoint``'s files as the HuggingFace cache holds a download of ``repo`` at ``commit`` (refs/main -> it)."""
    import shutil

    folder = cache / f"models--{repo.replace('/', '--')}"
    shutil.copytree(checkpoint, folder / "snapshots" / commit)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(commit)


def test_a_hub_model_is_named_with_its_cached_snapshot(tmp_path):
    """Lineage says by which model: a scorer loaded by HuggingFace id names the snapshot it loaded, so two snapshots
    under one id (a checkpoint updated on the hub) read apart; a local path is named as given. In a fresh process,
    as the hub's cache location is read when huggingface_hub is imported."""
    import os
    import subprocess
    import sys

    from curation_pipeline_tests.tiny_models import make_tiny_clip

    checkpoint, cache = make_tiny_clip(tmp_path / "clip"), tmp_path / "hub"
    first, second = "1a2b3c4d5e6f" + "0" * 28, "9f8e7d6c5b4a" + "1" * 28
    _cache_snapshot(cache, "tiny-org/tiny-clip", first, checkpoint)
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from curation_pipeline.models.loading import model_ident, model_revision\n"
        "from curation_pipeline.scoring.clip import ClipScorer\n"
        "print(ClipScorer('tiny-org/tiny-clip').version)\n"
        "print(ClipScorer(sys.argv[1]).version)\n"
        "print(model_revision(sys.argv[1]), model_revision('tiny-org/not-cached'))\n"
        "cache = Path(sys.argv[2]) / 'models--tiny-org--tiny-clip'\n"
        "(cache / 'snapshots' / sys.argv[3]).symlink_to(cache / 'snapshots' / sys.argv[4])\n"
        "(cache / 'refs' / 'main').write_text(sys.argv[3])\n"
        "print(model_ident('tiny-org/tiny-clip'))\n")
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", script, checkpoint, str(cache), second, first], env=env,
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0].split(":")[1] == "tiny-org/tiny-clip@1a2b3c4d5e6f"
    assert out[1].split(":", 1)[1] == checkpoint  # a local directory: as given
    assert out[2] == "None None"
    assert out[3] == "tiny-org/tiny-clip@9f8e7d6c5b4a"  # the updated snapshot

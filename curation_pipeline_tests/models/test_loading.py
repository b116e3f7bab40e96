from unittest import mock

import pytest
import torch

from curation_pipeline.models import loading
from curation_pipeline.models.loading import ModelUnavailableError, load_clip, load_vlm, pick_device, pick_dtype
from curation_pipeline_tests.tiny_models import make_tiny_idefics3


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

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    attempts = []

    def refuse(self, address, *args, **kwargs):
        attempts.append(address)
        raise OSError("network access attempted in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
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

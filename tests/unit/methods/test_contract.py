"""The contract every method's network keeps, checked for every method config on a CNN and a ViT: the map
has the input's size, the loss is finite and trains only the trainable part (a memory-bank method has no
loss: its training step only keeps features, and the bank it fits is its trained state), and a checkpoint
(trainable state only) rebuilt onto a fresh network gives the same outputs."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import CONF_DIR, compose_config
from uad import builders
from uad.module import AnomalyModule

METHODS = sorted(p.stem for p in (CONF_DIR / "method").glob("*.yaml"))
BACKBONES = {  # a small input per family, with an 8 x 8 feature grid and a 3 x 3 neighbour mask
    "effnet_lite0": ["protocol.image_size=128"],
    "dinov2_vits14_reg": ["protocol.image_size=112"],
}
FAMILIES = {"cnn": "effnet_lite0", "vit": "dinov2_vits14_reg"}
# The encoder families each method is meant to work on; a new method states its own here. All run on both
# but RD4AD and MambaAD (Dinomaly on a CNN, DinomalyCNN, and UniAD / DualAD / FeatRec / PatchCore / ViTAD on
# the other family are this suite's).
WORKS_ON = {
    "dinomaly": ("cnn", "vit"),
    "dualad_he": ("cnn", "vit"),
    "dualad_ho": ("cnn", "vit"),
    "featrec": ("cnn", "vit"),
    "inpformer": ("cnn", "vit"),  # the CNN variant: this suite's (channel slices of the stages)
    "patchcore": ("cnn", "vit"),
    "mambaad": ("cnn",),
    "rd4ad": ("cnn",),
    "uniad": ("cnn", "vit"),
    "vitad": ("cnn", "vit"),  # the ViT decoder on a CNN: this suite's variant (channel slices of the stages)
}
# Why a method cannot sit on a family it leaves out: its build must refuse with that reason, by name.
REFUSED = {
    ("rd4ad", "vit"): "decoder mirrors a CNN",  # ResNet stages going up: a ViT has no such stages
    ("mambaad", "vit"): "fusion and decoder mirror",  # the stride-4/8/16 pyramid of a CNN
}
SMALL = {  # method -> its cheapest size settings, to keep the test fast (the real sizes: its own tests)
    "mambaad": {"depths": [2, 2, 2, 2], "directions": 2},
}
PAIRS = [(method, FAMILIES[family]) for method, families in sorted(WORKS_ON.items()) for family in families]


def test_every_method_config_states_the_encoders_it_works_on():
    assert sorted(WORKS_ON) == METHODS, "add the new method to WORKS_ON with the encoder families it supports"
    left_out = {(m, f) for m, families in WORKS_ON.items() for f in FAMILIES if f not in families}
    assert left_out == set(REFUSED), "say in REFUSED why a method cannot sit on a family it leaves out"


def _module(method: str, backbone: str, net_seed: int) -> AnomalyModule:
    cfg = compose_config(
        [
            f"method={method}",
            f"backbone={backbone}",
            "backbone.pretrained=false",
            "protocol.crop_size=null",
            *BACKBONES[backbone],
        ]
    )
    if "neighbor_size" in cfg.method.model:
        cfg.method.model.neighbor_size = 3
    for key, value in SMALL.get(method, {}).items():
        cfg.method.model[key] = value
    torch.manual_seed(0)  # the same random encoder in every build, as pretrained weights would be
    encoder = builders.build_encoder(cfg, builders.build_protocol(cfg))
    torch.manual_seed(net_seed)
    return builders.build_module(cfg, builders.build_net(cfg, encoder))


@pytest.mark.parametrize(("method", "family"), sorted(REFUSED))
def test_a_method_refuses_by_name_the_encoders_it_cannot_sit_on(method, family):
    with pytest.raises(Exception, match=REFUSED[method, family]):
        _module(method, FAMILIES[family], net_seed=1)


@pytest.mark.parametrize(("method", "backbone"), PAIRS, ids=[f"{m}-{b}" for m, b in PAIRS])
def test_network_contract(method, backbone, tmp_path):
    module = _module(method, backbone, net_seed=1)
    size = module.net.encoder.input_size
    images = torch.randn(2, 3, size, size)
    batch = {"image": images, "class_id": torch.zeros(2, dtype=torch.long), "index": torch.arange(2)}

    module.train()
    if module.fits_memory:
        assert module.configure_optimizers() is None and module.training_step(batch, 0) is None
        module.fit_memory()  # what the module's epoch end does
    else:
        optimizer = module.configure_optimizers()
        optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
        loss = module.training_step(batch, 0)
        assert loss.ndim == 0 and torch.isfinite(loss)
        loss.backward()
        optimizer.step()  # the saved state is a trained one, not the initialisation
    assert all(p.grad is None for p in module.net.encoder.parameters())

    module.eval()
    with torch.no_grad():
        output = module.net(images)
    assert output.anomaly_map.shape == (2, 1, size, size) and output.anomaly_map.dtype == torch.float32
    assert torch.isfinite(output.anomaly_map).all()

    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint["uad"]["config"]["method"]["name"] == method
    torch.save(checkpoint, tmp_path / "net.ckpt")
    fresh = _module(method, backbone, net_seed=2).eval()
    if fresh.fits_memory:
        with pytest.raises(RuntimeError, match="no memory bank"):
            fresh.net(images)
    else:
        with torch.no_grad():
            assert not torch.allclose(fresh.net(images).anomaly_map, output.anomaly_map)
    loaded = torch.load(tmp_path / "net.ckpt", weights_only=False)
    fresh.on_load_checkpoint(loaded)
    fresh.load_state_dict(loaded["state_dict"], strict=False)
    with torch.no_grad():
        torch.testing.assert_close(fresh.net(images).anomaly_map, output.anomaly_map, rtol=0, atol=0)

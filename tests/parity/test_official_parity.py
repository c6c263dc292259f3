"""Official checkpoints through our importer give the numbers the official code gives.

Each fixture in tests/fixtures/parity/ was made by `tests/parity/make_fixtures.py --method M --official DIR`
(the command and the official commit are recorded in the fixture's "official" entry): the official model
class, filled by the rule in `seeded.py`, run on the CPU on a real image (../shared/realdata) through the
official transform. Here the same state dict is rebuilt from the recorded key names and shapes, saved in
the official checkpoint layout, loaded with `uad.official.load_official`, and the image goes through our
own input pipeline and protocol.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from tests.conftest import REALDATA, compose_config
from tests.parity.seeded import seeded_state
from uad.builders import build_protocol
from uad.official import load_official

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "parity"
# One fixture per official configuration: Dinomaly at the three DINOv2-reg sizes (ViT-L taps other blocks).
NAMES = (
    "dinomaly",
    "dinomaly_dinov2_vitb14_reg",
    "dinomaly_dinov2_vitl14_reg",
    "uniad",
    "dualad_he",
    "dualad_ho",
    "vitad",
)
# Official trainable key -> ours, for the gradient norms the fixtures record.
GRAD_KEYS = {
    "bottleneck.0.fc1.weight": "bottleneck.fc1.weight",
    "decoder.0.attn.qkv.weight": "decoder.0.attn.qkv.weight",
    "input_proj.weight": "input_proj.weight",
    "output_proj.weight": "output_proj.weight",
    "reconstruction.in_proj.0.weight": "wsn_in.net.0.weight",
    "reconstruction.out_proj.2.weight": "wsn_out.net.2.weight",
    "reconstruction.in_proj.weight": "wsn_in.proj.weight",
    "reconstruction.proj_decoder.learned_queries.0.weight": "wsn_out.queries.0",
    "reconstruction.out_proj.weight": "wsn_out.proj.weight",
    "net_fusion.fc.weight": "fusion.weight",
    "net_s.pos_embed": "pos_embed",
    "net_s.blocks.0.attn.qkv.weight": "decoder.0.attn.qkv.weight",
    "net_s.blocks.8.mlp.fc2.weight": "decoder.8.mlp.fc2.weight",
}

pytestmark = pytest.mark.skipif(not REALDATA.is_dir(), reason="needs ../shared/realdata")


def official_file(fixture: dict, path: Path) -> Path:
    """The seeded state dict saved as the official code saves it: Dinomaly and INP-Former a bare state dict;
    UniAD and DualAD a train_val.py dict with numpy scalars beside the state dict (read through
    the allow-list); ADer (ViTAD) BaseTrainer.save_checkpoint's ckpt.pth, the state dict under `net`."""
    state = seeded_state(fixture["shapes"], fixture["aliases"])
    if fixture["method"] in ("dinomaly", "inpformer"):  # both scripts save model.state_dict() bare
        torch.save(state, path)
    elif fixture["method"] == "vitad":
        torch.save({"net": state, "iter": 3, "epoch": 1, "total_time": 1.0, "scaler": None}, path)
    else:
        torch.save({"epoch": 10, "state_dict": state, "best_metric": np.float64(0.5)}, path)
    return path


def assert_matches(ours: torch.Tensor, official: dict, rtol: float, atol: float = 0.0) -> None:
    flat = ours.detach().double().flatten()
    assert list(ours.shape) == official["shape"]
    expected = torch.tensor(official["values"], dtype=torch.float64)
    torch.testing.assert_close(flat[official["positions"]], expected, rtol=rtol, atol=atol)
    assert flat.sum().item() == pytest.approx(official["sum"], rel=rtol, abs=atol * flat.numel())


def imported(name: str, tmp_path: Path):
    """(fixture `name`, our module loaded from the official file, its protocol)."""
    fixture = json.loads((FIXTURES / f"{name}.json").read_text())
    config = fixture["config"]
    cfg = compose_config(
        [f"method={config['method']}", f"backbone={config['backbone']}", f"protocol={config['protocol']}"],
        output_dir=tmp_path / "run",
    )
    module, cfg = load_official(official_file(fixture, tmp_path / "official.pth"), cfg)
    return fixture, module, build_protocol(cfg)


def check_outputs(net, output, protocol, outputs: dict) -> None:
    """Map, image score, intermediates, loss and gradient norms against the official numbers."""
    maps = protocol.maps_for_eval(output.anomaly_map)
    assert_matches(maps[:, None], outputs["eval_map"], rtol=1e-5, atol=1e-6)
    assert protocol.image_scores(maps).item() == pytest.approx(outputs["image_score"], rel=1e-5)
    if "reconstruction" in outputs:
        assert_matches(output["reconstruction"], outputs["reconstruction"], rtol=1e-4, atol=1e-5)
    loss = net.loss(output, step=1000)  # Dinomaly: the hard-mining ratio at its final 0.9
    loss = loss["loss"] if isinstance(loss, dict) else loss
    assert loss.item() == pytest.approx(outputs.get("loss", outputs.get("loss_step_1000")), rel=1e-5)
    loss.backward()
    params = dict(net.named_parameters())
    for key, norm in outputs["grad_norms"].items():
        assert params[GRAD_KEYS[key]].grad.norm().item() == pytest.approx(norm, rel=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_official_checkpoint_gives_the_official_numbers(name, tmp_path):
    """End to end: the real image through our input pipeline, the imported network and our protocol."""
    fixture, module, protocol = imported(name, tmp_path)
    transform = protocol.input
    rgb = np.asarray(Image.open(REALDATA / fixture["image"]).convert("RGB"))
    image, _ = transform(rgb, np.zeros(rgb.shape[:2], np.uint8))
    assert_matches(image[None], fixture["input"], rtol=0, atol=1e-6)
    output = module.net(image[None])
    if "aligned" in fixture["outputs"]:
        assert_matches(output["aligned"], fixture["outputs"]["aligned"], rtol=1e-4, atol=1e-5)
    check_outputs(module.net, output, protocol, fixture["outputs"])


@pytest.mark.slow
def test_uniad_reconstruction_from_the_official_features(tmp_path):
    """UniAD apart from its backbone: the official aligned features (recorded in full) through our imported
    reconstruction give the official reconstruction, map, score, loss and gradients."""
    fixture, module, protocol = imported("uniad", tmp_path)
    aligned = torch.from_numpy(np.load(FIXTURES / "uniad_aligned.npy"))[None]  # (1, 272, 14, 14)
    assert_matches(aligned, fixture["outputs"]["aligned"], rtol=1e-6)
    output = module.net.reconstruct({"aligned": aligned}, (224, 224))
    check_outputs(module.net, output, protocol, fixture["outputs"])


def vitad_output(tmp_path: Path):
    """(fixture, module, protocol, image) of the imported ViTAD and the fixture's image, in training mode
    as the fixture's forward ran (the encoder stays in eval mode)."""
    fixture, module, protocol = imported("vitad", tmp_path)
    rgb = np.asarray(Image.open(REALDATA / fixture["image"]).convert("RGB"))
    image = protocol.input(rgb, np.zeros(rgb.shape[:2], np.uint8))[0][None]
    module.train()
    return fixture, module, protocol, image


@pytest.mark.slow
def test_vitad_features_students_and_training_are_the_official_ones(tmp_path):
    """ADer's ViTAD (seeded): the teacher taps, the neck tokens and the student's reversed taps; the parameter
    counts; and 3 steps of experiment=vitad_ader256's optimiser (AdamW, no decay on vectors, gradient-norm
    clip 5.0 as Lightning applies it) change the parameters as ADer's recipe does."""
    fixture, module, _, image = vitad_output(tmp_path)
    with torch.no_grad():
        output = module.net(image)
    outputs = fixture["outputs"]
    assert_matches(output["neck"], outputs["neck"], rtol=1e-4, atol=1e-5)
    for ours, theirs in zip(output["teachers"], outputs["teachers"], strict=True):
        assert_matches(ours, theirs, rtol=1e-4, atol=1e-5)
    for ours, theirs in zip(output["students"], outputs["students"], strict=True):
        assert_matches(ours, theirs, rtol=1e-4, atol=1e-5)

    counts = fixture["parameters"]
    ours = module.net.parameter_counts()["trainable_params"]
    assert ours == counts["with_gradient"] == 16_216_320  # ADer's trainable parameters that receive gradients
    assert counts["trainable"] - ours == 681_448  # ADer's unused student patch embedding, cls, norm and head
    cfg = compose_config(["experiment=vitad_ader256"], output_dir=tmp_path / "recipe")
    recipe = fixture["training"]["recipe"]
    assert cfg.method.optimizer.lr == recipe["lr"] and cfg.method.optimizer.eps == recipe["eps"]
    assert cfg.method.optimizer.weight_decay == recipe["weight_decay"]
    assert list(cfg.method.optimizer.betas) == recipe["betas"] and cfg.method.grad_clip == recipe["clip_grad"]
    module.optimizer_factory = instantiate(cfg.method.optimizer)
    optimizer = module.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    params = dict(module.net.named_parameters())
    before = {key: params[GRAD_KEYS[key]].detach().clone() for key in fixture["training"]["deltas"]}
    losses = []
    for _ in range(3):
        optimizer.zero_grad()
        loss = module.net.loss(module.net(image))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.net.trainable_parameters(), cfg.method.grad_clip)
        optimizer.step()
        losses.append(loss.item())
    assert losses == pytest.approx(fixture["training"]["losses"], rel=1e-5)
    for key, delta in fixture["training"]["deltas"].items():
        assert_matches(params[GRAD_KEYS[key]].detach() - before[key], delta, rtol=1e-4, atol=1e-9)

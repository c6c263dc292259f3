"""Training details of the official recipes: the StepLR epochs of UniAD and DualAD, UniAD's deep-copy
initialisation, Dinomaly's dropped last batch and its class-separated recipes."""

from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate

from tests.conftest import compose_config
from uad.encoders import Encoder
from uad.methods.uniad import UniAD


@pytest.mark.parametrize(
    ("experiment", "epochs", "step", "first"),
    [("uniad_mvtec", 1000, 800, 801), ("dualad_mvtec", 1200, 1000, 1001)],
)
def test_step_lr_gives_the_official_rate_in_every_epoch(experiment, epochs, step, first):
    """The official train_val.py calls `lr_scheduler.step(epoch)` after epoch `epoch`, which sets the rate
    of the next epoch to base * gamma ** (epoch // step_size) (StepLR's closed form): epoch e > 0 trains at
    base * gamma ** ((e - 1) // step_size), so the first rate lasts step_size + 1 epochs. Ours is stepped
    once after every epoch, as Lightning does with scheduler_interval: epoch."""
    cfg = compose_config([f"experiment={experiment}"])
    base, gamma = cfg.method.optimizer.lr, cfg.method.scheduler.gamma
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base)
    scheduler = instantiate(cfg.method.scheduler)(optimizer)
    ours = []
    for _ in range(epochs):
        ours.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    official = [base if e == 0 else base * gamma ** ((e - 1) // step) for e in range(epochs)]
    assert ours == pytest.approx(official, rel=1e-12)
    assert sum(lr == pytest.approx(base) for lr in ours) == first


def test_uniad_starts_as_the_official_deep_copies():
    torch.manual_seed(0)
    net = UniAD(Encoder("effnet_lite0", pretrained=False, input_size=224))
    queries = list(net.queries)
    assert all(torch.equal(q, queries[0]) for q in queries[1:])
    bound = math.sqrt(6 / (3 * 256 + 256))  # xavier_uniform over the packed 768 x 256 matrix
    for attns in (
        [layer.attn for layer in net.transformer_encoder.layers],
        [layer.memory_attn for layer in net.transformer_decoder.layers],
        [layer.prev_attn for layer in net.transformer_decoder.layers],
    ):
        packed = torch.cat([attns[0].q_proj.weight, attns[0].k_proj.weight, attns[0].v_proj.weight])
        assert bound * 0.99 < packed.abs().max() <= bound
        for attn in attns[1:]:
            assert torch.equal(attn.q_proj.weight, attns[0].q_proj.weight)
            assert torch.equal(attn.v_proj.weight, attns[0].v_proj.weight)
            assert not attn.k_proj.bias.any()
            assert not torch.equal(attn.out_proj.weight, attns[0].out_proj.weight)  # re-drawn per layer
    assert not torch.equal(
        net.transformer_decoder.layers[0].memory_attn.q_proj.weight,
        net.transformer_decoder.layers[0].prev_attn.q_proj.weight,
    )
    apart = UniAD(Encoder("effnet_lite0", pretrained=False, input_size=224), official_init=False)
    assert not torch.equal(apart.queries[0], apart.queries[1])


def test_dinomaly_recipes_drop_the_last_batch_and_the_separated_ones_match_the_official_scripts(tmp_path):
    cfg = compose_config(["experiment=dinomaly_mvtec_sep"])
    assert cfg.dataset.drop_last and cfg.dataset.setting == "separate"
    assert (
        cfg.trainer.max_steps == 5000 and cfg.method.optimizer.eps == 1e-8 and cfg.method.model.dropout == 0.2
    )
    assert compose_config(["experiment=dinomaly_realiad_sep"]).method.optimizer.eps == 1e-10
    assert compose_config(["experiment=dinomaly_mpdd_sep"]).dataset.name == "mpdd"
    from uad.data.datamodule import AnomalyDataModule

    dm = AnomalyDataModule(
        {"image_size": 64},
        root=tmp_path / "synthetic",
        batch_size=4,
        drop_last=True,
        num_workers=0,
        synthetic={"image_size": 96, "train_per_class": 6, "test_good": 1, "test_per_defect": 1},
    )
    dm.setup("fit")
    train = len(dm.train_set)
    assert train % 4 and len(dm.train_dataloader()) == train // 4

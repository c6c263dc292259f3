"""Side by side with the official code: one training step of the trainable part on the same batch of frozen
features and the same configuration, official against ours, per method; ratio of images per second.

The official code is never part of uad: point `UAD_OFFICIAL_DIR` at a folder holding the checkouts
(`UniAD/` = github.com/zhiyuanyou/UniAD, ...). Without it the comparison is skipped with a line saying so.
Without a GPU the official `.cuda()` calls are made no-ops (`torch.Tensor.cuda` returns the tensor itself)
so that its step runs on the CPU; nothing else of it is changed. Needs `einops` (the official UniAD imports
it; in uad's `dev` extra).

Covered: UniAD and DualAD-He with their MVTec recipes (`experiments/MVTec-AD/config.yaml` of each: UniAD on
EfficientNet-B4, DualAD on WRes50, both at 224), batch 8, AdamW 1e-4. Dinomaly is not covered yet.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from uad import builders  # noqa: E402

BATCH, REPEATS = 8, 5
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def timed_step(step) -> float:
    """Median seconds of `step()` over REPEATS, after one warm-up call."""
    step()
    times = []
    for _ in range(REPEATS):
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[REPEATS // 2]


def train_step(model, forward, loss_fn, lr: float = 1e-4, weight_decay: float = 1e-4):
    """forward + loss + backward + AdamW step, as both UniAD trainers do."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)

    def step() -> None:
        loss = loss_fn(forward())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def ours_and_batch(experiment: str):
    """Our network for a paper recipe (random weights) and one batch of its frozen features."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={experiment}", "backbone.pretrained=false"])
    protocol = builders.build_protocol(cfg)
    ours = builders.build_net(cfg, builders.build_encoder(cfg, protocol)).to(DEVICE).train()
    size = protocol.input_size
    with torch.no_grad():
        features = ours.extract(torch.randn(BATCH, 3, size, size, device=DEVICE))
    step = train_step(ours, lambda: ours.reconstruct(features, (size, size)), ours.loss)
    return ours, features, step


def official_import(checkout: Path, module: str, name: str):
    """A class from an official checkout (each repository has its own top-level `models` package)."""
    for key in [k for k in sys.modules if k == "models" or k.startswith("models.")]:
        del sys.modules[key]
    sys.path.insert(0, str(checkout))
    try:
        return getattr(importlib.import_module(module), name)
    finally:
        sys.path.remove(str(checkout))


def uniad(checkout: Path) -> tuple[float, float]:
    _, features, ours_step = ours_and_batch("uniad_mvtec")
    aligned = features["aligned"]  # (B, 272, 14, 14)
    UniAD = official_import(checkout, "models.reconstructions.uniad", "UniAD")  # experiments/MVTec-AD

    official = UniAD(
        inplanes=[aligned.shape[1]],
        instrides=[16],
        feature_size=list(aligned.shape[-2:]),
        feature_jitter=SimpleNamespace(scale=20.0, prob=1.0),
        neighbor_mask=SimpleNamespace(neighbor_size=[7, 7], mask=[True, True, True]),
        hidden_dim=256,
        pos_embed_type="learned",
        save_recon=None,
        initializer={"method": "xavier_uniform"},
        nhead=8,
        num_encoder_layers=4,
        num_decoder_layers=4,
        dim_feedforward=1024,
        dropout=0.1,
        activation="relu",
        normalize_before=False,
    ).to(DEVICE)
    official.train()
    mse = torch.nn.functional.mse_loss
    official_step = train_step(
        official,
        lambda: official({"feature_align": aligned}),
        lambda out: mse(out["feature_rec"], out["feature_align"]),
    )
    return BATCH / timed_step(official_step), BATCH / timed_step(ours_step)


def dualad(checkout: Path) -> tuple[float, float]:
    ours, features, ours_step = ours_and_batch("dualad_mvtec")
    aligned = features["aligned"]  # (B, 1792, 14, 14)
    DualAD = official_import(checkout, "models.reconstructions.dualad", "DualAD")  # experiments/MVTec-AD
    levels = list(ours.encoder.channels)  # WRes50 layers 1-3: 256, 512, 1024
    official = DualAD(
        inplanes=levels,
        instrides=[16],
        feature_size=list(aligned.shape[-2:]),
        feature_jitter=SimpleNamespace(scale=3.2, prob=1.0, jitter_wise="spatial"),
        neighbor_mask=SimpleNamespace(neighbor_size=[7, 7], mask=[True, True, True]),
        proj_head_dim=256,
        proj_mlp_ratio=4.0,
        num_in_proj_layers=1,
        num_out_proj_layers=1,
        hidden_dim=256,
        nhead=8,
        dim_feedforward=1024,
        dropout=0.1,
        num_encoder_layers=4,
        num_decoder_layers=4,
        pos_embed_type="learned",
        activation="relu",
        predict=SimpleNamespace(avgpool_size=[16, 16]),
        initializer={"method": "xavier_uniform"},
        memory_module={"num_embeds": 196},
        proj_type="mlp",
    ).to(DEVICE)
    official.train()
    mse = torch.nn.functional.mse_loss

    def level_mse_sum(out) -> torch.Tensor:  # the official FeatureMSELoss, return_type "sum"
        pairs = zip(out["feature_rec"].split(levels, dim=1), out["feature_align"].split(levels, dim=1))
        return sum(mse(rec, target) for rec, target in pairs)

    official_step = train_step(official, lambda: official({"feature_align": aligned}), level_mse_sum)
    return BATCH / timed_step(official_step), BATCH / timed_step(ours_step)


def main() -> None:
    print("## Side by side with the official training step\n")
    base = os.environ.get("UAD_OFFICIAL_DIR")
    if not base:
        print("Skipped: set UAD_OFFICIAL_DIR to a folder with the official checkouts (UniAD/, ...).")
        return
    if DEVICE.type == "cpu":
        torch.Tensor.cuda = lambda self, *args, **kwargs: self  # CPU shim for the official .cuda() calls
    print(
        f"Trainable part only (same frozen-feature batch of {BATCH}, same configuration), forward + loss + "
        f"backward + AdamW step, median of {REPEATS}, on {DEVICE.type}; official code from `{base}`.\n"
    )
    print("| method | official images/s | ours images/s | ours / official |")
    print("|---|---|---|---|")
    for folder, label, compare in (
        ("UniAD", "UniAD (effb4 224, 272 ch, 14x14)", uniad),
        ("DualAD", "DualAD-He (wres50 224, 1792 ch, 14x14)", dualad),
    ):
        checkout = Path(base) / folder
        if not checkout.is_dir():
            print(f"| {label} | skipped: no {checkout} | | |")
            continue
        official, ours = compare(checkout)
        print(f"| {label} | {official:.2f} | {ours:.2f} | {ours / official:.2f}x |", flush=True)
    print("| Dinomaly | not covered yet | | |")


if __name__ == "__main__":
    main()

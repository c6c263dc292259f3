"""Side by side with the official code: one training step of the trainable part on the same batch of frozen
features and the same configuration, official against ours, per method; ratio of images per second.

The official code is never part of uad: point `UAD_OFFICIAL_DIR` at a folder holding the checkouts
(`UniAD/` = github.com/zhiyuanyou/UniAD, ...). Without it the comparison is skipped with a line saying so.
Without a GPU the official `.cuda()` calls are made no-ops (`torch.Tensor.cuda` returns the tensor itself)
so that its step runs on the CPU; nothing else of it is changed. Needs `einops` (the official UniAD imports
it; in uad's `dev` extra).

Covered: UniAD (MVTec recipe: EfficientNet-B4 at 224, 272 channels on the 14 x 14 grid, batch 8, AdamW
1e-4). Dinomaly and DualAD are not covered yet.
"""

from __future__ import annotations

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


def uniad(checkout: Path) -> tuple[float, float]:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=uniad_mvtec", "backbone.pretrained=false"])
    protocol = builders.build_protocol(cfg)
    ours = builders.build_net(cfg, builders.build_encoder(cfg, protocol)).to(DEVICE).train()
    size = protocol.input_size
    with torch.no_grad():
        features = ours.extract(torch.randn(BATCH, 3, size, size, device=DEVICE))  # aligned (B, 272, 14, 14)
    aligned = features["aligned"]
    sys.path.insert(0, str(checkout))
    from models.reconstructions.uniad import UniAD  # the official class (experiments/MVTec-AD/config.yaml)

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
    ours_step = train_step(ours, lambda: ours.reconstruct(features, (size, size)), ours.loss)
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
    checkout = Path(base) / "UniAD"
    if not checkout.is_dir():
        print(f"| UniAD | skipped: no {checkout} | | |")
    else:
        official, ours = uniad(checkout)
        print(f"| UniAD (effb4 224, 14x14 grid) | {official:.2f} | {ours:.2f} | {ours / official:.2f}x |")
    print("| Dinomaly | not covered yet | | |")
    print("| DualAD | not covered yet | | |")


if __name__ == "__main__":
    main()

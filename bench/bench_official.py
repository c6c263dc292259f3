"""Side by side with the official code: one training step of the trainable part on the same batch of frozen
features and the same configuration, official against ours, per method; ratio of images per second.

The official code is never part of uad: point `UAD_OFFICIAL_DIR` at a folder holding the checkouts
(`UniAD/` = github.com/zhiyuanyou/UniAD, ...). Without it the comparison is skipped with a line saying so.
Without a GPU the official `.cuda()` calls are made no-ops (`torch.Tensor.cuda` returns the tensor itself)
so that its step runs on the CPU; nothing else of it is changed. Needs `einops` (the official UniAD imports
it; in uad's `dev` extra).

Covered: UniAD and DualAD-He with their MVTec recipes (`experiments/MVTec-AD/config.yaml` of each: UniAD on
EfficientNet-B4, DualAD on WRes50, both at 224), batch 8, AdamW 1e-4 (ours fused, as `AnomalyModule`
builds it); Dinomaly with the configuration of `dinomaly_mvtec_uni.py` (noisy bottleneck, 8 linear-attention
blocks, two fused groups, the loss with hard mining at its final ratio 0.9, StableAdamW 2e-3 with AMSGrad,
gradient clipping 0.1) on ViT-S/14 with registers at 224 (16x16 patches) instead of ViT-B at 392, to keep
the CPU run short; batch 8 for all. The official Dinomaly code (`Dinomaly/` =
github.com/guojiajeremy/Dinomaly) imports pandas (its `utils.py`, which holds the loss), tabulate and
colorama (its `optimizers/`), none of which uad needs.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from uad import builders  # noqa: E402
from uad.optim import StableAdamW  # noqa: E402

BATCH, REPEATS = 8, 5
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def timed_pair(official, ours) -> dict[str, float]:
    """Images per second of two steps, each the median over REPEATS after one warm-up call, the two run in
    turn (official, ours, official, ...) so that a change of load on a shared machine hits both alike; also
    the median CPU seconds (`time.process_time`, all threads) per step, less sensitive to other jobs."""
    official(), ours()
    times: dict[str, list[tuple[float, float]]] = {"official": [], "ours": []}
    for _ in range(REPEATS):
        for name, step in (("official", official), ("ours", ours)):
            if DEVICE.type == "cuda":
                torch.cuda.synchronize()
            wall, cpu = time.perf_counter(), time.process_time()
            step()
            if DEVICE.type == "cuda":
                torch.cuda.synchronize()
            times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    result = {}
    for name, pairs in times.items():
        result[f"{name}_images_per_s"] = BATCH / sorted(w for w, _ in pairs)[REPEATS // 2]
        result[f"{name}_cpu_s"] = sorted(c for _, c in pairs)[REPEATS // 2]
    return result


def adamw(params, lr: float = 1e-4, weight_decay: float = 1e-4, fused: bool = False) -> torch.optim.Optimizer:
    """The optimiser of the UniAD and DualAD trainers; ours runs it `fused`, as `AnomalyModule` builds it
    for the AdamW recipes (`optimizer_options`)."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused)


def train_step(model, forward, loss_fn, optimizer=adamw, grad_clip: float | None = None):
    """forward + loss + backward (+ gradient-norm clipping) + optimiser step over the trainable parameters;
    `optimizer` makes the optimiser from them."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = optimizer(params)

    def step() -> None:
        loss = loss_fn(forward())
        if isinstance(loss, dict):  # AnomalyNet.loss may return named terms beside "loss"
            loss = loss["loss"]
        opt.zero_grad()
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()

    return step


def ours_and_batch(experiment: str, overrides: tuple[str, ...] = (), loss_step: int = 0, **step_options):
    """Our network for a paper recipe (random weights), one batch of its frozen features, the random input
    images they came from, and our training step on them (the loss as at optimiser step `loss_step`)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        overrides = (f"experiment={experiment}", "backbone.pretrained=false", *overrides)
        cfg = compose("config", overrides=list(overrides))
    protocol = builders.build_protocol(cfg)
    ours = builders.build_net(cfg, builders.build_encoder(cfg, protocol)).to(DEVICE).train()
    size = protocol.input_size
    images = torch.randn(BATCH, 3, size, size, device=DEVICE)
    with torch.no_grad():
        features = ours.extract(images)
    forward = lambda: ours.reconstruct(features, (size, size))  # noqa: E731
    step_options = {"optimizer": partial(adamw, fused=True), **step_options}
    step = train_step(ours, forward, lambda output: ours.loss(output, loss_step), **step_options)
    return ours, features, images, step


def official_import(checkout: Path, module: str, name: str):
    """An attribute of a module of an official checkout (each repository has its own top-level `models`
    package; Dinomaly also `utils`, `dataset` and `optimizers`)."""
    tops = {"models", "utils", "dataset", "optimizers", module.split(".")[0]}
    for key in [k for k in sys.modules if k.split(".")[0] in tops]:
        del sys.modules[key]
    sys.path.insert(0, str(checkout))
    try:
        return getattr(importlib.import_module(module), name)
    finally:
        sys.path.remove(str(checkout))


def uniad(checkout: Path) -> dict[str, float]:
    _, features, _, ours_step = ours_and_batch("uniad_mvtec")
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
    return timed_pair(official_step, ours_step)


def dualad(checkout: Path) -> dict[str, float]:
    ours, features, _, ours_step = ours_and_batch("dualad_mvtec")
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
    return timed_pair(official_step, ours_step)


class ReplayEncoder(torch.nn.Module):
    """Stands in for the frozen ViT in the official `ViTill.forward`, so that its step is the trainable part
    only: block i returns the stored output of ViT block i (its input is ignored), `prepare_tokens` is the
    identity. The official forward still fuses these taps itself (means of 8 and of 4 tensors), which ours
    does once in `extract`."""

    def __init__(self, taps: list[torch.Tensor], target_layers: list[int], num_register_tokens: int) -> None:
        super().__init__()
        stored = dict(zip(target_layers, taps, strict=True))
        self.blocks = torch.nn.ModuleList(Stored(stored.get(i)) for i in range(max(target_layers) + 1))
        self.num_register_tokens = num_register_tokens

    @staticmethod
    def prepare_tokens(x: torch.Tensor) -> torch.Tensor:
        return x


class Stored(torch.nn.Module):
    """One replayed ViT block: its stored output, or its input where no output was stored (untapped)."""

    def __init__(self, output: torch.Tensor | None) -> None:
        super().__init__()
        self.output = output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.output is None else self.output


def dinomaly(checkout: Path) -> dict[str, float]:
    lr, eps, weight_decay, clip = 2e-3, 1e-10, 1e-4, 0.1  # dinomaly_mvtec_uni.py
    ours_optimizer = partial(StableAdamW, lr=lr, eps=eps, weight_decay=weight_decay, amsgrad=True)
    ours, _, images, ours_step = ours_and_batch(
        "dinomaly_mvtec",
        ("backbone=dinov2_vits14_reg", "protocol.image_size=256", "protocol.crop_size=224"),
        loss_step=1000,  # hm_warmup_steps: the hard-mining share is at its final 0.9, the official p_final
        optimizer=ours_optimizer,
        grad_clip=clip,
    )
    with torch.no_grad():
        taps = ours.encoder(images)  # 8 x (B, 5 + 256, 384): blocks 2..9 of ViT-S/14 reg
    assert len(taps) == 8, f"Dinomaly taps 8 ViT blocks, got {len(taps)}"
    ViTill = official_import(checkout, "models.uad", "ViTill")
    Block = official_import(checkout, "models.vision_transformer", "Block")
    bMlp = official_import(checkout, "models.vision_transformer", "bMlp")
    LinearAttention2 = official_import(checkout, "models.vision_transformer", "LinearAttention2")
    OfficialStableAdamW = official_import(checkout, "optimizers", "StableAdamW")
    loss_hm = official_import(checkout, "utils", "global_cosine_hm_percent")
    target_layers, dim, heads = [2, 3, 4, 5, 6, 7, 8, 9], 384, 6
    bottleneck = torch.nn.ModuleList([bMlp(dim, dim * 4, dim, drop=0.2)])
    decoder = torch.nn.ModuleList(
        Block(
            dim=dim,
            num_heads=heads,
            mlp_ratio=4.0,
            qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-8),
            attn=LinearAttention2,
        )
        for _ in range(8)
    )
    official = ViTill(
        encoder=ReplayEncoder(list(taps), target_layers, ours.encoder.num_prefix_tokens - 1),
        bottleneck=bottleneck,
        decoder=decoder,
        target_layers=target_layers,
        mask_neighbor_size=0,
        fuse_layer_encoder=[[0, 1, 2, 3], [4, 5, 6, 7]],
        fuse_layer_decoder=[[0, 1, 2, 3], [4, 5, 6, 7]],
    ).to(DEVICE)
    official.train()
    trainable = [sum(p.numel() for p in m.parameters() if p.requires_grad) for m in (official, ours)]
    assert trainable[0] == trainable[1], f"trainable parameters differ (official, ours): {trainable}"
    official_optimizer = partial(
        OfficialStableAdamW, lr=lr, betas=(0.9, 0.999), weight_decay=weight_decay, amsgrad=True, eps=eps
    )
    official_step = train_step(
        official,
        lambda: official(images),
        lambda out: loss_hm(*out, p=0.9, factor=0.1),
        optimizer=official_optimizer,
        grad_clip=clip,
    )
    return timed_pair(official_step, ours_step)


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
        f"backward + optimiser step, median of {REPEATS} taken in turn, on {DEVICE.type}; CPU s = "
        f"process time per step (all threads); official code from `{base}`.\n"
    )
    print("| method | official images/s | ours images/s | ours / official | CPU s/step official, ours |")
    print("|---|---|---|---|---|")
    for folder, label, compare in (
        ("UniAD", "UniAD (effb4 224, 272 ch, 14x14)", uniad),
        ("DualAD", "DualAD-He (wres50 224, 1792 ch, 14x14)", dualad),
        ("Dinomaly", "Dinomaly (ViT-S/14 reg 224, 384 ch, 16x16 + 5)", dinomaly),
    ):
        if sys.argv[1:] and folder not in sys.argv[1:]:  # e.g. `bench_official.py Dinomaly`: that row only
            continue
        checkout = Path(base) / folder
        if not checkout.is_dir():
            print(f"| {label} | skipped: no {checkout} | | | |")
            continue
        r = compare(checkout)
        official, ours = r["official_images_per_s"], r["ours_images_per_s"]
        print(
            f"| {label} | {official:.2f} | {ours:.2f} | {ours / official:.2f}x | "
            f"{r['official_cpu_s']:.2f}, {r['ours_cpu_s']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
